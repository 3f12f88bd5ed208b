"""Targets: the unnormalised posterior P(x) = a(x) · (evidence factors), always in log space.

- pointwise constraints:  log P = log a + Σ_i log b_i        (−inf where any b_i = 0)
- reward tilt:            log P = log a + r / β               (the implicit target of KL-RL)
- distributional:         log P = log a + Σ_i log b_i + λ·φ   (λ fitted so that E_p[φ] = μ̄:
                          `Target.constrain`, moments.py)

A target never normalises itself: Z = Σ_x P(x) is estimated (estimators.py) or enumerated
(exact.py). Scorers run once per batch; every term reads the scores it needs from that run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from bayesalign.models import LanguageModel
from bayesalign.moments import MomentFit, MomentFitError, check_counts, solve_dual
from bayesalign.samples import Samples, SamplingParams
from bayesalign.scorers import Scorer, checked_scores


class Enumeration(Protocol):
    """Every sequence of a space small enough to enumerate (`exact.SequenceSpace`): what
    `Target.constrain` needs to fit λ on exact expectations instead of samples."""

    samples: Samples

    def log_prob(self, model: LanguageModel) -> torch.Tensor: ...


class Term(Protocol):
    """One evidence factor: maps its scorer's scores to a log-factor per sample."""

    scorer: Scorer

    def log_factor(self, scores: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Constraint:
    """A pointwise constraint b(x) ∈ {0, 1}: log-factor 0 or −inf."""

    scorer: Scorer

    def __post_init__(self) -> None:
        if not self.scorer.boolean:
            raise ValueError(
                f"scorer {self.scorer.name!r} is real-valued; a constraint needs a boolean "
                "scorer (give it a threshold) or use it as a reward tilt"
            )

    def log_factor(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.where(scores > 0, 0.0, float("-inf")).double()

    def describe(self) -> str:
        return f"b[{self.scorer.name}]"


@dataclass(frozen=True)
class Tilt:
    """A reward tilt exp(r(x)/β): the target that KL-regularised RL with coefficient β converges to."""

    scorer: Scorer
    beta: float

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"reward tilt on {self.scorer.name!r}: beta must be > 0, got {self.beta}")

    def log_factor(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.beta

    def describe(self) -> str:
        return f"exp({self.scorer.name}/{self.beta:g})"


@dataclass(frozen=True)
class Feature:
    """A distributional factor exp(λ·φ(x)) for a feature φ (boolean or real-valued scorer).

    λ is what `Target.constrain` fits so that E_p[φ] equals a wanted moment; a Feature built by
    hand with a known λ (e.g. read back from a run's target.json) is the same factor.
    """

    scorer: Scorer
    lam: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.lam):
            raise ValueError(f"feature {self.scorer.name!r}: λ must be finite, got {self.lam}")

    def log_factor(self, scores: torch.Tensor) -> torch.Tensor:
        return self.lam * scores

    def describe(self) -> str:
        return f"exp({self.lam:.4g}·{self.scorer.name})"


@dataclass
class Evidence:
    """What the scorers said about a batch: raw scores by scorer name, and Σ log-factors."""

    scores: dict[str, torch.Tensor]
    log_factor: torch.Tensor  # [B], float64
    satisfied: torch.Tensor | None  # [B] bool: every constraint holds; None without constraints

    def select(self, index: torch.Tensor) -> Evidence:
        return Evidence(
            scores={k: v[index] for k, v in self.scores.items()},
            log_factor=self.log_factor[index],
            satisfied=None if self.satisfied is None else self.satisfied[index],
        )

    @staticmethod
    def concat(parts: Sequence[Evidence]) -> Evidence:
        return Evidence(
            scores={k: torch.cat([e.scores[k] for e in parts]) for k in parts[0].scores},
            log_factor=torch.cat([e.log_factor for e in parts]),
            satisfied=None if parts[0].satisfied is None else torch.cat([e.satisfied for e in parts]),
        )


class Target:
    """An energy-based model P(x) = a(x) · Π_terms factor(x) over continuations of the prior's prompt.

    ``moment_fit`` is the report of the fit that chose the λ of the `Feature` terms (None when
    the target has no fitted features).
    """

    def __init__(
        self, base: LanguageModel, terms: Sequence[Term], *, moment_fit: MomentFit | None = None
    ) -> None:
        if not terms:
            raise ValueError("a target needs at least one constraint or reward term")
        names = [t.scorer.name for t in terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"scorer names must be unique within a target, repeated: {duplicates}")
        self.base = base
        self.terms = tuple(terms)
        self.moment_fit = moment_fit

    @classmethod
    def pointwise(cls, base: LanguageModel, constraints: Sequence[Scorer]) -> Target:
        return cls(base, [Constraint(s) for s in constraints])

    @classmethod
    def tilt(cls, base: LanguageModel, reward: Scorer, beta: float) -> Target:
        return cls(base, [Tilt(reward, beta)])

    @classmethod
    def constrain(
        cls,
        base: LanguageModel,
        features: Sequence[Scorer],
        moments: Sequence[float],
        constraints: Sequence[Scorer] = (),
        *,
        proposal: LanguageModel | None = None,
        n_samples: int = 4096,
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        space: Enumeration | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> Target:
        """The target closest to ``base`` (min KL(p‖a)) with E_p[φ_i] = moments[i] and every
        pointwise constraint b_j(x) = 1: P(x) = a(x)·Π_j b_j(x)·exp(Σ_i λ_i φ_i(x)).

        λ is fitted on ``n_samples`` drawn once from ``proposal`` (default: the base), by Newton's
        method on the dual with self-normalised importance sampling. Draw them as training will
        (``sampling``: the same max_new_tokens; default `SamplingParams()`). With ``space`` (an
        enumerable `SequenceSpace`, toy models) the same solver uses exact expectations instead.
        The returned target's ``moment_fit`` reports λ, the achieved moments and their effective
        sample size. A moment the samples cannot reach, a feature that never varies, or a fit
        that does not converge raises `moments.MomentFitError`, naming the feature.

        ``max_iter``/``tol`` are those of `moments.solve_dual`, which finds λ.
        """
        features, moments = list(features), [float(m) for m in moments]
        names = [f.name for f in features]
        check_counts(names, moments)  # before any sampling
        fixed = [Constraint(s) for s in constraints]
        # a target with every λ = 0: checks names and constraints, and scores everything in one run
        probe = cls(base, [*fixed, *(Feature(f, 0.0) for f in features)])
        if space is not None:
            samples = space.samples
            log_a = space.log_prob(base)
            log_q = torch.zeros_like(log_a)
        else:
            if n_samples < 2:
                raise MomentFitError(f"fitting λ needs at least 2 samples, got n_samples={n_samples}")
            sampling = sampling if sampling is not None else SamplingParams()
            q = proposal if proposal is not None else base
            samples = q.sample(n_samples, sampling, generator=generator, batch_size=batch_size)
            log_q = samples.log_q.double()
            if q is base and sampling.is_ancestral:
                log_a = log_q  # sampled from a itself: no second pass
            else:
                log_a = base.log_prob_frozen(samples, batch_size=batch_size).double()
        evidence = probe.evidence(samples)
        log_base = log_a.double() + evidence.log_factor - log_q
        phi = torch.stack([evidence.scores[n] for n in names], 1)
        fit = solve_dual(
            log_base,
            phi,
            moments,
            names,
            max_iter=max_iter,
            tol=tol,
            exact=space is not None,
            boolean=[bool(f.boolean) for f in features],
        )
        terms = [*fixed, *(Feature(f, fit.lambdas[f.name]) for f in features)]
        return cls(base, terms, moment_fit=fit)

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        return tuple(t for t in self.terms if isinstance(t, Constraint))

    @property
    def features(self) -> tuple[Feature, ...]:
        return tuple(t for t in self.terms if isinstance(t, Feature))

    @property
    def scorers(self) -> dict[str, Scorer]:
        """Every term's scorer by name (a saved scorer tilt names the one it reads)."""
        return {t.scorer.name: t.scorer for t in self.terms}

    def describe(self) -> str:
        return " · ".join(["a(x)", *(t.describe() for t in self.terms)])

    # -- the reward-maximisation view: P = a·exp(r/β) ------------------------------------------
    @property
    def reward_beta(self) -> float | None:
        """The β for which a·exp(r/β) is this target (with r = :meth:`reward`).

        A target made of one or more tilts that share β: that β. A target of features (and
        tilts with different β's): 1, with r = log(P/a). A target with constraints: None, since
        exp(r/β) is never 0; its p is the limit β → 0 of a·exp(b/β).
        """
        if self.constraints:
            return None
        betas = {t.beta for t in self.terms if isinstance(t, Tilt)}
        return betas.pop() if len(betas) == 1 and not self.features else 1.0

    def reward(self, evidence: Evidence) -> torch.Tensor:
        """r(x) [B] float64, what reward-maximisation methods maximise on this target.

        Without constraints, r = β·log(P(x)/a(x)) with β = :attr:`reward_beta` (for a·exp(r/β),
        the tilt's own r), so KL-regularised RL with coefficient β targets exactly p. With
        constraints only, r = b(x) ∈ {0, 1}: REINFORCE on b. Constraints mixed with rewards or
        features define no single reward; that raises `ValueError`.
        """
        self.check_defines_reward("reward maximisation")
        if not self.constraints:
            return self.reward_beta * evidence.log_factor
        return evidence.satisfied.double()

    @property
    def defines_reward(self) -> bool:
        """False for constraints mixed with tilts or features, where :meth:`reward` raises."""
        return not self.constraints or len(self.constraints) == len(self.terms)

    def check_defines_reward(self, who: str) -> None:
        """Raise, naming ``who`` needs it, if this target defines no single reward."""
        if not self.defines_reward:
            raise ValueError(
                f"{who}: target {self.describe()} mixes constraints with reward or feature terms, "
                "so it defines no single reward r(x); use constraints only (r = b) or a reward "
                "tilt only"
            )

    def evidence(self, samples: Samples) -> Evidence:
        scores = {
            t.scorer.name: checked_scores(t.scorer, samples.texts, samples.contexts) for t in self.terms
        }
        log_factor = torch.zeros(len(samples), dtype=torch.float64)
        for term in self.terms:
            log_factor = log_factor + term.log_factor(scores[term.scorer.name])
        satisfied = None
        if self.constraints:
            satisfied = torch.stack([scores[c.scorer.name] > 0 for c in self.constraints]).all(0)
        return Evidence(scores=scores, log_factor=log_factor, satisfied=satisfied)

    def log_prob(self, log_a: torch.Tensor, evidence: Evidence) -> torch.Tensor:
        """log P(x) = log a(x) + Σ log-factors, float64."""
        return log_a.double() + evidence.log_factor
