"""Acceptance rules: how the sampling loop (loop.py) turns proposals x ~ q into samples of P.

Every rule looks at the importance weight w(x) = P(x)/q(x), in log space and float64, and does two
things the loop asks of it: per round, :meth:`Rule.accept` says which proposals are kept; at the
end, :meth:`Rule.choose` picks the n samples returned from the kept ones.

- rejection sampling (:class:`Rejection`), when a bound M ≥ P/q is known: keep x with
  probability w(x)/M; return the first n kept. They are exact draws from p = P/Z, and the
  acceptance rate is Z/M. With q = a and a pointwise target, w = b(x) ≤ 1, so M = 1. A sample
  with w > M proves the bound wrong and is refused.
- quasi-rejection sampling (:class:`QuasiRejection`; Eikema et al.): keep x with probability
  min(1, w(x)/β) for any β > 0. Kept samples follow p_β(x) ∝ min(P(x), β q(x)), the acceptance
  rate is Z_β/β with Z_β = E_q[min(w, β)], and p_β = p once β ≥ max P/q. β trades speed (small
  β) for fidelity (large β); diagnostics.py estimates both for a list of β.
- importance resampling (:class:`ImportanceResampling`, SIR): keep every proposal of a pool of
  N, then resample n of them with probabilities ∝ w. Resampled points follow p as N → ∞; the
  effective sample size (Σw)²/Σw² tells how many distinct draws from p the pool is worth.

The coins and the resampling use the loop's ``torch.Generator``: a seed fixes the output.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from bayesalign import estimators as est

if TYPE_CHECKING:
    from bayesalign.proposals import Scored


class SamplingError(ValueError):
    """A sampler cannot do what was asked; the message says why and what to change."""


class BoundExceededError(SamplingError):
    """Rejection sampling met a sample with P/q above the stated bound M."""


class LowAcceptanceError(SamplingError):
    """Too few proposals are accepted to reach the wanted number of samples within the cap."""


def _log_of(name: str, value: float | None, log_value: float | None) -> float:
    """log of a positive scale given either as ``value`` or as ``log_value``."""
    if (value is None) == (log_value is None):
        raise ValueError(f"give exactly one of {name} and log_{name}")
    if value is not None:
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite number, got {value}")
        return math.log(value)
    if not math.isfinite(log_value):
        raise ValueError(f"log_{name} must be finite, got {log_value}")
    return float(log_value)


def _coins(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """log u for n uniforms u ∈ [0, 1), float64 (log 0 = −inf never accepts a zero weight)."""
    return torch.rand(n, generator=generator, dtype=torch.float64).log()


class Rule(ABC):
    """What the sampling loop asks of a rule.

    ``pool_size(n)`` is None when the loop draws rounds until n proposals are kept (within its
    cap), or the fixed number of proposals to draw. ``low_acceptance_hint`` ends the error the
    loop raises when too few proposals are kept to reach n within the cap.
    """

    name: str
    low_acceptance_hint: str = "use a proposal closer to the target (a trained policy)"

    @abstractmethod
    def describe(self) -> str:
        """The rule and its parameter in a few words, e.g. ``quasi-rejection, β = 2``."""

    @abstractmethod
    def accept(
        self,
        log_target: torch.Tensor,
        log_q: torch.Tensor,
        generator: torch.Generator | None = None,
        texts: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """One bool per proposal of a round: True where it is kept."""

    def pool_size(self, n: int) -> int | None:
        return None

    def choose(
        self, kept: Scored, n: int, generator: torch.Generator | None = None
    ) -> Sequence[int] | torch.Tensor:
        """Indices into the kept proposals (in the order kept) of the n samples returned."""
        return range(n)


class QuasiRejection(Rule):
    """Accept x ~ q with probability min(1, P(x)/(β q(x))); accepted x follow p_β ∝ min(P, β q)."""

    name = "qrs"
    low_acceptance_hint = (
        "lower β (acceptance rises, fidelity to p falls: see the diagnostic table), or use "
        "a proposal closer to the target (a trained policy)"
    )

    def __init__(self, beta: float | None = None, *, log_beta: float | None = None) -> None:
        self.log_beta = _log_of("beta", beta, log_beta)

    @property
    def beta(self) -> float:
        return math.exp(self.log_beta)

    def log_accept_probability(self, log_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """log min(1, w/β) per sample."""
        return (est.log_weights(log_target, log_q) - self.log_beta).clamp(max=0.0)

    def accept(
        self,
        log_target: torch.Tensor,
        log_q: torch.Tensor,
        generator: torch.Generator | None = None,
        texts: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """One coin per sample: True where accepted."""
        log_prob = self.log_accept_probability(log_target, log_q)
        return _coins(len(log_prob), generator) < log_prob

    def describe(self) -> str:
        return f"quasi-rejection, β = {self.beta:.4g}"


class Rejection(QuasiRejection):
    """Accept x ~ q with probability P(x)/(M q(x)), where M ≥ P/q everywhere; accepted x ~ p.

    A sample with P/q > M·exp(``log_tolerance``) raises :class:`BoundExceededError` (the bound is
    wrong, so accepted samples would not follow p). The small default tolerance absorbs rounding
    when log a and log q come from different forward passes of the same weights.
    """

    name = "rejection"
    low_acceptance_hint = (
        "use quasi-rejection sampling (method qrs) with a β below the bound, or a proposal "
        "closer to the target (a trained policy)"
    )

    def __init__(
        self,
        bound: float | None = None,
        *,
        log_bound: float | None = None,
        log_tolerance: float = 1e-4,
    ) -> None:
        super().__init__(log_beta=_log_of("bound", bound, log_bound))
        self.log_tolerance = log_tolerance

    @property
    def bound(self) -> float:
        return self.beta

    def check(
        self, log_target: torch.Tensor, log_q: torch.Tensor, texts: Sequence[str] | None = None
    ) -> None:
        """Raise :class:`BoundExceededError` if any sample has P/q above the bound."""
        log_w = est.log_weights(log_target, log_q)
        over = log_w > self.log_beta + self.log_tolerance
        if over.any():
            i = int(log_w.argmax())
            which = f" for the sample {texts[i]!r}" if texts is not None else ""
            raise BoundExceededError(
                f"rejection sampling: P/q = exp({log_w[i].item():.6g}){which} exceeds the bound "
                f"M = exp({self.log_beta:.6g}) = {self.bound:.4g} ({int(over.sum())} of {len(log_w)} "
                "samples do), so accepted samples would not follow p. Give a bound M ≥ max P/q, or "
                "use quasi-rejection sampling (method qrs), whose β need not bound P/q"
            )

    def accept(
        self,
        log_target: torch.Tensor,
        log_q: torch.Tensor,
        generator: torch.Generator | None = None,
        texts: Sequence[str] | None = None,
    ) -> torch.Tensor:
        self.check(log_target, log_q, texts)
        return super().accept(log_target, log_q, generator)

    def describe(self) -> str:
        return f"rejection, M = {self.bound:.4g}"


def resample(
    log_target: torch.Tensor, log_q: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k indices drawn with replacement with probabilities ∝ w = P/q (sampling-importance-resampling)."""
    log_w = est.log_weights(log_target, log_q)
    if (log_w == float("-inf")).all():
        raise est.ZeroPartitionError(f"none of the {len(log_w)} samples has P(x) > 0: nothing to resample")
    probs = torch.softmax(log_w, 0)
    return torch.multinomial(probs, k, replacement=True, generator=generator)


class ImportanceResampling(Rule):
    """Keep every proposal of a pool of ``pool`` (default 10·n), then resample n of them ∝ P/q.

    Unlike rejection sampling, the output is only approximately from p (exact as the pool grows)
    and may repeat a point; the pool's ESS says how many independent draws from p it is worth.
    The pool is drawn whole, whatever the loop's ``max_proposals``.
    """

    name = "importance"

    def __init__(self, pool: int | None = None) -> None:
        if pool is not None and pool < 1:
            raise ValueError(f"the pool must hold >= 1 proposal, got {pool}")
        self.pool = pool

    def pool_size(self, n: int) -> int:
        return self.pool or 10 * n

    def accept(
        self,
        log_target: torch.Tensor,
        log_q: torch.Tensor,
        generator: torch.Generator | None = None,
        texts: Sequence[str] | None = None,
    ) -> torch.Tensor:
        return torch.ones(len(log_target), dtype=torch.bool)  # no coins: the pool is kept whole

    def choose(self, kept: Scored, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return resample(kept.log_target, kept.log_q, n, generator)

    def describe(self) -> str:
        return "importance resampling" + (f", pool {self.pool:,}" if self.pool else ", pool 10·n")
