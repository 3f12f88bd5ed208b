"""A batch drawn from a proposal and scored under a target: what training, evaluation and the
samplers all start from, so that log q comes from the sampling pass and log a is computed at most
once, the same way everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from bayesalign.models import LanguageModel
from bayesalign.samples import Samples, SamplingParams, pad
from bayesalign.targets import Evidence, Target

ANCESTRAL = SamplingParams()

#: How much of the prior's forward pass a draw runs (`propose`): ``"all"`` gives per-token log a
#: of every sample; ``"support"`` gives log P only, running the prior only on the samples whose
#: evidence allows P(x) > 0 (log P = −∞ elsewhere, whatever log a is); ``"none"`` skips it.
PriorPass = Literal["all", "support", "none"]


class NonFiniteLogProbError(FloatingPointError):
    """A model returned NaN log-probabilities, so importance weights P/q are undefined."""


@dataclass
class Scored:
    """Samples drawn from a proposal q with log q, log a, the scorers' evidence and log P.

    ``token_log_a`` and ``log_target`` are None when the draw skipped the prior's pass
    (``propose(..., prior="none")``); ``token_log_a`` alone is None when it ran only where
    P(x) > 0 (``prior="support"``). Reading what a draw lacks is an error.
    """

    samples: Samples
    log_q: torch.Tensor  # [B] float64, under the sampling distribution
    token_log_a: torch.Tensor | None  # [B, T] float, per generated token under the prior, 0 at padding
    evidence: Evidence
    log_target: torch.Tensor | None  # [B] float64, log P(x)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def scored_prior(self) -> bool:
        return self.log_target is not None

    def _require_prior(self) -> None:
        if not self.scored_prior:
            raise ValueError("this draw skipped the prior's pass (prior=False): it has no log a or log P")

    @property
    def log_a(self) -> torch.Tensor:
        """log a(x), [B] float64."""
        self._require_prior()
        if self.token_log_a is None:
            raise ValueError("this draw ran the prior only where P(x) > 0 (prior='support'): it has no log a")
        return self.token_log_a.sum(-1).double()

    @property
    def log_weight(self) -> torch.Tensor:
        """log w = log P − log q."""
        self._require_prior()
        return self.log_target - self.log_q

    def text_rows(self, n: int, log_q_name: str) -> list[dict]:
        """The first ``n`` samples as JSON-ready rows: the text, log q (named ``log_q_name``: the
        run folder's samples/ files call π's own draws' log q "log_pi"), every scorer's score."""
        rows = []
        for i in range(min(n, len(self))):
            row = {"text": self.samples.texts[i], log_q_name: self.log_q[i].item()}
            rows.append(row | {name: s[i].item() for name, s in self.evidence.scores.items()})
        return rows

    def select(self, index: torch.Tensor | Sequence[int]) -> Scored:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Scored(
            samples=self.samples.select(idx),
            log_q=self.log_q[idx],
            token_log_a=None if self.token_log_a is None else self.token_log_a[idx],
            evidence=self.evidence.select(idx),
            log_target=None if self.log_target is None else self.log_target[idx],
        )

    @staticmethod
    def concat(parts: Sequence[Scored]) -> Scored:
        if len(parts) == 1:
            return parts[0]
        samples = Samples.concat([p.samples for p in parts])
        width = samples.ids.shape[1]
        kind = {(p.scored_prior, p.token_log_a is not None) for p in parts}
        if len(kind) > 1:
            raise ValueError("cannot concatenate draws with and without the prior's pass")
        token_log_a = log_target = None
        if parts[0].scored_prior:
            log_target = torch.cat([p.log_target for p in parts])
        if parts[0].token_log_a is not None:
            token_log_a = torch.cat([pad(p.token_log_a, width, left=False, value=0.0) for p in parts])
        return Scored(
            samples=samples,
            log_q=torch.cat([p.log_q for p in parts]),
            token_log_a=token_log_a,
            evidence=Evidence.concat([p.evidence for p in parts]),
            log_target=log_target,
        )

    def rows(self) -> list[dict]:
        """One JSON-ready dict per sample: text, log-probabilities and every scorer's score."""
        out = []
        for i, text in enumerate(self.samples.texts):
            row: dict = {"text": text}
            row |= {name: s[i].item() for name, s in self.evidence.scores.items()}
            row["log_q"] = self.log_q[i].item()
            if self.scored_prior:
                row |= {"log_a": self.log_a[i].item(), "log_target": self.log_target[i].item()}
            out.append(row)
        return out


def propose(
    target: Target,
    proposal: LanguageModel,
    n: int,
    params: SamplingParams = ANCESTRAL,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    contexts: Sequence[str] | None = None,
    prior: PriorPass = "all",
    differentiable: bool = False,
) -> Scored:
    """Draw n samples from ``proposal`` and score them under ``target``.

    log q comes from the sampling pass itself; log a needs a second pass unless the proposal is
    the target's prior sampled ancestrally (then q = a exactly). ``prior`` (`PriorPass`) says
    how much of that pass to run: ``"none"`` for callers that read only the evidence (plain
    REINFORCE); ``"support"`` for those that read log P but not log a (DPG, GDC++): samples
    that violate a constraint have log P = −∞ whatever log a is, so the prior runs on the
    others only (on a rare constraint, most of the batch). With ``contexts`` (one per sample),
    sample i continues contexts[i] and is scored by b(x, c) under a(x|c). ``differentiable``:
    the samples keep the sampling pass's graph (`LanguageModel.sample`).
    """
    samples = proposal.sample(
        n,
        params,
        contexts=contexts,
        generator=generator,
        batch_size=batch_size,
        differentiable=differentiable,
    )
    log_q = samples.log_q.double()
    evidence = target.evidence(samples)
    if prior == "none":
        if torch.isnan(log_q).any():
            raise NonFiniteLogProbError("log-probabilities of the proposal q are NaN: its weights are broken")
        return Scored(samples, log_q, None, evidence, None)
    if proposal is target.base and params.is_ancestral:
        token_log_a = samples.token_log_q
        log_target = target.log_prob(token_log_a.sum(-1), evidence)
    elif prior == "support":
        token_log_a = None
        log_target = _log_target_on_support(target, samples, evidence, batch_size)
    else:
        token_log_a = target.base.token_log_probs_frozen(samples, batch_size=batch_size)
        log_target = target.log_prob(token_log_a.sum(-1), evidence)
    if torch.isnan(log_target).any() or torch.isnan(log_q).any():
        raise NonFiniteLogProbError(
            "log-probabilities are NaN (of the prior a or of the proposal q): the model's weights "
            "or logits are broken, so the weights P/q are undefined"
        )
    return Scored(samples, log_q, token_log_a, evidence, log_target)


def _log_target_on_support(
    target: Target, samples: Samples, evidence: Evidence, batch_size: int | None
) -> torch.Tensor:
    """log P, with the prior's forward run only on the samples whose evidence is not −∞."""
    log_target = torch.full((len(samples),), float("-inf"), dtype=torch.float64)
    support = torch.isfinite(evidence.log_factor).nonzero().squeeze(1)
    if len(support) == len(samples):
        support_samples, support_evidence = samples, evidence
    elif len(support):
        support_samples, support_evidence = samples.select(support), evidence.select(support)
    else:
        return log_target
    log_a = target.base.token_log_probs_frozen(support_samples, batch_size=batch_size).sum(-1)
    log_target[support] = target.log_prob(log_a, support_evidence)
    return log_target
