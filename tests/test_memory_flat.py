"""A long run's memory is flat: no training step keeps its autograd graph or its tensors alive.

A step builds a graph over every activation of the policy's forward; if anything outlives the
step while holding a tensor of that graph (a loss kept for logging, a list of outputs), each step
adds a graph's worth of memory. After warm-up (AdamW's state, the proposal copy, transformers'
lazy caches), the tensors that Python can see must therefore be the same in number and bytes
after every step, and none of them may carry a ``grad_fn``. Parameters are left out of the
census: a KL-adaptive proposal legitimately swaps in a new frozen copy of π.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import pytest
import torch

from bayesalign.training import Trainer

WARMUP, STEPS = 6, 24
CENSUS_AT = (WARMUP, WARMUP + STEPS // 2)  # and after the run; each census walks every object (0.3 s)


@dataclass(frozen=True)
class Census:
    tensors: int  # live non-parameter tensors
    bytes: int  # their storage, each storage counted once
    with_graph: int  # of them, those with a grad_fn (a graph kept alive)


def census() -> Census:
    gc.collect()
    # type(), not isinstance(): the latter reads __class__, which warns on deprecated proxies
    tensors = [
        o
        for o in gc.get_objects()
        if issubclass(type(o), torch.Tensor) and not issubclass(type(o), torch.nn.Parameter)
    ]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return Census(len(tensors), sum(storages.values()), sum(t.grad_fn is not None for t in tensors))


BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    "training": {
        "steps": WARMUP + STEPS,
        "batch_size": 32,
        "minibatch_size": 16,
        "lr": 1e-2,
        "proposal": {"every": 2, "samples": 32},
    },
    "eval": {"every": 4, "samples": 16, "save_samples": 0, "report": False},
}


def run_and_count(trainer: Trainer) -> dict[int, Census]:
    """Census after steps ``CENSUS_AT`` of ``fit`` (training, proposal checks and evaluations
    every few steps) and at its end."""
    counts: dict[int, Census] = {}

    def on_step(step: int) -> None:
        if step in CENSUS_AT:
            counts[step] = census()

    trainer.fit(on_step=on_step)
    counts[trainer.state.step] = census()  # after the last check and evaluation too
    return counts


CASES = {
    "dpg, q = a": ("training.method=dpg", "training.proposal.update=fixed"),
    "gdc++, KL-adaptive q": ("training.method=gdc++", "training.proposal.update=adaptive"),
    "kl-reinforce": (
        "training.method=kl-reinforce",
        "training.proposal.update=on_policy",
        "training.kl_reinforce={beta: 0.1}",
    ),
    "gdc++ on-policy, one update (through the sampling pass's graph)": (
        "training.method=gdc++",
        "training.proposal.update=on_policy",
        "training.minibatch_size=32",
    ),
    "ppo (value head, 2 epochs)": (
        "training.method=ppo",
        "training.proposal.update=on_policy",
        "training.epochs=2",
        "training.ppo={beta: 0.1}",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_memory_is_flat_over_many_steps(make_trainer, case: str) -> None:
    trainer = make_trainer(*CASES[case])
    assert trainer.reuse_sampling_pass == ("sampling pass" in case)
    counts = run_and_count(trainer)
    assert trainer.state.step == WARMUP + STEPS
    assert all(c.with_graph == 0 for c in counts.values()), {s: c.with_graph for s, c in counts.items()}
    after_warmup = counts[WARMUP]
    grew = {s: c for s, c in counts.items() if s > WARMUP and c != after_warmup}
    assert not grew, f"after step {WARMUP}: {after_warmup}; later: {grew}"


def test_census_sees_a_step_that_keeps_its_graph(make_trainer) -> None:
    """The check above is not blind: keeping each step's loss (and so its graph) is caught."""
    trainer = make_trainer(*CASES["dpg, q = a"])
    kept = []
    forward = trainer.policy.forward_generated

    def leaky(*args, **kwargs):
        out = forward(*args, **kwargs)
        kept.append(out)  # log π with its grad_fn: the step's whole graph stays alive
        return out

    trainer.policy.forward_generated = leaky
    counts = run_and_count(trainer)
    assert counts[WARMUP + STEPS].with_graph > 0
    assert counts[WARMUP + STEPS].tensors > counts[WARMUP].tensors
    assert counts[WARMUP + STEPS].bytes > counts[WARMUP].bytes
