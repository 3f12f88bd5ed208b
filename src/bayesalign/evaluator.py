"""Evaluation of a policy π (and of the proposal q) against a target, shared by training and
`bayesalign eval`.

Three kinds of numbers, named apart in every record:
- importance-sampling estimates from fresh samples of q (``kl_p_pi``, ``log_z``, ...): cheap,
  but only as good as their effective sample size ``ess``; below `LOW_ESS` they are flagged
  (``ess_low``) rather than silently printed;
- posterior-pool estimates (``pool_*``, pools.py): exact p-samples drawn once from the prior,
  so KL(p‖π) needs only log π on them; and the KL frontier point of π (``frontier_kl``,
  ``frontier_excess``);
- exact values (``exact_*``) on toy spaces small enough to enumerate.
Metrics of π come from π's own samples (satisfaction, KL(π‖a), diversity, extras).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from bayesalign import estimators as est
from bayesalign.builtin_models import cache_root
from bayesalign.contexts import evaluation_rows, group_by_context
from bayesalign.estimators import ZeroPartitionError
from bayesalign.exact import ExactTarget, SequenceSpace, exact_metrics
from bayesalign.extra_metrics import Metric
from bayesalign.frontier import Frontier
from bayesalign.metrics import distinct_n, ngram_entropy
from bayesalign.models import LanguageModel
from bayesalign.pools import PosteriorPool, pool_metrics
from bayesalign.prior_draws import PoolCache, draw_prior
from bayesalign.progress import Status, quiet
from bayesalign.proposals import Scored, propose
from bayesalign.samples import SamplingParams
from bayesalign.targets import Target

LOW_ESS = 30  # importance-sampling estimates resting on fewer effective samples are flagged

Draw = Callable[[LanguageModel, int, torch.Generator], Scored]


def unsatisfied_message(target: Target, draw: Scored) -> str:
    """Why Z cannot be estimated from ``draw``: no sample satisfies every constraint."""
    rates = ", ".join(
        f"{c.scorer.name!r} held for {int(draw.evidence.scores[c.scorer.name].sum())}"
        for c in target.constraints
    )
    return (
        f"no sample satisfies the target: of {len(draw.samples)} samples from the proposal, {rates}, "
        "and none satisfied all constraints, so the estimate of Z is 0 and the importance weights "
        "are undefined. Loosen the constraint, change the prompt, or draw more samples per step "
        "(training.batch_size)."
    )


class Evaluator:
    """Measures π and q against ``target`` on ``samples`` fresh draws of each per call::

        Evaluator(target, pool_samples=2048).evaluate(policy)  # q = a: the prior

    Optional parts: ``exact`` (enumerated spaces, one per context), ``pool_*`` settings (a
    posterior pool drawn at the first call), ``metrics``: task metrics of π's samples beside the
    target's (`extra_metrics`: perplexity, misalignment, references). ``micro``: sequences per
    forward pass when scoring.

    Samples are drawn with ``sampling`` over the evaluation contexts (conditional targets) from
    the evaluation stream ``seed``; a trainer `connect`s its own (sharded) draw and generator,
    which its checkpoints save.
    """

    def __init__(
        self,
        target: Target,
        *,
        samples: int = 256,
        sampling: SamplingParams | None = None,
        micro: int = 64,
        seed: int = 1,
        sample_batch: int | None = None,
        eval_contexts: list[str] | None = None,
        exact: bool = False,
        exact_limit: int = 200_000,
        pool_samples: int | None = None,
        pool_seed: int = 0,
        pool_cache: bool = True,
        pool_holdout: float = 0.0,
        pool_workers: int = 0,
        metrics: Sequence[Metric] = (),
        status: Status = quiet,
    ) -> None:
        sampling = sampling if sampling is not None else SamplingParams()
        self.target, self.generator = target, torch.Generator().manual_seed(seed)
        self.n, self.sampling, self.micro, self.sample_batch = samples, sampling, micro, sample_batch
        self.eval_contexts = eval_contexts
        self.status = status
        self.exact: list[ExactTarget] | None = None  # one per evaluation context (or the prompt)
        if exact:
            self.exact = [
                ExactTarget.build(
                    target,
                    SequenceSpace(target.base, sampling.max_new_tokens, context=c, limit=exact_limit),
                )
                for c in (eval_contexts or [None])
            ]
        self.pool_samples, self.pool_seed, self.pool_cache = pool_samples, pool_seed, pool_cache
        self.pool_holdout, self.pool_workers = pool_holdout, pool_workers
        self.pool: PosteriorPool | None = None  # the validation split (the whole pool without holdout)
        self.full_pool: PosteriorPool | None = None  # every prior sample: log Z and the frontier
        self.train_pool: PosteriorPool | None = None  # the rest, for training.replay_pool
        self.pool_seconds = float("nan")  # spent drawing the pool's prior samples (0: all cached)
        self.metrics = list(metrics)

    # -- the posterior pool ---------------------------------------------------------------------
    def _draw(self, model: LanguageModel, n: int, generator: torch.Generator) -> Scored:
        """n evaluation samples of ``model``, scored (spread over the evaluation contexts)."""
        contexts = None if self.eval_contexts is None else evaluation_rows(self.eval_contexts, n)
        return propose(
            self.target,
            model,
            n if contexts is None else len(contexts),
            self.sampling,
            generator=generator,
            batch_size=self.sample_batch,
            contexts=contexts,
        )

    def connect(self, draw: Draw, generator: torch.Generator, status: Status) -> None:
        """Draw through a trainer (sharded over its processes) from its evaluation stream, and
        report phases to its status line."""
        self._draw, self.generator, self.status = draw, generator, status

    def ensure_pool(self) -> PosteriorPool | None:
        """The posterior pool the metrics come from (its validation split with a holdout), drawn
        or read from the cache at the first call. The split is a seeded permutation of the
        prior samples, so every run and evaluation on the same pool splits it alike."""
        if self.pool is None and self.pool_samples:
            cache = PoolCache(cache_root() / "pools") if self.pool_cache else None
            draws, self.pool_seconds = draw_prior(
                self.target.base,
                self.pool_samples,
                self.sampling,
                seed=self.pool_seed,
                contexts=self.eval_contexts,
                batch_size=self.sample_batch,
                cache=cache,
                status=self.status,
                workers=self.pool_workers,
            )
            self.full_pool = self.pool = PosteriorPool(self.target, draws)
            if self.pool_holdout:
                order = torch.randperm(len(draws), generator=torch.Generator().manual_seed(self.pool_seed))
                n_val = round(len(draws) * self.pool_holdout)
                self.pool = self.full_pool.select(order[:n_val].sort().values)
                self.train_pool = self.full_pool.select(order[n_val:].sort().values)
        return self.pool

    def frontier_curve(self) -> dict | None:
        """The frontier of the target's evidence statistic for plots: {"statistic": metric
        name of π's mean, "points": [(mean, least KL(π‖a)), ...]}; None without a pool."""
        pool = self.ensure_pool()
        found = None if pool is None else pool.statistic()
        if found is None:
            return None
        return {"statistic": f"{found[0]}_pi", "points": self.full_pool.frontier().curve()}

    # -- one evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, policy: LanguageModel, proposal: LanguageModel | None = None) -> dict[str, float]:
        """Every metric of π and of the proposal q (default: the prior a)."""
        return self.measure(policy, proposal)[0]

    def measure(
        self, policy: LanguageModel, proposal: LanguageModel | None = None
    ) -> tuple[dict[str, float], Scored]:
        """`evaluate`, and π's evaluation draw (for saving its texts)."""
        proposal = proposal if proposal is not None else self.target.base
        self.status("evaluating")
        q_draw = self._pool_draw() if proposal is self.target.base else None
        q_draw = q_draw if q_draw is not None else self._draw(proposal, self.n, self.generator)
        if (q_draw.log_target == float("-inf")).all():
            raise ZeroPartitionError(unsatisfied_message(self.target, q_draw))
        log_pi_on_q = self.policy_log_prob(policy, proposal, q_draw)
        metrics: dict[str, float] = {}

        def put(name: str, e: est.Estimate) -> None:
            metrics[name], metrics[f"{name}_stderr"] = e.value, e.stderr

        # Before the first update π is the prior (q = a here): then log π = log a on q's samples,
        # and a second draw from π would only duplicate q's. Checked on the samples, not assumed,
        # so a policy that starts elsewhere (e.g. another checkpoint) still gets its own draw.
        base = self.target.base
        policy_is_q = proposal is policy or (
            proposal is base and torch.allclose(log_pi_on_q, q_draw.log_a, atol=1e-3, rtol=0)
        )
        pi_draw = q_draw if policy_is_q else self._draw(policy, self.n, self.generator)
        if q_draw.samples.contexts is None:
            estimates = self._target_estimates(q_draw, log_pi_on_q, pi_draw)
            metrics["ess"] = est.effective_sample_size(q_draw.log_target, q_draw.log_q)
        else:  # one target per context: estimate each against its own Z_c, then average over c
            estimates = self._per_context_estimates(q_draw, log_pi_on_q, pi_draw, metrics)
        metrics["ess_low"] = float(metrics["ess"] < LOW_ESS)
        for name, estimate in estimates.items():
            put(name, estimate)
        metrics["minus_log_z"] = -metrics["log_z"]
        metrics["z"] = math.exp(metrics["log_z"])
        put("entropy_pi", est.mean(-pi_draw.log_q))  # H(π) = E_π[−log π]: collapse shows here
        for n_gram in (1, 2):
            metrics[f"distinct_{n_gram}_pi"] = distinct_n(pi_draw.samples.texts, n_gram)
        metrics["ngram_entropy_2_pi"] = ngram_entropy(pi_draw.samples.texts, 2)
        metrics["length_pi"] = pi_draw.samples.lengths.double().mean().item()  # tokens, EOS included
        for who, draw in (("pi", pi_draw), ("q", q_draw)):
            put(f"kl_{who}_a", est.kl_on_samples(draw.log_q, draw.log_a))
            if draw.evidence.satisfied is not None:
                put(f"satisfaction_{who}", est.mean(draw.evidence.satisfied))
            for name, scores in draw.evidence.scores.items():
                metrics[f"score_{name}_{who}"] = scores.mean().item()
        for feature in self.target.features:  # distributional constraints: E[φ] vs wanted moment
            name = feature.scorer.name
            put(f"moment_{name}_pi", est.mean(pi_draw.evidence.scores[name]))
            put(f"moment_{name}_q", est.mean(q_draw.evidence.scores[name]))
        metrics |= self._extras(policy, pi_draw)
        if (pool := self.ensure_pool()) is not None:
            metrics |= pool_metrics(
                pool,
                policy,
                proposal,
                self.micro,
                policy_is_prior=policy_is_q and proposal is base,
                status=self.status,
            )
            metrics["pool_holdout"] = self.pool_holdout  # > 0: pool_* come from the validation split
            metrics["pool_draw_seconds"] = self.pool_seconds  # 0 when every draw came from the cache
            metrics |= self._frontier_point(pool, pi_draw, metrics)
        if self.exact is not None:
            per_context = [exact_metrics(e, policy, proposal) for e in self.exact]
            metrics |= {k: sum(m[k] for m in per_context) / len(per_context) for k in per_context[0]}
            if len(per_context) > 1:  # the context π fits worst, next to the mean over contexts
                metrics["exact_kl_p_pi_max"] = max(m["exact_kl_p_pi"] for m in per_context)
        return metrics, pi_draw

    def _pool_draw(self) -> Scored | None:
        """With q = a and an unconditional pool, q's evaluation samples are the first ``samples``
        prior samples of the pool (validation split): already drawn and scored, so an
        evaluation draws only from π. None when there is no such pool."""
        pool = self.ensure_pool()
        if pool is None or pool.draws.samples.contexts is not None or len(pool.draws) < self.n:
            return None
        return pool.scored(torch.arange(self.n))

    def policy_log_prob(self, policy: LanguageModel, proposal: LanguageModel, draw: Scored) -> torch.Tensor:
        """log π on samples drawn from the proposal (free when the proposal is π)."""
        if policy is proposal:
            return draw.log_q
        return policy.log_prob_frozen(draw.samples, batch_size=self.micro).double()

    def _frontier_point(self, pool: PosteriorPool, pi_draw: Scored, metrics: dict) -> dict[str, float]:
        """π's place against the KL frontier: the least KL(π‖a) for π's mean evidence, and the
        ratio of π's KL(π‖a) to it."""
        found = pool.statistic()
        if found is None:
            return {}
        suffix, _, _ = found
        if suffix == "log_factor":
            mean = pi_draw.evidence.log_factor.mean().item()
        else:
            mean = metrics[f"{suffix}_pi"]
        frontier: Frontier = self.full_pool.frontier()
        point = {
            "frontier_statistic_pi": mean,
            "frontier_kl": frontier.kl(mean),
            "frontier_excess": frontier.excess(mean, metrics["kl_pi_a"]),
        }
        return point | self._kl_split(metrics)

    def _kl_split(self, metrics: dict) -> dict[str, float]:
        """KL(p‖π) split at π's satisfaction s = E_π[b]: p lives where the constraints hold (B),
        so KL(p‖π) = −log s + KL(p‖π(·|B)). −log s (``frontier_kl_p_pi``) is the least KL(p‖π)
        of any model with satisfaction s, reached by a·e^{λb} (the frontier's tilts); the rest
        (``pool_kl_p_pi_within``) is how differently from p π spreads its mass inside B. Which
        of the two is large says whether π needs more satisfaction or less distortion. Both
        combine π's samples (s) with the pool (KL(p‖π)), so their errors add."""
        if not self.target.constraints or "satisfaction_pi" not in metrics:
            return {}
        share, share_se = metrics["satisfaction_pi"], metrics["satisfaction_pi_stderr"]
        if share <= 0:
            return {"frontier_kl_p_pi": math.inf, "pool_kl_p_pi_within": math.nan}
        floor_se = share_se / share  # delta method for −log s
        kl, kl_se = metrics["pool_kl_p_pi"], metrics["pool_kl_p_pi_stderr"]
        return {
            "frontier_kl_p_pi": -math.log(share),
            "frontier_kl_p_pi_stderr": floor_se,
            "pool_kl_p_pi_within": kl + math.log(share),
            "pool_kl_p_pi_within_stderr": math.hypot(kl_se, floor_se),
        }

    def _extras(self, policy: LanguageModel, pi_draw: Scored) -> dict[str, float]:
        """Task metrics beside the target's (`extra_metrics`)."""
        found: dict[str, float] = {}
        for metric in self.metrics:
            found |= metric(policy, pi_draw, self.micro)
        return found

    def _target_estimates(
        self, q_draw: Scored, log_pi_on_q: torch.Tensor, pi_draw: Scored
    ) -> dict[str, est.Estimate]:
        """IS estimates against p from one target's samples of q (and of π, for KL(π‖p))."""
        t, lq = q_draw.log_target, q_draw.log_q
        log_z = est.log_partition(t, lq)
        out = {
            "log_z": log_z,
            "kl_p_pi": est.kl_target_model(t, lq, log_pi_on_q),
            "kl_p_q": est.kl_target_model(t, lq, lq),
            # KL(p‖a): the divergence the target itself costs (−log Z for pointwise targets)
            "kl_p_a": est.kl_target_model(t, lq, q_draw.log_a),
            "tv_p_pi": est.tv_target_model(t, lq, log_pi_on_q),
            "tv_p_q": est.tv_target_model(t, lq, lq),
        }
        if self.target.constraints == ():  # else KL(π‖p) = ∞: π gives mass to x with P(x) = 0
            out["kl_pi_p"] = est.kl_model_target(pi_draw.log_q, pi_draw.log_target, log_z)
        for feature in self.target.features:
            scores = q_draw.evidence.scores[feature.scorer.name]
            out[f"moment_{feature.scorer.name}_p"] = est.target_expectation(t, lq, scores)
        return out

    def _per_context_estimates(
        self, q_draw: Scored, log_pi_on_q: torch.Tensor, pi_draw: Scored, metrics: dict[str, float]
    ) -> dict[str, est.Estimate]:
        """Mean over evaluation contexts of each context's estimates (standard errors combined
        as for a mean of independent estimates) and of its ESS. Contexts none of whose samples
        satisfies the target are left out and counted in
        ``metrics['eval_contexts_without_support']``."""
        pi_rows = group_by_context(pi_draw.samples.contexts)
        per_context, ess, unsupported = [], [], 0
        for context, rows in group_by_context(q_draw.samples.contexts).items():
            part = q_draw.select(rows)
            try:
                per_context.append(
                    self._target_estimates(part, log_pi_on_q[rows], pi_draw.select(pi_rows[context]))
                )
            except ZeroPartitionError:
                unsupported += 1
                continue
            ess.append(est.effective_sample_size(part.log_target, part.log_q))
        metrics["eval_contexts_without_support"] = float(unsupported)
        metrics["ess"] = sum(ess) / len(ess)  # per context, averaged
        k = len(per_context)
        return {
            name: est.Estimate(
                sum(e[name].value for e in per_context) / k,
                math.sqrt(sum(e[name].stderr ** 2 for e in per_context)) / k,
            )
            for name in per_context[0]
        }
