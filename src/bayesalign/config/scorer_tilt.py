"""``training.scorer_tilt``: after the method's steps, tilt π by the constraint's own scorer
(scorer_tilt.py), fit the tilt's weights on the posterior pool's training split (tilt_fit.py),
and keep the tilted π in final/ if its held-out KL(p‖π) is lower (training/tilt_stage.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from bayesalign.config.base import Section
from bayesalign.config.target import TargetSection


class ScorerTiltSection(Section):
    """The tilt's features and its fit (docs/demo-recipe.md has the measurements behind the
    defaults)."""

    top: int = Field(
        32, ge=0, description="candidates per position (a's likeliest) that the scorer reads in context"
    )
    edges: list[int] = Field(
        [0, 2, 8],
        description="buckets of positions by tokens still to come, each with its own weights: "
        "the first tokens-to-go of each bucket, rising from 0 (the last position): [0, 2, 8] is the last two "
        "positions, the six before them, the rest",
    )
    final: int = Field(
        512,
        ge=0,
        description="at the last position π takes p's own step: the verdict on the text with each of "
        "a's `final` likeliest tokens appended, and each token the scorer reacts to alone (0: fitted "
        "weights there too)",
    )
    l2: float = Field(1e-4, ge=0, description="penalty on the weights (keeps separating features finite)")
    iters: int = Field(100, gt=0, description="L-BFGS iterations at most")
    workers: int = Field(0, ge=0, description="processes that run the scorer (0: the run's own)")

    @field_validator("edges")
    @classmethod
    def _rising_from_zero(cls, value: list[int]) -> list[int]:
        if not value or value[0] != 0 or value != sorted(set(value)):
            raise ValueError(f"edges must rise strictly from 0 (e.g. [0, 2, 8]), got {value}")
        return value


def check_scorer_tilt(target: TargetSection, holdout: float, refused: list[str]) -> None:
    """What the tilt needs of the rest of the config, before any model loads: one pointwise
    constraint whose scorer it reads, a pool with a held-out split (``holdout``; it fits on the
    rest and is kept only if the held-out KL(p‖π) says so), and none of the ``refused`` settings
    (the config keys set to what it cannot serve: contexts, another sampler, several processes)."""
    if len(target.constraints) != 1 or target.reward is not None or target.distributional:
        raise ValueError(
            "training.scorer_tilt reads the scorer of the target's one constraint: it needs a target "
            "of exactly one pointwise constraint (no reward, no distributional constraints)"
        )
    if holdout == 0:
        raise ValueError(
            "training.scorer_tilt fits on the posterior pool's training split and is kept by the held-out "
            "KL(p‖π): set eval.pool with a holdout > 0 (e.g. eval: {pool: {samples: 2048, holdout: 0.33}})"
        )
    if refused:
        raise ValueError(f"training.scorer_tilt does not support {refused[0]} as set here yet")
