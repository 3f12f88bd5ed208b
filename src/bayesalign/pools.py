"""Posterior pools: exact samples of the posterior p, by rejection from the prior's draws.

For a target P = a·F with log F(x) ≤ M, a prior sample accepted with probability
exp(log F(x) − M) is an exact sample of p = P/Z. From one pool of N prior samples:
  - Z = E_a[F] ≈ mean F(x_i), with its standard error;
  - KL(p‖π) = E_p[log P − log π] − log Z from the accepted samples, which needs only log π on
    them (no importance weights on π, so no effective-sample-size collapse as π moves);
  - TV(p, π) = E_p[(1 − π/p)₊], KL(p‖a), moments E_p[φ];
  - the KL frontier of the evidence (frontier.py) from every prior sample.

M is known for constraints (0) and boolean features or tilts; otherwise it is the largest log F
observed in the pool (per context), and the accepted samples are then approximately exact:
`PoolSummary.bound_observed` says so and ``at_bound`` gives the share of the pool at M.
Conditional targets get one pool per context; estimates are averaged over contexts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bayesalign.contexts import group_by_context
from bayesalign.estimators import Estimate
from bayesalign.frontier import Frontier
from bayesalign.models import LanguageModel
from bayesalign.prior_draws import PoolError, PriorDraws
from bayesalign.progress import Status, quiet
from bayesalign.proposals import Scored
from bayesalign.samples import Samples
from bayesalign.targets import Constraint, Evidence, Feature, Target, Tilt

__all__ = ["MIN_ACCEPTED", "PoolError", "PosteriorPool", "known_bound", "pool_metrics"]

MIN_ACCEPTED = 30  # fewer accepted samples than this: the pool's metrics are marked unreliable


def known_bound(target: Target) -> float | None:
    """An upper bound on log P − log a = Σ log-factors known without sampling, else None.

    Constraints contribute 0; a boolean feature λ·φ contributes max(λ, 0); a boolean tilt b/β
    contributes 1/β. A real-valued feature or tilt has no bound the library knows of.
    """
    total = 0.0
    for term in target.terms:
        if isinstance(term, Constraint):
            continue
        if not term.scorer.boolean:
            return None
        if isinstance(term, Feature):
            total += max(term.lam, 0.0)
        elif isinstance(term, Tilt):
            total += 1.0 / term.beta
    return total


def _delta_se(rows: torch.Tensor, grad: list[float]) -> float:
    """Delta-method standard error of g(column means of ``rows`` [k, n]) with gradient ``grad``."""
    n = rows.shape[1]
    if n < 2:
        return float("nan")
    g = torch.tensor(grad, dtype=torch.float64)
    return math.sqrt(max((g @ torch.cov(rows) @ g).item(), 0.0) / n)


@dataclass
class _Group:
    """One context's share of the pool (the whole pool for an unconditional target)."""

    rows: torch.Tensor  # indices into the pool
    bound: float  # M for this context
    accepted: torch.Tensor  # indices into the pool, accepted by the rejection test


class PosteriorPool:
    """A target's posterior samples, accepted by rejection among a prior's draws (see module)."""

    def __init__(self, target: Target, draws: PriorDraws, evidence: Evidence | None = None) -> None:
        """``evidence``: the scorers' verdict on ``draws`` when already known (see :meth:`select`)."""
        self.target, self.draws = target, draws
        self.evidence: Evidence = evidence if evidence is not None else target.evidence(draws.samples)
        self.log_factor = self.evidence.log_factor  # log P − log a, float64
        self.log_a = draws.log_a
        if torch.isnan(self.log_factor).any() or (self.log_factor == float("inf")).any():
            raise PoolError(f"target {target.describe()}: log P − log a is NaN or +inf on the pool")
        bound = known_bound(target)
        self.bound_observed = bound is None
        contexts = draws.samples.contexts
        groups = group_by_context(contexts) if contexts is not None else {None: torch.arange(len(draws))}
        self.groups: dict[str | None, _Group] = {}
        self.unsupported = 0  # contexts none of whose prior samples has P > 0
        for context, rows in groups.items():
            lf = self.log_factor[rows]
            m = bound if bound is not None else lf.max().item()
            if lf.max().item() == float("-inf"):
                self.unsupported += 1
                continue
            accept = torch.log(draws.uniform[rows]) < lf - m
            self.groups[context] = _Group(rows, m, rows[accept])
        if not self.groups:
            where = "any context" if contexts is not None else f"the {len(draws)} prior samples"
            raise PoolError(
                f"no sample of {where} has P(x) > 0 under {target.describe()}: the pool's Z is 0; "
                "draw a larger pool (eval.pool.samples) or loosen the evidence"
            )

    # -- what the pool holds ------------------------------------------------------------------
    @property
    def accepted(self) -> torch.Tensor:
        """Pool indices of every exact p-sample, context by context."""
        return torch.cat([g.accepted for g in self.groups.values()])

    @property
    def n_accepted(self) -> int:
        return sum(len(g.accepted) for g in self.groups.values())

    @property
    def reliable(self) -> bool:
        return self.n_accepted >= MIN_ACCEPTED

    @property
    def at_bound(self) -> float:
        """Share of the pool whose log F reaches its bound M (accepted with probability 1)."""
        hits = sum(int((self.log_factor[g.rows] >= g.bound - 1e-12).sum()) for g in self.groups.values())
        return hits / len(self.draws)

    def select(self, rows: torch.Tensor) -> PosteriorPool:
        """The pool of the prior samples at ``rows`` (a validation or training split), without
        scoring them again."""
        return PosteriorPool(self.target, self.draws.select(rows), self.evidence.select(rows))

    def scored(self, rows: torch.Tensor, log_q: torch.Tensor | None = None) -> Scored:
        """The prior samples at ``rows`` as a scored draw, as if drawn from q (default: q = a,
        which they were; pass log q = log P − log Ẑ for accepted samples treated as draws of p)."""
        samples = self.draws.samples.select(rows)
        log_a = self.log_a[rows]
        log_target = log_a + self.log_factor[rows]
        log_q = log_a if log_q is None else log_q
        return Scored(samples, log_q, samples.token_log_q, self.evidence.select(rows), log_target)

    def p_samples(self) -> Samples:
        """The accepted samples (a `Samples` batch), in the order of :attr:`accepted`."""
        return self.draws.samples.select(self.accepted)

    # -- estimates ----------------------------------------------------------------------------
    def _per_group(self, fn: Callable[[_Group, int], Estimate]) -> Estimate:
        """Mean over contexts of a per-context estimate ``fn(group, its index)``, stderrs
        combined as for independent estimates."""
        parts = [fn(g, i) for i, g in enumerate(self.groups.values())]
        k = len(parts)
        return Estimate(sum(e.value for e in parts) / k, math.sqrt(sum(e.stderr**2 for e in parts)) / k)

    def _group_log_z(self, g: _Group) -> Estimate:
        w = torch.exp(self.log_factor[g.rows] - g.bound)
        mean = w.mean().item()
        se = w.std().item() / (mean * math.sqrt(len(w))) if len(w) > 1 else float("nan")
        return Estimate(g.bound + math.log(mean), se)

    def log_z(self) -> Estimate:
        """log Z (mean over contexts of log Z_c), from every prior sample of the pool."""
        return self._per_group(lambda g, _: self._group_log_z(g))

    def _kl(self, g: _Group, gap: torch.Tensor) -> Estimate:
        """KL(p‖m) = E_p[gap] − log Z with gap = log F + log a − log m on the accepted rows.

        Written as mean(acc·gap)/mean(acc) − M − log mean(e^{log F − M}) over the whole group, so
        the delta method accounts for the joint noise of the p-sample mean and of log Ẑ."""
        acc = torch.zeros(len(self.draws), dtype=torch.float64)
        acc[g.accepted] = 1.0
        full_gap = torch.zeros(len(self.draws), dtype=torch.float64)
        full_gap[g.accepted] = gap
        u, v = acc[g.rows], full_gap[g.rows]
        w = torch.exp(self.log_factor[g.rows] - g.bound)
        mu, mv, mw = u.mean().item(), v.mean().item(), w.mean().item()
        if mu == 0:
            return Estimate(float("nan"), float("nan"))
        value = mv / mu - g.bound - math.log(mw)
        return Estimate(value, _delta_se(torch.stack([u, v, w]), [-mv / mu**2, 1 / mu, -1 / mw]))

    def kl_p_model(self, log_model: torch.Tensor) -> Estimate:
        """KL(p‖m) from ``log_model`` = log m on :meth:`p_samples` (in that order)."""
        gaps = self._split(self.log_factor[self.accepted] + self.log_a[self.accepted] - log_model.double())
        return self._per_group(lambda g, i: self._kl(g, gaps[i]))

    def kl_p_a(self) -> Estimate:
        """KL(p‖a) = E_p[log F] − log Z: what the target itself costs (−log Z for constraints)."""
        return self._per_group(lambda g, _: self._kl(g, self.log_factor[g.accepted]))

    def tv_p_model(self, log_model: torch.Tensor) -> Estimate:
        """TV(p, m) = E_p[(1 − m/p)₊] from log m on the p-samples; the stderr adds log Ẑ's
        (by the delta method, its covariance with the p-sample mean neglected)."""
        log_p_unnorm = self._split(self.log_factor[self.accepted] + self.log_a[self.accepted])
        log_m = self._split(log_model.double())

        def one(g: _Group, i: int) -> Estimate:
            log_z = self._group_log_z(g)
            ratio = torch.exp(log_m[i] - log_p_unnorm[i] + log_z.value)
            t = (1 - ratio).clamp(min=0)
            slope = -(ratio * (ratio < 1)).mean().item()
            var = t.var().item() / len(t) if len(t) > 1 else float("nan")
            return Estimate(t.mean().item(), math.sqrt(var + (slope * log_z.stderr) ** 2))

        return self._per_group(one)

    def kl_gain(self, log_model: torch.Tensor) -> Estimate:
        """KL(p‖a) − KL(p‖m) = E_p[log m − log a] on the p-samples: how much closer to p the
        model is than the prior. Paired (same samples, Z cancels), so its standard error is far
        smaller than that of the difference of two KL estimates."""
        gains = self._split(log_model.double() - self.log_a[self.accepted])

        def one(g: _Group, i: int) -> Estimate:
            d = gains[i]
            return Estimate(
                d.mean().item(), d.std().item() / math.sqrt(len(d)) if len(d) > 1 else float("nan")
            )

        return self._per_group(one)

    def moment(self, name: str) -> Estimate:
        """E_p[φ] of scorer ``name`` from the p-samples."""

        def one(g: _Group, _: int) -> Estimate:
            values = self.evidence.scores[name][g.accepted]
            se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
            return Estimate(values.mean().item(), se)

        return self._per_group(one)

    def _split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Values given on :attr:`accepted` (context by context), one tensor per group."""
        return list(values.split([len(g.accepted) for g in self.groups.values()]))

    # -- the frontier -------------------------------------------------------------------------
    def statistic(self) -> tuple[str, torch.Tensor, bool] | None:
        """The evidence statistic the frontier is drawn for: (metric suffix, values on the
        pool, boolean). Constraints only: satisfaction; one tilt or one feature: its score;
        otherwise log P − log a. None for conditional targets (one frontier per context)."""
        if self.draws.samples.contexts is not None:
            return None
        terms = self.target.terms
        if all(isinstance(t, Constraint) for t in terms):
            return "satisfaction", self.evidence.satisfied.double(), True
        if len(terms) == 1:
            scorer = terms[0].scorer
            return f"score_{scorer.name}", self.evidence.scores[scorer.name], scorer.boolean
        return "log_factor", self.log_factor, False

    def frontier(self) -> Frontier | None:
        found = self.statistic()
        return None if found is None else Frontier(found[1], boolean=found[2])


def _counted_log_prob(
    model: LanguageModel, samples: Samples, batch_size: int, status: Status
) -> torch.Tensor:
    """log model(x) [B] in pieces of at most ``batch_size`` and 32, each counted on the status
    line (scoring a tilted π, which runs its scorer at every position, takes minutes)."""
    parts, size = [], min(batch_size, 32)
    for start in range(0, len(samples), size):
        status("scoring π on the posterior pool", start, len(samples))
        piece = samples.select(range(start, min(start + size, len(samples))))
        parts.append(model.log_prob_frozen(piece).double())
    return torch.cat(parts)


def pool_metrics(
    pool: PosteriorPool,
    policy: LanguageModel,
    proposal: LanguageModel,
    batch_size: int,
    *,
    policy_is_prior: bool = False,
    status: Status = quiet,
) -> dict:
    """The pool's estimates for π (and q where it is neither π nor the prior), as metrics.
    ``policy_is_prior``: π is known to equal a (as before its first update), so log π on the
    p-samples is the pool's own log a, and no forward pass is spent on it."""
    metrics: dict[str, float] = {}

    def put(name: str, e: Estimate) -> None:
        metrics[name], metrics[f"{name}_stderr"] = e.value, e.stderr

    p_samples = pool.p_samples()
    log_pi = (
        pool.log_a[pool.accepted].double()
        if policy_is_prior
        else _counted_log_prob(policy, p_samples, batch_size, status)
    )
    log_z = pool.log_z()
    put("pool_log_z", log_z)
    metrics["pool_z"] = math.exp(log_z.value)
    put("pool_kl_p_a", pool.kl_p_a())
    put("pool_kl_p_pi", pool.kl_p_model(log_pi))
    put("pool_kl_gain_pi", pool.kl_gain(log_pi))
    put("pool_tv_p_pi", pool.tv_p_model(log_pi))
    if proposal is not policy:
        base = pool.target.base
        log_q = (
            pool.log_a[pool.accepted]
            if proposal is base
            else proposal.log_prob_frozen(p_samples, batch_size=batch_size).double()
        )
        put("pool_kl_p_q", pool.kl_p_model(log_q))
    for feature in pool.target.features:
        put(f"pool_moment_{feature.scorer.name}_p", pool.moment(feature.scorer.name))
    metrics |= {
        "pool_size": float(len(pool.draws)),
        "pool_accepted": float(pool.n_accepted),
        "pool_reliable": float(pool.reliable),
        "pool_bound_observed": float(pool.bound_observed),
        "pool_at_bound": pool.at_bound,
    }
    if pool.unsupported:
        metrics["pool_contexts_without_support"] = float(pool.unsupported)
    return metrics
