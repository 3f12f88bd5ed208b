"""The optimizer that ``training`` describes: Adam's ε reaches the update."""

from __future__ import annotations

import pytest
import torch

from bayesalign.config import parse_config
from bayesalign.training.args import TrainArgs
from bayesalign.training.optimizer import make_optimizer


def one_update(gradient: float, **args) -> float:
    """How far one update moves a weight whose gradient is ``gradient``."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = make_optimizer([weight], TrainArgs(lr=1e-3, **args))
    weight.grad = torch.full((1,), gradient)
    optimizer.step()
    scheduler.step()
    return abs(weight.item())


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_eps_damps_the_update_of_a_weight_with_a_tiny_gradient(optimizer):
    # Adam's first update is lr·|g|/(|g| + ε) (the bias corrections cancel): ≈ lr whatever |g|
    # is while ε ≪ |g|, and ≈ lr·|g|/ε once ε ≫ |g|
    for gradient, eps in [(1e-6, 1e-8), (1e-6, 1e-3), (1.0, 1e-3)]:
        moved = one_update(gradient, optimizer=optimizer, adam_eps=eps)
        assert moved == pytest.approx(1e-3 * gradient / (gradient + eps), rel=1e-4)
    assert one_update(1e-6, optimizer=optimizer) == one_update(1e-6, optimizer=optimizer, adam_eps=1e-8)
    assert one_update(1e-6, optimizer=optimizer, adam_eps=1e-3) < 1e-3 / 500


def test_adam_eps_is_a_config_key_and_refuses_zero():
    base = {"model": {"name": "toy"}, "target": {"constraints": [{"type": "word", "words": ["a"]}]}}
    assert parse_config({**base, "training": {"adam_eps": 1e-4}}).training.adam_eps == 1e-4
    with pytest.raises(ValueError, match="adam_eps"):
        parse_config({**base, "training": {"adam_eps": 0}})
