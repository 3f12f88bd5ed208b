"""`bayesalign sample` as one Python function: :class:`SampleArgs` holds the command's options
(the config's ``sample`` section) and checks them together, in one place; :func:`sample` draws
from a target with them and returns what the command writes and prints.

In code::

    run = sample(target, prior, 100, SampleArgs(method="qrs", acceptance=0.3))
    run.result.texts, run.rule.describe(), run.result.stats.acceptance_rate
    run.table.rows        # QRS: acceptance, TV(p, p_β), KL(p‖p_β) per β, the run's β marked
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bayesalign.models import LanguageModel
from bayesalign.proposals import ANCESTRAL, Scored, propose
from bayesalign.samples import SamplingParams
from bayesalign.sampling.diagnostics import QRSTable, beta_for_acceptance, qrs_table
from bayesalign.sampling.loop import Sampler, SamplerResult, SamplerStats
from bayesalign.sampling.rules import ImportanceResampling, QuasiRejection, Rejection, Rule, SamplingError
from bayesalign.targets import Constraint, Feature, Target, Tilt

METHODS = {"qrs": ("beta", "acceptance"), "rejection": ("bound",), "importance": ("pool",)}


@dataclass(frozen=True)
class SampleArgs:
    """How to sample: ``method`` rejection | qrs | importance and its parameter (qrs: ``beta``,
    or ``acceptance``, a rate β is chosen for on a pilot batch; rejection: ``bound`` M ≥ P/q,
    default 1; importance: ``pool``, default 10·n), the work per round and its cap, the β rows of
    the QRS diagnostic table (default: quantiles of P/q) and the seed.

    A parameter of another method, or qrs with neither β nor a rate, is a :class:`SamplingError`
    at construction, before any model is loaded.
    """

    method: str = "qrs"
    beta: float | None = None
    acceptance: float | None = None
    bound: float | None = None
    pool: int | None = None
    proposals_per_round: int = 256
    max_proposals: int = 100_000
    diagnostic_betas: Sequence[float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SamplingError(f"unknown sampling method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.beta is not None and self.acceptance is not None:
            raise SamplingError("give beta or acceptance (which chooses β), not both")
        given = {k for k in ("beta", "acceptance", "bound", "pool") if getattr(self, k) is not None}
        allowed = set(METHODS[self.method])
        if given - allowed:
            raise SamplingError(
                f"sample.{sorted(given - allowed)[0]} does not apply to method {self.method!r}; "
                f"it takes {', '.join(sorted(allowed))}"
            )
        if self.method == "qrs" and self.beta is None and self.acceptance is None:
            raise SamplingError(
                "quasi-rejection sampling needs --beta B (accept x ~ q with probability "
                "min(1, P/(β q))) or --acceptance R (choose β for that acceptance rate)"
            )

    def check_bound(
        self,
        *,
        trained_proposal: bool,
        ancestral: bool,
        reward: bool = False,
        distributional: bool = False,
        pointwise: bool = True,
    ) -> None:
        """Rejection without a bound assumes M = 1, true only for a pointwise target sampled
        ancestrally from the prior itself; refuse otherwise, saying why. Called with what the
        config says before models load (the CLI), and with the objects by :func:`sample`."""
        if self.method != "rejection" or self.bound is not None:
            return
        why = []
        if trained_proposal:
            why.append("the proposal is a trained policy")
        if not ancestral:
            why.append("sampling is not ancestral (temperature, top_k or top_p), so q ≠ a")
        if reward:
            why.append("the target has a reward tilt")
        if distributional:
            why.append("the target has distributional constraints")
        if not pointwise and not (reward or distributional):
            why.append("the target is not pointwise")
        if why:
            raise SamplingError(
                "rejection sampling needs a bound M ≥ P/q (--bound M): it is 1 only for a pointwise "
                f"target sampled from the prior, but {' and '.join(why)}. Or use --method qrs"
            )


@dataclass
class SampleRun:
    """What :func:`sample` did: the samples and counts (``result``), the proposals that chose β
    (``pilot``, with ``acceptance``; they are not among the candidates) and, for qrs, the
    diagnostic table on the pilot and every proposal drawn."""

    result: SamplerResult
    pilot: Scored | None
    table: QRSTable | None

    @property
    def rule(self) -> Rule:
        return self.result.rule


def sample(
    target: Target,
    proposal: LanguageModel,
    n: int,
    args: SampleArgs,
    *,
    params: SamplingParams = ANCESTRAL,
    batch_size: int | None = None,
    on_round: Callable[[SamplerStats], None] | None = None,
    on_beta: Callable[[float], None] | None = None,
) -> SampleRun:
    """n samples of ``target`` from ``proposal`` (the prior, or a trained policy), as
    `bayesalign sample` draws them: the rule that ``args`` names, seeded with ``args.seed``.

    ``on_round`` sees the counts after each round of proposals; ``on_beta`` the β a pilot batch
    chose (``acceptance``), before sampling starts.
    """
    if n < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    args.check_bound(
        trained_proposal=proposal is not target.base,
        ancestral=params.is_ancestral,
        reward=any(isinstance(t, Tilt) for t in target.terms),
        distributional=any(isinstance(t, Feature) for t in target.terms),
        pointwise=all(isinstance(t, Constraint) for t in target.terms),
    )
    generator = torch.Generator().manual_seed(args.seed)
    pilot = None
    if args.method == "rejection":
        rule: Rule = Rejection(args.bound or 1.0)
    elif args.method == "importance":
        rule = ImportanceResampling(args.pool)
    elif args.beta is not None:
        rule = QuasiRejection(args.beta)
    else:
        pilot = propose(
            target, proposal, args.proposals_per_round, params, generator=generator, batch_size=batch_size
        )
        rule = QuasiRejection(beta_for_acceptance(pilot.log_target, pilot.log_q, args.acceptance))
        if on_beta is not None:
            on_beta(rule.beta)
    sampler = Sampler(
        target,
        proposal,
        rule,
        params,
        proposals_per_round=args.proposals_per_round,
        max_proposals=args.max_proposals,
        batch_size=batch_size,
    )
    result = sampler.sample(n, generator=generator, on_round=on_round)
    table = None
    if args.method == "qrs":
        seen = [] if pilot is None else [pilot]
        log_target = torch.cat([*(p.log_target for p in seen), result.proposal_log_target])
        log_q = torch.cat([*(p.log_q for p in seen), result.proposal_log_q])
        table = qrs_table(log_target, log_q, rule.beta, args.diagnostic_betas)
    return SampleRun(result, pilot, table)
