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
