"""Training methods as the config knows them: each method's options section and the one registry
of methods (`OBJECTIVES`). An options section builds its objective (objectives/)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from bayesalign.config.base import ConfigError, Section
from bayesalign.objectives import (
    CDPG,
    DPG,
    FDPG,
    PPO,
    Divergence,
    GDCPlusPlus,
    KLController,
    KLReinforce,
    Objective,
    Reinforce,
)
from bayesalign.objectives.reward_maximisation import Baseline, KLEstimator, Placement

if TYPE_CHECKING:
    from bayesalign.targets import Target


class FDPGSection(Section):
    """Options of method 'f-dpg': which f-divergence D_f(π‖p) to minimise (objectives/f_divergence.py)."""

    divergence: Divergence = Field(
        "js",
        description="forward_kl (= DPG), reverse_kl (= KL-regularised RL; needs P > 0 everywhere), "
        "js (Jensen-Shannon; often best in the f-DPG paper) or tv (total variation)",
    )
    baseline_window: int = Field(1024, gt=0, description="samples in the moving-average baseline")
    max_log_ratio: float | None = Field(
        None,
        gt=0,
        description="reverse_kl only: clip log(π/p) at this value (capped reverse KL), which makes "
        "targets with P(x) = 0 usable; unset, such targets are refused",
    )

    @model_validator(mode="after")
    def _clip_is_for_reverse_kl(self) -> FDPGSection:
        if self.max_log_ratio is not None and self.divergence != "reverse_kl":
            raise ValueError(
                f"max_log_ratio applies to divergence 'reverse_kl' only ({self.divergence} is "
                "bounded where P = 0)"
            )
        return self

    def build(self) -> Objective:
        return FDPG(self.divergence, self.baseline_window, self.max_log_ratio)


class CDPGSection(Section):
    """Options of method 'cdpg' (objectives/conditional.py): needs the config's contexts section."""

    baseline: bool = Field(True, description="subtract π/q (GDC++-style) from the weights P_c/(Z_c·q)")

    def build(self) -> Objective:
        return CDPG(self.baseline)


class ReinforceSection(Section):
    """Options of method 'reinforce' (objectives/reward_maximisation.py)."""

    baseline: Baseline = Field("loo", description="none, mean (of the batch) or loo (leave-one-out)")

    def build(self, target: Target) -> Objective:
        return Reinforce(self.baseline)


def _kl_coefficient(beta: float | None, target: Target, key: str) -> float:
    """β as set, else the target's own (a·exp(r/β)), so KL-RL aims at the same p."""
    if beta is not None:
        return beta
    if target.reward_beta is None:
        raise ConfigError(
            f"training.{key}.beta is required: the target {target.describe()} has constraints, so "
            "it is not a·exp(r/β) for any β (its p is the limit β → 0)"
        )
    return target.reward_beta


class KLReinforceSection(Section):
    """Options of method 'kl-reinforce': REINFORCE on r − β·KL(π‖a)."""

    beta: float | None = Field(
        None, gt=0, description="KL coefficient; unset: the target's β (reward.beta), so p* = p"
    )
    estimator: KLEstimator = Field("k1", description="k1 = log π/a, or k3 = a/π − 1 − log a/π per token")
    penalty: Placement = Field(
        "reward", description="reward (detached, r − β·k: targets p* with k1) or loss (β·k differentiated)"
    )
    baseline: Baseline = "loo"

    def build(self, target: Target) -> Objective:
        beta = _kl_coefficient(self.beta, target, "kl_reinforce")
        return KLReinforce(beta, self.estimator, self.penalty, self.baseline)


class PPOSection(Section):
    """Options of method 'ppo' (Ziegler et al. 2019); epochs over each batch: training.epochs."""

    beta: float | None = Field(
        None, gt=0, description="initial KL coefficient; unset: the target's β (reward.beta)"
    )
    kl_target: float | None = Field(
        None, gt=0, description="adaptive β aiming at this KL(π‖a) in nats; unset: β stays fixed"
    )
    horizon: int = Field(10_000, gt=0, description="samples over which β may change by ±20%·n/horizon")
    estimator: KLEstimator = "k1"
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ")
    clip: float = Field(0.2, gt=0, description="ratio clip ε")
    value_clip: float = Field(0.2, gt=0)
    value_coef: float = Field(0.1, ge=0)
    whiten: bool = Field(True, description="normalise advantages over the batch's tokens")
    value_trains_trunk: bool = Field(
        False, description="let the value loss move the policy's weights (else the head only)"
    )

    def build(self, target: Target) -> Objective:
        beta = _kl_coefficient(self.beta, target, "ppo")
        return PPO(
            KLController(beta, self.kl_target, self.horizon),
            self.estimator,
            self.gamma,
            self.lam,
            self.clip,
            self.value_clip,
            self.value_coef,
            self.whiten,
            self.value_trains_trunk,
        )


if TYPE_CHECKING:
    from bayesalign.config.sections import TrainingSection


# One entry per method: a builder from the training section and the target, so a method can read
# its own options section (training.f_dpg) and the target's β. Every call builds a fresh
# objective with its own state.
OBJECTIVES: dict[str, Callable[[TrainingSection, Target], Objective]] = {
    "dpg": lambda training, target: DPG(),
    "gdc++": lambda training, target: GDCPlusPlus(),
    "f-dpg": lambda training, target: training.f_dpg.build(),
    "cdpg": lambda training, target: training.cdpg.build(),
    "reinforce": lambda training, target: training.reinforce.build(target),
    "kl-reinforce": lambda training, target: training.kl_reinforce.build(target),
    "ppo": lambda training, target: training.ppo.build(target),
}
# Options sections of training and the method that reads each. A method's section is filled with
# its defaults when omitted (so the run folder's config shows them); it stays null for the other
# methods, where setting it is an error, and configs written before it existed still resume.
METHOD_OPTIONS: dict[str, str] = {
    "f_dpg": "f-dpg",
    "cdpg": "cdpg",
    "reinforce": "reinforce",
    "kl_reinforce": "kl-reinforce",
    "ppo": "ppo",
}
