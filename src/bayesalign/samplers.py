"""Sampling from a target P without training: rejection, quasi-rejection, importance resampling.

Every sampler draws x ~ q from a proposal (the prior a, or a trained policy π) and looks at the
importance weight w(x) = P(x)/q(x), always in log space and float64:

- rejection sampling, when a bound M ≥ P/q is known: accept x with probability w(x)/M. Accepted
  samples are exact draws from p = P/Z, and the acceptance rate is Z/M. With q = a and a pointwise
  target, w = b(x) ≤ 1, so M = 1. A sample with w > M proves the bound wrong and is refused.
- quasi-rejection sampling (QRS; Eikema et al.): accept x with probability min(1, w(x)/β) for any
  β > 0. Accepted samples follow p_β(x) ∝ min(P(x), β q(x)), the acceptance rate is Z_β/β with
  Z_β = E_q[min(w, β)], and p_β = p once β ≥ max P/q. β trades speed (small β) for fidelity
  (large β); :func:`qrs_diagnostics` estimates the acceptance rate, TV(p, p_β) and KL(p‖p_β) for
  a list of β from one batch of proposals so that β can be chosen knowingly.
- importance resampling (SIR): draw a pool of N proposals, resample k of them with probabilities
  ∝ w. Resampled points follow p as N → ∞; the effective sample size (Σw)²/Σw² tells how many
  distinct draws from p the pool is worth.

In code::

    sampler = Sampler(target, prior, QuasiRejection(beta=2.0))      # or Rejection(bound=1.0)
    result = sampler.sample(1000, generator=torch.Generator().manual_seed(0))
    result.accepted.samples.texts, result.stats.acceptance_rate
    result.diagnostics([0.5, 1, 2, 5])      # per β: acceptance Z_β/β, TV(p, p_β), KL(p‖p_β)
    beta_for_acceptance(result.proposal_log_target, result.proposal_log_q, 0.1)

The accept/reject coins and the resampling use a ``torch.Generator``: a seed fixes the output.
The ``exact_*`` functions give the same quantities by enumerating a toy space (exact.py), for
tests and for checking a sampler on a toy problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bayesalign import estimators as est
from bayesalign.estimators import Estimate
from bayesalign.exact import ExactTarget, kl, tv
from bayesalign.models import LanguageModel, SamplingParams
from bayesalign.proposals import ANCESTRAL, Scored, propose
from bayesalign.targets import Target

__all__ = ["Scored", "propose"]  # re-exported: a sampler's result is a scored batch


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


# -- acceptance rules -----------------------------------------------------------------------------
class QuasiRejection:
    """Accept x ~ q with probability min(1, P(x)/(β q(x))); accepted x follow p_β ∝ min(P, β q)."""

    name = "qrs"

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


# -- the sampling loop ---------------------------------------------------------------------------
@dataclass
class SamplerStats:
    """Running counts: proposals drawn from q and how many of them were accepted."""

    proposed: int = 0
    accepted: int = 0
    wanted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def acceptance_stderr(self) -> float:
        """Binomial standard error of the acceptance rate."""
        r = self.acceptance_rate
        return math.sqrt(r * (1 - r) / self.proposed) if self.proposed else float("nan")


@dataclass
class SamplerResult:
    """The accepted samples (exactly as many as asked, in the order they were accepted), the
    counts, and log P, log q of every proposal drawn (for :func:`qrs_diagnostics`)."""

    accepted: Scored
    stats: SamplerStats
    proposal_log_target: torch.Tensor
    proposal_log_q: torch.Tensor

    def diagnostics(self, betas: Sequence[float] | None = None) -> list[QRSRow]:
        """IS estimates of acceptance, TV(p, p_β), KL(p‖p_β) on every proposal drawn."""
        t, q = self.proposal_log_target, self.proposal_log_q
        return qrs_diagnostics(t, q, default_betas(t, q) if betas is None else betas)


class Sampler:
    """Draw x ~ q in rounds and keep those an acceptance rule accepts, until n are accepted.

    ``rule`` is :class:`Rejection` (exact draws from p; needs M ≥ P/q) or :class:`QuasiRejection`
    (draws from p_β). ``max_proposals`` caps the work: the loop stops with
    :class:`LowAcceptanceError` as soon as even an optimistic estimate of the acceptance rate
    (an upper confidence bound) says that n samples would need more proposals than the cap.
    """

    def __init__(
        self,
        target: Target,
        proposal: LanguageModel,
        rule: QuasiRejection,
        params: SamplingParams = ANCESTRAL,
        *,
        proposals_per_round: int = 256,
        max_proposals: int = 100_000,
        batch_size: int | None = None,
    ) -> None:
        if proposals_per_round < 1 or max_proposals < 1:
            raise ValueError("proposals_per_round and max_proposals must be >= 1")
        self.target, self.proposal, self.rule, self.params = target, proposal, rule, params
        self.proposals_per_round, self.max_proposals = proposals_per_round, max_proposals
        self.batch_size = batch_size

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        on_round: Callable[[SamplerStats], None] | None = None,
    ) -> SamplerResult:
        if n < 1:
            raise ValueError(f"the number of samples must be >= 1, got {n}")
        stats = SamplerStats(wanted=n)
        kept: list[Scored] = []
        log_targets: list[torch.Tensor] = []
        log_qs: list[torch.Tensor] = []
        while stats.accepted < n:
            size = min(self.proposals_per_round, self.max_proposals - stats.proposed)
            batch = propose(
                self.target,
                self.proposal,
                size,
                self.params,
                generator=generator,
                batch_size=self.batch_size,
            )
            accepted = self.rule.accept(batch.log_target, batch.log_q, generator, batch.samples.texts)
            log_targets.append(batch.log_target)
            log_qs.append(batch.log_q)
            kept.append(batch.select(accepted.nonzero().squeeze(1)))
            stats.proposed += size
            stats.accepted += int(accepted.sum())
            if on_round is not None:
                on_round(stats)
            if stats.accepted < n:
                self._check_progress(stats, torch.cat(log_targets))
        return SamplerResult(
            accepted=Scored.concat([k for k in kept if len(k)]).select(range(n)),
            stats=stats,
            proposal_log_target=torch.cat(log_targets),
            proposal_log_q=torch.cat(log_qs),
        )

    def _check_progress(self, stats: SamplerStats, log_target: torch.Tensor) -> None:
        k, m = stats.accepted, stats.proposed
        optimistic = (k + 2 * math.sqrt(k) + 3) / m  # above a ~97.5% upper bound on the rate
        needed = m + (stats.wanted - k) / optimistic
        if m < self.max_proposals and needed <= self.max_proposals:
            return
        positive = int((log_target > float("-inf")).sum())
        why = (
            "none of them has P(x) > 0 (no sample satisfied the constraints)"
            if positive == 0
            else f"{positive} of them have P(x) > 0"
        )
        if isinstance(self.rule, Rejection):
            hint = (
                "use quasi-rejection sampling (method qrs) with a β below the bound, or a proposal "
                "closer to the target (a trained policy)"
            )
        else:
            hint = (
                "lower β (acceptance rises, fidelity to p falls: see the diagnostic table), or use "
                "a proposal closer to the target (a trained policy)"
            )
        rate = f"{k / m:.3g}" if k else f"0 (below {3 / m:.2g} at 95% confidence)"
        raise LowAcceptanceError(
            f"{self.rule.describe()}: {k} of {m} proposals accepted (rate {rate}); {stats.wanted} "
            f"samples would need about {needed:,.0f} proposals, more than the cap of "
            f"{self.max_proposals:,} (max_proposals). Of the proposals, {why}. Raise the cap, ask "
            f"for fewer samples, or {hint}"
        )


# -- importance resampling -----------------------------------------------------------------------
def resample(
    log_target: torch.Tensor, log_q: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k indices drawn with replacement with probabilities ∝ w = P/q (sampling-importance-resampling)."""
    log_w = est.log_weights(log_target, log_q)
    if (log_w == float("-inf")).all():
        raise est.ZeroPartitionError(f"none of the {len(log_w)} samples has P(x) > 0: nothing to resample")
    probs = torch.softmax(log_w, 0)
    return torch.multinomial(probs, k, replacement=True, generator=generator)


@dataclass
class ResampleResult:
    """k resampled points, the pool's effective sample size and its estimate of Z."""

    resampled: Scored
    pool_size: int
    ess: float
    log_z: Estimate
    proposal_log_target: torch.Tensor
    proposal_log_q: torch.Tensor

    @property
    def distinct(self) -> int:
        return len(set(self.resampled.samples.texts))


class ImportanceResampler:
    """Draw a pool of ``pool`` proposals from q, then resample k of them ∝ P/q.

    Unlike rejection sampling, the output is only approximately from p (exact as the pool grows)
    and may repeat a point; the pool's ESS says how many independent draws from p it is worth.
    """

    def __init__(
        self,
        target: Target,
        proposal: LanguageModel,
        pool: int,
        params: SamplingParams = ANCESTRAL,
        *,
        proposals_per_round: int = 256,
        batch_size: int | None = None,
    ) -> None:
        if pool < 1:
            raise ValueError(f"the pool must hold >= 1 proposal, got {pool}")
        self.target, self.proposal, self.pool, self.params = target, proposal, pool, params
        self.proposals_per_round, self.batch_size = proposals_per_round, batch_size

    def sample(
        self,
        k: int,
        *,
        generator: torch.Generator | None = None,
        on_round: Callable[[SamplerStats], None] | None = None,
    ) -> ResampleResult:
        if k < 1:
            raise ValueError(f"the number of samples must be >= 1, got {k}")
        stats = SamplerStats(wanted=self.pool)
        parts = []
        while stats.proposed < self.pool:
            size = min(self.proposals_per_round, self.pool - stats.proposed)
            parts.append(
                propose(
                    self.target,
                    self.proposal,
                    size,
                    self.params,
                    generator=generator,
                    batch_size=self.batch_size,
                )
            )
            stats.proposed += size
            if on_round is not None:
                on_round(stats)
        pool = Scored.concat(parts)
        index = resample(pool.log_target, pool.log_q, k, generator)
        return ResampleResult(
            resampled=pool.select(index),
            pool_size=len(pool),
            ess=est.effective_sample_size(pool.log_target, pool.log_q),
            log_z=est.log_partition(pool.log_target, pool.log_q),
            proposal_log_target=pool.log_target,
            proposal_log_q=pool.log_q,
        )


# -- QRS diagnostics by importance sampling -------------------------------------------------------
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


# -- exact counterparts on an enumerable space ----------------------------------------------------
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


# -- proposals from a run folder ------------------------------------------------------------------
def proposal_folder(folder: str | Path) -> Path:
    """The model folder of a proposal: ``folder`` itself, or its ``final/`` when given a run folder.
    Checks only the files, so a wrong path is reported before any model is loaded."""
    path = Path(folder)
    if (path / "final").is_dir():
        path = path / "final"
    if not path.is_dir():
        raise SamplingError(f"proposal folder {folder} does not exist (pass a run's final/ folder)")
    if not ((path / "config.json").exists() or (path / "adapter_config.json").exists()):
        raise SamplingError(
            f"proposal folder {path} holds no model (no config.json or adapter_config.json); "
            "pass a run's final/ folder"
        )
    return path


def load_proposal(folder: str | Path, prior: LanguageModel) -> LanguageModel:
    """A trained policy from a run's ``final/`` folder (or the run folder holding it), frozen, as a
    proposal for sampling from a target over ``prior``.

    Merged weights (a plain HF folder) load directly; an adapter-only folder (LoRA saved with
    ``checkpoint.merge_lora: false``) is applied to a copy of the prior's weights. The tokenizer
    must be the prior's: P/q compares probabilities of the same token sequences.
    """
    path = proposal_folder(folder)
    if (path / "adapter_config.json").exists():
        import copy

        from peft import PeftModel

        base = copy.deepcopy(prior.module)
        if hasattr(base, "disable_adapter"):  # the prior is a LoRA-wrapped module: take its base
            base = base.get_base_model()
        module = PeftModel.from_pretrained(base, path).eval()
        module.requires_grad_(False)
        return LanguageModel(module, prior.tokenizer, prior.prompt)
    dtype = next(prior.module.parameters()).dtype
    proposal = LanguageModel.from_pretrained(path, prior.prompt, dtype=dtype)
    proposal.module.requires_grad_(False)
    if proposal.tokenizer.get_vocab() != prior.tokenizer.get_vocab():
        raise SamplingError(
            f"the proposal in {path} has another tokenizer than the prior "
            f"({len(proposal.tokenizer)} vs {len(prior.tokenizer)} tokens); P/q needs the same one"
        )
    return proposal
