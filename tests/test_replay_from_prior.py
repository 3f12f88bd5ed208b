"""training.replay_from: prior — GDC++ in passes over every prior sample of the pool's training
split (q = a), against maximum likelihood on its accepted samples (replay_from: posterior),
exact on a toy space of 9,331 sequences."""

from __future__ import annotations

import copy

import pytest
import torch

from bayesalign.config import apply_overrides, parse_config
from bayesalign.config.build import build_models, build_target, build_trainer
from bayesalign.training.draws import replay_batch

WORDS = ["a", "b", "c", "d", "e", "f"]
RAW = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 3, "n_layer": 2, "n_embd": 32}},
    "sampling": {"max_new_tokens": 5},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    "training": {
        "method": "gdc++",
        "steps": 150,
        "batch_size": 32,
        "lr": 3e-3,
        "replay_pool": True,
        "replay_from": "prior",
        "proposal": {"update": "fixed"},
    },
    "eval": {
        "samples": 32,
        "exact": True,
        "report": False,
        "every": 150,
        "pool": {"samples": 768, "holdout": 0.33, "cache": False},
    },
}


def make_trainer(*overrides: str):
    config = parse_config(apply_overrides(copy.deepcopy(RAW), list(overrides)))
    policy, prior = build_models(config.model, config.prompt, config.training.seed)
    return build_trainer(config, policy, build_target(config.target, prior))


def test_a_pass_over_the_prior_rows_is_every_sample_once_as_a_draw_of_a():
    trainer = make_trainer()
    trainer.evaluator.ensure_pool()
    pool = trainer.evaluator.train_pool
    n = len(pool.draws)
    draw, position = replay_batch(pool, n, 0, seed=0, source="prior")
    assert position == n and sorted(draw.samples.texts) == sorted(pool.draws.samples.texts)
    torch.testing.assert_close(draw.log_q, draw.log_a, rtol=0, atol=0)
    satisfied = draw.evidence.scores[next(iter(draw.evidence.scores))] > 0
    assert torch.isneginf(draw.log_target[~satisfied]).all() and satisfied.sum() == pool.n_accepted
    accepted, _ = replay_batch(pool, 8, 0, seed=0, source="posterior")
    assert accepted.evidence.log_factor.isfinite().all()  # posterior rows: accepted ones only


def test_gdcpp_over_the_prior_rows_keeps_improving_where_maximum_likelihood_overfits():
    """150 steps × 32 = about nine passes over the 514 training rows (some eighteen over the accepted
    ones): maximum likelihood on the accepted samples has by then piled mass onto them and
    its exact KL(p‖π) is rising (0.44 here, from a best near 0.35); GDC++ over every prior row
    is still falling (0.26). Measured over 3 seeds in docs/demo-recipe.md."""
    prior_rows = make_trainer().fit()
    accepted_rows = make_trainer("training.method=dpg", "training.replay_from=posterior").fit()
    start = prior_rows[0]["exact_kl_p_pi"]
    assert accepted_rows[0]["exact_kl_p_pi"] == pytest.approx(start)
    assert prior_rows[-1]["exact_kl_p_pi"] < 0.6 * start
    assert prior_rows[-1]["exact_kl_p_pi"] < 0.75 * accepted_rows[-1]["exact_kl_p_pi"]


def test_replay_from_without_replay_pool_is_refused():
    raw = copy.deepcopy(RAW)
    raw["training"]["replay_pool"] = False
    with pytest.raises(ValueError, match="replay_from"):
        parse_config(raw)
