"""Shared fixtures. Tests run on one thread: on 2 vCPUs, two threads under load can be far
slower, and results (e.g. resume equality) must not depend on thread scheduling."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from bayesalign.config import apply_overrides, parse_config
from bayesalign.config.build import build_models, build_target, build_trainer
from bayesalign.runs import RunFolder
from bayesalign.targets import Target
from bayesalign.training import Trainer

torch.set_num_threads(1)

TrainerFactory = Callable[..., Trainer]


@pytest.fixture(scope="module")
def make_trainer(request: pytest.FixtureRequest) -> TrainerFactory:
    """Build a trainer the way the CLI does (config dict → ``--set`` overrides → objects) from the
    test module's ``BASE`` config. ``target`` (a function of the prior) and ``objective`` replace
    the configured ones; a module may set ``DEFAULT_TARGET`` (a function of the prior) to replace
    the configured target for all its trainers."""
    base: dict = request.module.BASE
    default_target: Callable | None = getattr(request.module, "DEFAULT_TARGET", None)

    def make(
        *overrides: str,
        run: RunFolder | None = None,
        target: Callable[..., Target] | None = None,
        objective=None,
    ) -> Trainer:
        cfg = parse_config(apply_overrides(copy.deepcopy(base), overrides))
        policy, prior = build_models(cfg.model, cfg.prompt, cfg.training.seed, twist=cfg.training.twist)
        choose = target or default_target
        tgt = choose(prior) if choose is not None else build_target(cfg.target, prior, cfg.sampling)
        return build_trainer(cfg, policy, tgt, objective, run=run)

    return make


def stopped_and_resumed(make_trainer: TrainerFactory, tmp_path) -> tuple[Trainer, Trainer, RunFolder]:
    """A 6-step run whole, and the same run stopped after 3 steps (checkpoints every 3) with a
    new trainer resumed from its checkpoint, not yet fitted: (whole, resumed, the resumed run)."""
    schedule = ("training.steps=6", "checkpoint.every=3", "eval.every=3")
    whole = make_trainer(*schedule, run=RunFolder(tmp_path / "whole").create())
    whole.fit()
    run = RunFolder(tmp_path / "parts").create()
    make_trainer("training.steps=3", *schedule[1:], run=run).fit()
    resumed = make_trainer(*schedule, run=run)
    assert resumed.resume()
    return whole, resumed, run


def assert_same_trainable_weights(a: Trainer, b: Trainer, atol: float = 1e-6) -> None:
    weights = {k: v for k, v in b.policy.module.named_parameters() if v.requires_grad}
    for name, value in a.policy.module.named_parameters():
        if value.requires_grad:
            torch.testing.assert_close(weights[name], value, rtol=0, atol=atol, msg=name)
