"""The target section: constraints, a reward tilt and distributional constraints (with how λ is
fitted), each naming its scorer by the scorer schema."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from bayesalign.config.base import Section
from bayesalign.config.scorers import ScorerSpec, check_scorer_type


class RewardSpec(Section):
    scorer: ScorerSpec
    beta: float = Field(gt=0, description="temperature of the tilt a(x)·exp(r(x)/β)")

    _scorer_type = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))


class DistributionalSpec(Section):
    """A distributional constraint E_p[φ] = moment on a feature φ (boolean or real-valued)."""

    scorer: ScorerSpec
    moment: float = Field(description="the wanted expectation of the feature under the target p")

    _scorer_type = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))


class MomentFitSection(Section):
    """How λ of the distributional constraints is fitted (moments.py), before training starts."""

    samples: int = Field(4096, gt=1, description="samples drawn from the prior a to fit λ on")
    max_iter: int = Field(100, gt=0, description="Newton iterations at most")
    tol: float = Field(1e-6, gt=0, description="largest accepted |E_p[φ] − moment| on the fit samples")
    seed: int = Field(0, description="seed of the fit samples (the same target for any training seed)")


class TargetSection(Section):
    constraints: list[ScorerSpec] = []
    reward: RewardSpec | None = None
    distributional: list[DistributionalSpec] = []
    fit: MomentFitSection = MomentFitSection()

    @field_validator("constraints", mode="before")
    @classmethod
    def _scorer_types(cls, value: Any) -> Any:
        if isinstance(value, list):
            for spec in value:
                check_scorer_type(spec)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> TargetSection:
        if not self.constraints and self.reward is None and not self.distributional:
            raise ValueError("the target needs a constraint, a distributional constraint or a reward")
        if self.reward is not None and self.distributional:
            raise ValueError(
                "a reward tilt together with distributional constraints is not supported; use "
                "constraints (pointwise) with distributional ones"
            )
        changed = self.fit.model_dump(exclude_defaults=True)
        if changed and not self.distributional:
            raise ValueError(f"fit sets {changed} but the target has no distributional constraints")
        return self
