"""Quasi-rejection (and rejection) sampling computed exactly on an enumerable toy space: the law
p_β ∝ min(P, β q) of accepted samples, Z_β, the acceptance rate and how far p_β is from p. The
oracle of the tests, and a way to check a sampler on a toy problem."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bayesalign import estimators as est
from bayesalign.exact import ExactTarget, kl, tv


@dataclass(frozen=True)
class ExactQRS:
    """QRS with this β on an enumerated space: Z_β, the law p_β of accepted samples, and how far
    it is from p."""

    beta: float
    log_z: float
    log_z_beta: float
    log_p_beta: torch.Tensor = field(repr=False)
    acceptance: float  # Z_β/β
    tv: float  # TV(p, p_β)
    kl: float  # KL(p‖p_β)


def exact_max_ratio(exact: ExactTarget, log_q: torch.Tensor) -> float:
    """max_x P(x)/q(x) over the space: the smallest β (or bound M) with p_β = p."""
    return math.exp(est.log_weights(exact.log_target, log_q).max().item())


def exact_qrs(exact: ExactTarget, log_q: torch.Tensor, beta: float) -> ExactQRS:
    """Exact Z_β = Σ min(P, β q), p_β = min(P, β q)/Z_β, acceptance Z_β/β, TV(p, p_β), KL(p‖p_β).

    ``log_q`` is the proposal's log-probability of every sequence of ``exact.space`` (e.g.
    ``exact.space.log_prob(proposal)``, valid for ancestral sampling). Rejection sampling with a
    bound M ≥ max P/q is the case β = M: then p_β = p and the acceptance rate is Z/M.
    """
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a positive finite number, got {beta}")
    log_target = exact.log_target
    log_m = torch.minimum(log_target, math.log(beta) + log_q.double())
    log_z_beta = torch.logsumexp(log_m, 0).item()
    log_p_beta = log_m - log_z_beta
    log_p = exact.log_p
    return ExactQRS(
        beta=beta,
        log_z=exact.log_z,
        log_z_beta=log_z_beta,
        log_p_beta=log_p_beta,
        acceptance=math.exp(log_z_beta - math.log(beta)),
        tv=tv(log_p, log_p_beta),
        kl=kl(log_p, log_p_beta),
    )
