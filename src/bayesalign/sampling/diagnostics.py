"""Choosing β for quasi-rejection sampling knowingly: from one batch of proposals x ~ q with their
log P and log q, importance-sampling estimates of what QRS with a given β does (acceptance rate
Z_β/β, TV(p, p_β), KL(p‖p_β)), β at quantiles of the weights, and the β for a wanted rate.

In code::

    qrs_diagnostics(batch.log_target, batch.log_q, [0.5, 1, 2, 5])   # one QRSRow per β
    beta_for_acceptance(batch.log_target, batch.log_q, 0.1)

exact.py gives the same quantities exactly on an enumerable toy space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bayesalign import estimators as est
from bayesalign.estimators import Estimate
from bayesalign.sampling.rules import SamplingError


@dataclass(frozen=True)
class QRSRow:
    """What QRS with this β does, estimated from proposals: acceptance rate Z_β/β, TV(p, p_β),
    KL(p‖p_β)."""

    beta: float
    acceptance: Estimate
    tv: Estimate
    kl: Estimate


def _qrs_parts(log_target: torch.Tensor, log_q: torch.Tensor, beta: float):
    """log w, log min(w, β), log Ẑ, log Ẑ_β on one batch (raising on a batch with Z = 0)."""
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a positive finite number, got {beta}")
    log_w = est.log_weights(log_target, log_q)
    if (log_w == float("-inf")).all():
        raise est.ZeroPartitionError(f"none of the {len(log_w)} samples has P(x) > 0: Z estimate is 0")
    log_beta = math.log(beta)
    log_m = log_w.clamp(max=log_beta)
    n = math.log(len(log_w))
    return log_w, log_m, log_beta, torch.logsumexp(log_w, 0).item() - n, torch.logsumexp(log_m, 0).item() - n


def qrs_acceptance(log_target: torch.Tensor, log_q: torch.Tensor, beta: float) -> Estimate:
    """Acceptance rate Z_β/β = E_q[min(1, w/β)], averaged over the proposals (no coins thrown)."""
    _, log_m, log_beta, _, _ = _qrs_parts(log_target, log_q, beta)
    return est.mean(torch.exp(log_m - log_beta))


def qrs_tv(log_target: torch.Tensor, log_q: torch.Tensor, beta: float) -> Estimate:
    """TV(p, p_β) ≈ ½·mean|w/Ẑ − min(w, β)/Ẑ_β|.

    It is the exact TV between the two weighted empirical distributions of the batch, so it lies in
    [0, 1], and it is 0 once β ≥ the largest weight *seen* (a heavier unseen weight would still
    make the true TV positive). The stderr is the delta method on (terms, w, min(w, β)): both
    normalisers are estimated on the same proposals.
    """
    log_w, log_m, _, log_z, log_zb = _qrs_parts(log_target, log_q, beta)
    p = torch.exp(log_w - log_z)  # p/q, at most n on the batch: never overflows
    pb = torch.exp(log_m - log_zb)  # p_β/q
    sign = torch.sign(p - pb)
    terms = 0.5 * (p - pb).abs()
    influence = terms - (0.5 * sign * p).mean() * p + (0.5 * sign * pb).mean() * pb
    return Estimate(terms.mean().item(), est.mean(influence).stderr)


def qrs_kl(log_target: torch.Tensor, log_q: torch.Tensor, beta: float) -> Estimate:
    """KL(p‖p_β) = E_q[(w/Z)·max(0, log w − log β)] + log Z_β − log Z.

    (log p/p_β = log w/min(w, β) + log Z_β/Z, and log w/min(w, β) = max(0, log w − log β).) With
    A = mean(w·max(0, log w/β)), B = mean(w), C = mean(min(w, β)), KL = A/B − log B + log C; the
    stderr is the delta method on (A, B, C). Like :func:`qrs_tv`, it is the exact KL between the
    batch's weighted empirical distributions, hence ≥ 0.
    """
    log_w, log_m, log_beta, _, _ = _qrs_parts(log_target, log_q, beta)
    shift = log_w.max().item()  # rescale w and min(w, β) alike: the ratios A/B, C/B are unchanged
    w = torch.exp(log_w - shift)
    m = torch.exp(log_m - shift)
    f = w * (log_w - log_beta).clamp(min=0.0)  # where w = 0 the clamp gives 0, so 0·log 0 = 0
    a, b, c = f.mean().item(), w.mean().item(), m.mean().item()
    value = a / b - math.log(b) + math.log(c)
    grad = torch.tensor([1 / b, -a / b**2 - 1 / b, 1 / c], dtype=torch.float64)
    n = len(w)
    if n > 1:
        cov = torch.cov(torch.stack([f, w, m]))
        stderr = math.sqrt(max((grad @ cov @ grad).item(), 0.0) / n)
    else:
        stderr = float("nan")
    return Estimate(max(value, 0.0), stderr)


def qrs_diagnostics(log_target: torch.Tensor, log_q: torch.Tensor, betas: Sequence[float]) -> list[QRSRow]:
    """For each β (ascending): acceptance rate, TV(p, p_β), KL(p‖p_β), from one batch of proposals."""
    return [
        QRSRow(
            beta=b,
            acceptance=qrs_acceptance(log_target, log_q, b),
            tv=qrs_tv(log_target, log_q, b),
            kl=qrs_kl(log_target, log_q, b),
        )
        for b in sorted(set(betas))
    ]


def default_betas(
    log_target: torch.Tensor,
    log_q: torch.Tensor,
    quantiles: Sequence[float] = (0.5, 0.75, 0.9, 0.95, 0.99, 1.0),
) -> list[float]:
    """β at quantiles of the positive weights P/q seen: at the 0.9 quantile, 10% of the proposals
    that P allows are capped (accepted with probability < 1); at 1.0, none is (estimated TV = 0)."""
    log_w = est.log_weights(log_target, log_q)
    positive = log_w[log_w > float("-inf")]
    if len(positive) == 0:
        raise est.ZeroPartitionError(f"none of the {len(log_w)} samples has P(x) > 0: no β to suggest")
    levels = torch.quantile(positive, torch.tensor(list(quantiles), dtype=torch.float64))
    return sorted({math.exp(v) for v in levels.tolist()})


def beta_for_acceptance(log_target: torch.Tensor, log_q: torch.Tensor, rate: float) -> float:
    """The β whose estimated acceptance rate Z_β/β = mean(min(1, w/β)) equals ``rate``.

    The rate falls continuously from the fraction of proposals with P > 0 (β → 0) towards 0
    (β → ∞); a rate above that fraction cannot be reached by any β and is refused. For
    β ≥ max w the rate is Ẑ/β, which gives β = Ẑ/rate directly; below, bisection on log β.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"the acceptance rate must be in (0, 1], got {rate}")
    log_w = est.log_weights(log_target, log_q)
    positive = log_w[log_w > float("-inf")]
    ceiling = len(positive) / len(log_w)
    if rate >= ceiling:
        raise SamplingError(
            f"no β gives an acceptance rate of {rate:g}: only {len(positive)} of {len(log_w)} proposals "
            f"({ceiling:.3g}) have P(x) > 0, and QRS accepts no other"
        )
    log_rate = math.log(rate)

    def log_acceptance(log_beta: float) -> float:
        return (torch.logsumexp(log_w.clamp(max=log_beta), 0) - math.log(len(log_w))).item() - log_beta

    hi = positive.max().item()
    if log_acceptance(hi) >= log_rate:  # β ≥ max w: rate = Ẑ/β
        return math.exp((torch.logsumexp(log_w, 0) - math.log(len(log_w))).item() - log_rate)
    lo = positive.min().item()  # at β = min positive w every positive proposal is accepted
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if log_acceptance(mid) > log_rate:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return math.exp(0.5 * (lo + hi))


@dataclass(frozen=True)
class QRSTable:
    """The diagnostic table `bayesalign sample` prints for QRS: one row per β, the run's β
    among them, estimated on ``proposals`` proposals."""

    rows: list[QRSRow]
    chosen: float
    proposals: int


def qrs_table(
    log_target: torch.Tensor, log_q: torch.Tensor, chosen: float, betas: Sequence[float] | None = None
) -> QRSTable:
    """Rows at ``betas`` (default: :func:`default_betas`) and at the chosen β."""
    betas = betas or default_betas(log_target, log_q)
    return QRSTable(qrs_diagnostics(log_target, log_q, [*betas, chosen]), chosen, len(log_target))
