"""``training.buffer_satisfied_share`` (training/buffer.py): the sample buffer's minibatches hold a
fixed share of satisfied rows, each row weighted so that the weighted loss stays an unbiased
estimate of the mean over the buffer; exact on the toy space; refused where it cannot work."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import assert_same_trainable_weights, stopped_and_resumed
from test_sample_buffer import BASE  # noqa: F401  (make_trainer reads the module's BASE)

from bayesalign.config import ConfigError
from bayesalign.training.buffer import SampleBuffer


def tagged_buffer(make_trainer, share: float | None, satisfied: torch.Tensor) -> SampleBuffer:
    """A buffer of len(satisfied) toy samples, each tagged by its log q (0, 1, …), with these flags."""
    trainer = make_trainer("training.steps=1")
    draw = trainer.draw(trainer.base, len(satisfied), torch.Generator().manual_seed(0))
    evidence = dataclasses.replace(draw.evidence, satisfied=satisfied)
    tags = torch.arange(len(satisfied), dtype=torch.float64)
    buffer = SampleBuffer(share)
    buffer.add(dataclasses.replace(draw, log_q=tags, evidence=evidence))
    return buffer


def test_each_minibatch_holds_the_share_and_every_row_weighs_its_due(make_trainer):
    satisfied = torch.arange(40) < 4  # 4 of 40 rows satisfied
    buffer = tagged_buffer(make_trainer, 0.25, satisfied)
    count, size = 3000, 16
    rows, weight = buffer.minibatches(count, size, torch.Generator().manual_seed(1))
    tags = rows.log_q.long()
    assert torch.equal(rows.evidence.satisfied, satisfied[tags])
    for part in rows.evidence.satisfied.view(count, size):
        assert part.sum() == 4  # a quarter of 16
        assert (part.view(4, 4).sum(1) == 1).all()  # interleaved: a quarter of every micro-batch of 4
    # the stratum's share of the buffer over its share of the minibatch
    torch.testing.assert_close(
        weight[satisfied[tags]], torch.full((4 * count,), (4 / 40) / (4 / 16)).double()
    )
    torch.testing.assert_close(
        weight[~satisfied[tags]], torch.full((12 * count,), (36 / 40) / (12 / 16)).double()
    )
    # unbiased: every row's summed weight is what uniform minibatches would give it, count·size/40
    per_row = torch.zeros(40, dtype=torch.float64).index_add_(0, tags, weight)
    expected = count * size / 40
    torch.testing.assert_close(per_row[:4], torch.full((4,), expected).double())  # in every minibatch
    assert (per_row[4:] - expected).abs().max() < 0.12 * expected, per_row[4:]


@pytest.mark.parametrize(
    ("satisfied", "share", "kept"),
    [
        (torch.arange(40) < 4, 0.9, 4),  # fewer satisfied than the share asks: all of them, once
        (torch.arange(40) < 36, 0.25, 12),  # fewer others than the rest: the satisfied fill up
        (torch.zeros(40, dtype=torch.bool), 0.25, 0),  # none satisfied: a uniform minibatch
        (torch.ones(40, dtype=torch.bool), 0.25, 16),
    ],
)
def test_a_minibatch_is_always_full_and_its_weights_average_to_one(make_trainer, satisfied, share, kept):
    buffer = tagged_buffer(make_trainer, share, satisfied)
    rows, weight = buffer.minibatches(5, 16, torch.Generator().manual_seed(2))
    for part, w in zip(rows.evidence.satisfied.view(5, 16), weight.view(5, 16), strict=True):
        assert part.sum() == kept
        # Σ over strata of (stratum's share of the buffer): the weights of a minibatch average to 1
        torch.testing.assert_close(w.mean(), torch.tensor(1.0, dtype=torch.float64))
    assert len(set(rows.log_q.view(5, 16)[0].tolist())) == 16  # no row twice within a minibatch


@pytest.mark.parametrize("micro", [64, 16])
def test_the_twists_start_is_the_buffers_rate_not_the_minibatchs(make_trainer, micro):
    """A stratified minibatch over-represents the satisfied rows; the head's constant start must
    be the rate of b over the buffer, which the rows' weights give back, also when it is read
    from the first micro-batch of four."""
    trainer = make_trainer(
        "training.buffer_satisfied_share=0.25", "training.lr=1e-12", f"training.micro_batch_size={micro}"
    )
    trainer.train_step()
    labels = trainer.buffer.draw.evidence.log_factor.exp()
    rate = labels.double().mean().item()
    bias = trainer.policy.module.head.bias
    torch.testing.assert_close(bias, torch.full_like(bias, math.log(rate / (1 - rate))), atol=1e-5, rtol=0)
    # the minibatch's own rate is far from it: a quarter of its rows are satisfied
    assert abs(rate - 0.25) > 0.1, rate


def test_the_twist_with_stratified_minibatches_fits_p_exactly(make_trainer):
    trainer = make_trainer("training.buffer_satisfied_share=0.7")
    weights, loss = [], trainer.objective.per_sample_loss

    def seen(batch, out):
        weights.append(batch.extras["row_weight"])
        return loss(batch, out)

    trainer.objective.per_sample_loss = seen
    records = trainer.fit()
    first, last = records[0], records[-1]
    # measured 0.065 and 0.117 for seeds 0 and 1 (0.052 and 0.055 with uniform minibatches)
    assert last["exact_kl_p_pi"] < 0.2 * first["exact_kl_p_a"], last["exact_kl_p_pi"]
    assert all(len(w.unique()) == 2 for w in weights[1:])  # the loop's rows carry their two strata's weights


def test_a_resumed_stratified_run_ends_with_the_same_weights(make_trainer, tmp_path):
    """The checkpoint's buffer and generator give the resumed run the same stratified minibatches."""

    def stratified(*overrides, **kwargs):
        return make_trainer("training.buffer_satisfied_share=0.5", *overrides, **kwargs)

    whole, resumed, _ = stopped_and_resumed(stratified, tmp_path)
    assert resumed.buffer.satisfied_share == 0.5 and len(resumed.buffer) == 3 * 128
    resumed.fit()
    assert_same_trainable_weights(whole, resumed)


def test_a_share_without_the_buffer_or_the_constraints_is_refused(make_trainer):
    with pytest.raises(ConfigError, match="stratifies the buffer's rows: set sample_buffer: true"):
        make_trainer(
            "training.buffer_satisfied_share=0.5",
            "training.sample_buffer=false",
            "training.updates_per_step=null",
        )
    with pytest.raises(ValueError, match="stratifies by constraints: this target has none"):
        make_trainer(
            "training.buffer_satisfied_share=0.5",
            "training.method=gdc++",
            "training.twist=null",
            "target={reward: {scorer: {type: word, words: [b], name: has_b}, beta: 1.0}}",
        )
