"""Training methods as the config knows them: each method's options section and the one registry
of methods (`METHODS`). An options section builds its objective (objectives/); where a check on
the options is the objective's own, the section calls it, so that a mistake shows before models
load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from bayesalign.config.base import ConfigError, Section, closest
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
    TrajectoryBalance,
    Twist,
)
from bayesalign.objectives.f_divergence import check_clip
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
        check_clip(self.divergence, self.max_log_ratio)  # the objective's own check, before any model loads
        return self

    def build(self, target: Target) -> Objective:
        return FDPG(self.divergence, self.baseline_window, self.max_log_ratio)


class CDPGSection(Section):
    """Options of method 'cdpg' (objectives/conditional.py): needs the config's contexts section."""

    baseline: bool = Field(True, description="subtract π/q (GDC++-style) from the weights P_c/(Z_c·q)")

    def build(self, target: Target) -> Objective:
        return CDPG(self.baseline)


class ReinforceSection(Section):
    """Options of method 'reinforce' (objectives/reward_maximisation.py)."""

    baseline: Baseline = Field("loo", description="none, mean (of the batch) or loo (leave-one-out)")

    def build(self, target: Target) -> Objective:
        return Reinforce(self.baseline)


def check_kl_coefficient(key: str, beta: float | None, constraints: bool) -> None:
    """Unset, β is the target's own (a·exp(r/β)), so KL-RL aims at the same p; a target with
    ``constraints`` has no such β (its p is the limit β → 0), so β must be set. The config checks
    this before any model loads; the section's ``build`` again on the target it is given."""
    if beta is None and constraints:
        raise ConfigError(
            f"training.{key}.beta is required: the target has constraints, so it is not "
            "a·exp(r/β) for any β (its p is the limit β → 0); set a KL coefficient"
        )


def kl_coefficient(key: str, beta: float | None, target: Target) -> float:
    """β as set, else the target's own."""
    check_kl_coefficient(key, beta, bool(target.constraints))
    return target.reward_beta if beta is None else beta


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
        beta = kl_coefficient("kl_reinforce", self.beta, target)
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
        beta = kl_coefficient("ppo", self.beta, target)
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


class TBSection(Section):
    """Options of method 'tb' (objectives/trajectory_balance.py): GFlowNet trajectory balance."""

    min_log_b: float | None = Field(
        None,
        lt=0,
        description="count b(x) = 0 as e^min_log_b (e.g. -10), which makes pointwise constraints "
        "usable (log P would be −∞ there); unset, such targets are refused",
    )

    def build(self, target: Target) -> Objective:
        return TrajectoryBalance(self.min_log_b)


class TwistSection(Section):
    """Options of method 'twist' (objectives/twist.py): π ∝ a·σ(u_θ), the twist fitted on samples
    of a (the proposal is a: training.proposal.update is fixed). model.lora, if set, puts LoRA on
    the twist's copy of a's trunk."""

    head: Literal["vocabulary", "embedding"] = Field(
        "vocabulary",
        description="the twist's output layer: one free row per token (vocabulary), or a projection "
        "through the prior's frozen output embedding (embedding: tokens the prior embeds alike get "
        "alike twists; far fewer weights for a large vocabulary)",
    )

    trunk: Literal["copy", "prior"] = Field(
        "copy",
        description="what the head reads: copy (a trainable copy of a's trunk, LoRA on it with "
        "model.lora) or prior (a's own frozen hidden states: only the head trains, and π costs one "
        "forward of a)",
    )

    def build(self, target: Target) -> Objective:
        return Twist()


# The options sections; each builds its method's objective for a target.
MethodOptions = (
    FDPGSection | CDPGSection | ReinforceSection | KLReinforceSection | PPOSection | TBSection | TwistSection
)


@dataclass(frozen=True)
class Method:
    """A training method as the config knows it."""

    objective: Callable[[], Objective] | None = None  # a method without options: its objective
    options: str | None = None  # else the key of its options section in training (whose build makes it)
    one_reward: bool = False  # reward maximisation: the target must define one reward r(x)
    prior_samples: bool = False  # it fits on samples of a: the proposal is fixed at a (the twist)


# The registry of methods. A method's options section is filled with its defaults when omitted (so
# the run folder's config shows them); it stays null for the other methods, where setting it is an
# error, and configs written before it existed still resume. Every build is a fresh objective with
# its own state.
METHODS: dict[str, Method] = {
    "dpg": Method(DPG),
    "gdc++": Method(GDCPlusPlus),
    "f-dpg": Method(options="f_dpg"),
    "cdpg": Method(options="cdpg"),
    "reinforce": Method(options="reinforce", one_reward=True),
    "kl-reinforce": Method(options="kl_reinforce", one_reward=True),
    "ppo": Method(options="ppo", one_reward=True),
    "tb": Method(options="tb"),
    "twist": Method(options="twist", prior_samples=True),
}
# Options sections of training and the method that reads each.
METHOD_OPTIONS: dict[str, str] = {m.options: name for name, m in METHODS.items() if m.options}


def check_method(name: str) -> str:
    """``name`` if it is a method of the registry, else a ConfigError naming the closest one."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; {closest(name, METHODS)}")
    return name
