"""Two decisions the loop takes from numbers it measures: whether the KL-adaptive proposal q is
replaced by π, and what to tell the user when the loss stops being finite."""

from __future__ import annotations

import torch

from bayesalign import estimators as est
from bayesalign.objectives import Batch
from bayesalign.proposals import Scored


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message says which quantity caused it."""


def proposal_should_update(criterion: str, policy_score: float, proposal_score: float) -> bool:
    """KL-adaptive rule: replace q by π iff π is strictly closer to p (by KL or TV)."""
    if criterion not in ("kl", "tv"):
        raise ValueError(f"unknown proposal criterion {criterion!r}; valid: kl, tv")
    return policy_score < proposal_score


def distances_to_target(draw: Scored, log_pi: torch.Tensor, criterion: str) -> tuple[float, float]:
    """IS estimates of D(p, π) and D(p, q) (KL(p‖·) or TV) on ``draw``, fresh samples of q."""
    measure = est.kl_target_model if criterion == "kl" else est.tv_target_model
    pi_score = measure(draw.log_target, draw.log_q, log_pi).value
    return pi_score, measure(draw.log_target, draw.log_q, draw.log_q).value


def non_finite_message(
    objective: str, step: int, part: Batch, log_pi: torch.Tensor, loss: torch.Tensor
) -> str:
    """What a non-finite loss came from: the largest weight p/q and log Z, or log π."""
    weights = (
        f"max weight p/q = {part.normalised_weights.max().item():.4g}, log Z = {part.log_z:.4g}, "
        if part.log_target is not None
        else ""
    )
    return (
        f"{objective} loss is {loss.item()} at step {step}: {weights}"
        f"min log π = {log_pi.min().item():.4g}. Lower training.lr or check the scorers."
    )
