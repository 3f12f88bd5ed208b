"""``training.sample_buffer`` (training/buffer.py): every sample drawn is kept with its own log q
and each update trains on rows drawn from all of them; exact on the toy space, resumable, and
refused where an objective needs each step's own batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import assert_same_trainable_weights, stopped_and_resumed

from bayesalign.config import ConfigError
from bayesalign.training.buffer import SampleBuffer

# the twist's toy config (configs/methods/twist.yaml) with the buffer: 1 update of 64 rows per step
BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {
        "method": "twist",
        "steps": 40,
        "batch_size": 128,
        "minibatch_size": 64,
        "sample_buffer": True,
        "updates_per_step": 1,
        "lr": 1e-2,
        "threads": 1,
    },
    "eval": {"every": 40, "samples": 64, "exact": True, "save_samples": 0},
    "checkpoint": {"every": 40},
}


def test_the_buffer_keeps_every_draw_and_draws_minibatches_from_all_of_it(make_trainer):
    trainer = make_trainer("training.steps=1")
    draws = [trainer.draw(trainer.base, n, torch.Generator().manual_seed(n)) for n in (5, 7)]
    # tag every row by its log q (0 … 11), so that a row can be told from its copies
    draws[0] = dataclasses.replace(draws[0], log_q=torch.arange(5, dtype=torch.float64))
    draws[1] = dataclasses.replace(draws[1], log_q=torch.arange(5, 12, dtype=torch.float64))
    buffer = SampleBuffer()
    for draw in draws:
        buffer.add(draw)
    assert len(buffer) == 12
    rows, weight = buffer.minibatches(3, 4, torch.Generator().manual_seed(0))
    assert weight.tolist() == [1.0] * 12  # uniform draws: no correction
    tags = rows.log_q.long().tolist()
    assert len(tags) == 12
    for part in tags[0:4], tags[4:8], tags[8:12]:
        assert len(set(part)) == 4  # no row twice within a minibatch
    assert set(tags) & set(range(5)) and set(tags) & set(range(5, 12))  # rows of both draws
    # each row keeps its own sample and evidence with its tag
    texts = [t for d in draws for t in d.samples.texts]
    factors = torch.cat([d.evidence.log_factor for d in draws])
    assert rows.samples.texts == [texts[i] for i in tags]
    torch.testing.assert_close(rows.evidence.log_factor, factors[tags])
    # a checkpoint's copy is the same buffer
    copy = SampleBuffer()
    copy.load_state_dict(buffer.state_dict())
    again, _ = copy.minibatches(3, 4, torch.Generator().manual_seed(0))
    assert again.samples.texts == rows.samples.texts
    torch.testing.assert_close(again.log_q, rows.log_q)
    torch.testing.assert_close(again.samples.ids, rows.samples.ids)


def test_the_twist_with_a_buffer_fits_p_exactly_with_one_small_update_per_step(make_trainer):
    trainer = make_trainer()
    assert not trainer.reuse_sampling_pass
    records = trainer.fit()
    first, last = records[0], records[-1]
    assert len(trainer.buffer) == 40 * 128 and last["samples_seen"] == 40 * 128
    # measured 0.052 after these 40 steps (0.87 at the start)
    assert last["exact_kl_p_pi"] < 0.2 * first["exact_kl_p_a"], last["exact_kl_p_pi"]


def test_a_buffers_minibatch_need_not_divide_the_draw(make_trainer):
    """Rows come from every sample so far, so updates of 48 rows after draws of 128 are fine;
    without the buffer the minibatches are cut from the draw and must divide it."""
    trainer = make_trainer("training.minibatch_size=48", "training.updates_per_step=3", "training.steps=2")
    sizes, loss = [], trainer.objective.per_sample_loss

    def counted(batch, out):
        sizes.append(len(batch.samples.ids))
        return loss(batch, out)

    trainer.objective.per_sample_loss = counted
    trainer.train_step()
    trainer.train_step()
    assert sizes == [48] * 6 and len(trainer.buffer) == 256
    with pytest.raises(ConfigError, match="minibatch_size 48 must divide batch_size 128"):
        make_trainer(
            "training.minibatch_size=48", "training.sample_buffer=false", "training.updates_per_step=null"
        )


def test_gdcpp_with_a_buffer_moves_towards_p(make_trainer):
    """Importance weights with each row's own log q: GDC++ on a growing buffer of samples of a
    (measured 0.87 → 0.15; 0.18 without the buffer, 2 updates of 64 fresh rows per step)."""
    records = make_trainer(
        "training.method=gdc++", "training.twist=null", "training.proposal.update=fixed", "training.lr=3e-2"
    ).fit()
    assert records[-1]["exact_kl_p_pi"] < 0.5 * records[0]["exact_kl_p_pi"], records[-1]["exact_kl_p_pi"]


def test_a_resumed_run_draws_the_same_minibatches(make_trainer, tmp_path):
    whole, resumed, run = stopped_and_resumed(make_trainer, tmp_path)
    assert len(resumed.buffer) == 3 * 128  # the checkpoint's buffer is back
    resumed.fit()
    assert_same_trainable_weights(whole, resumed)
    without = make_trainer(
        "training.steps=6", "training.sample_buffer=false", "training.updates_per_step=null", run=run
    )
    with pytest.raises(ValueError, match="sample_buffer disagree"):
        without.resume()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("training.sample_buffer=false",), "updates_per_step counts the updates"),
        (("training.epochs=2",), "epochs must be 1"),
    ],
)
def test_settings_that_do_not_fit_the_buffer_are_refused(make_trainer, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_trainer(*overrides)


def test_objectives_that_prepare_each_steps_batch_are_refused(make_trainer):
    with pytest.raises(ValueError, match="sample_buffer replays older samples"):
        make_trainer(
            "training.method=ppo",
            "training.twist=null",
            "training.proposal.update=on_policy",
            "training.ppo={beta: 0.1}",
        )
