"""The sampling loop that every acceptance rule uses: draw x ~ q in rounds, keep what the rule
accepts, stop when enough are kept, and let the rule choose the n samples returned.

In code::

    sampler = Sampler(target, prior, QuasiRejection(beta=2.0))   # or Rejection(bound=1.0),
    result = sampler.sample(1000, generator=torch.Generator().manual_seed(0))  # ImportanceResampling()
    result.texts, result.stats.acceptance_rate, result.ess
    result.diagnostics([0.5, 1, 2, 5])      # per β: acceptance Z_β/β, TV(p, p_β), KL(p‖p_β)

A round draws its proposals (``propose``, with the generator) and then throws the rule's coins
(with the same generator); resampling comes after the last round. A seed therefore fixes the
output, and rejection and quasi-rejection draw exactly as the loops before this one did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bayesalign import estimators as est
from bayesalign.estimators import Estimate
from bayesalign.models import LanguageModel
from bayesalign.proposals import ANCESTRAL, Scored, propose
from bayesalign.samples import SamplingParams
from bayesalign.sampling.diagnostics import QRSRow, default_betas, qrs_diagnostics
from bayesalign.sampling.rules import LowAcceptanceError, Rule
from bayesalign.targets import Target


@dataclass
class SamplerStats:
    """Running counts: proposals drawn from q, how many the rule kept, and how many it needs
    (the n samples asked for, or the size of a resampling pool)."""

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
    """The n samples (``scored``: in the order accepted, or as resampled), the counts, the rule,
    and log P, log q of every proposal drawn (for the IS diagnostics, ESS and Z)."""

    scored: Scored
    stats: SamplerStats
    rule: Rule
    proposal_log_target: torch.Tensor
    proposal_log_q: torch.Tensor

    def __len__(self) -> int:
        return len(self.scored)

    @property
    def texts(self) -> list[str]:
        return self.scored.samples.texts

    @property
    def distinct(self) -> int:
        return len(set(self.texts))

    @property
    def ess(self) -> float:
        """Effective sample size (Σw)²/Σw² of the proposals drawn."""
        return est.effective_sample_size(self.proposal_log_target, self.proposal_log_q)

    @property
    def log_z(self) -> Estimate:
        """IS estimate of log Z on the proposals drawn."""
        return est.log_partition(self.proposal_log_target, self.proposal_log_q)

    def diagnostics(self, betas: Sequence[float] | None = None) -> list[QRSRow]:
        """IS estimates of acceptance, TV(p, p_β), KL(p‖p_β) on every proposal drawn."""
        t, q = self.proposal_log_target, self.proposal_log_q
        return qrs_diagnostics(t, q, default_betas(t, q) if betas is None else betas)


class Sampler:
    """Draw x ~ q in rounds and keep those an acceptance rule accepts, until the rule has enough.

    ``rule`` is :class:`~bayesalign.sampling.Rejection` (exact draws from p; needs M ≥ P/q),
    :class:`~bayesalign.sampling.QuasiRejection` (draws from p_β) or
    :class:`~bayesalign.sampling.ImportanceResampling` (a pool of proposals, resampled ∝ P/q).
    ``max_proposals`` caps the work of accept/reject rules: the loop stops with
    :class:`~bayesalign.sampling.LowAcceptanceError` as soon as even an optimistic estimate of
    the acceptance rate (an upper confidence bound) says that n samples would need more
    proposals than the cap. A resampling pool is drawn whole.
    """

    def __init__(
        self,
        target: Target,
        proposal: LanguageModel,
        rule: Rule,
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
        pool = self.rule.pool_size(n)
        wanted, cap = (n, self.max_proposals) if pool is None else (pool, pool)
        stats = SamplerStats(wanted=wanted)
        kept: list[Scored] = []
        log_targets: list[torch.Tensor] = []
        log_qs: list[torch.Tensor] = []
        while stats.accepted < wanted:
            size = min(self.proposals_per_round, cap - stats.proposed)
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
            if stats.accepted < wanted:  # never fails for a pool: all kept, so needed < pool
                self._check_progress(stats, cap, torch.cat(log_targets))
        chosen = Scored.concat([k for k in kept if len(k)])
        return SamplerResult(
            scored=chosen.select(self.rule.choose(chosen, n, generator)),
            stats=stats,
            rule=self.rule,
            proposal_log_target=torch.cat(log_targets),
            proposal_log_q=torch.cat(log_qs),
        )

    def _check_progress(self, stats: SamplerStats, cap: int, log_target: torch.Tensor) -> None:
        k, m = stats.accepted, stats.proposed
        optimistic = (k + 2 * math.sqrt(k) + 3) / m  # above a ~97.5% upper bound on the rate
        needed = m + (stats.wanted - k) / optimistic
        if m < cap and needed <= cap:
            return
        positive = int((log_target > float("-inf")).sum())
        why = (
            "none of them has P(x) > 0 (no sample satisfied the constraints)"
            if positive == 0
            else f"{positive} of them have P(x) > 0"
        )
        rate = f"{k / m:.3g}" if k else f"0 (below {3 / m:.2g} at 95% confidence)"
        raise LowAcceptanceError(
            f"{self.rule.describe()}: {k} of {m} proposals accepted (rate {rate}); {stats.wanted} "
            f"samples would need about {needed:,.0f} proposals, more than the cap of "
            f"{cap:,} (max_proposals). Of the proposals, {why}. Raise the cap, ask "
            f"for fewer samples, or {self.rule.low_acceptance_hint}"
        )
