"""Objectives: small per-sample loss functions over a batch. The training loop never branches on
which one it runs; it hands each objective the same `Batch` and the policy's log-probabilities."""

from bayesalign.objectives.base import Batch, Objective, PolicyOutput, frozen_policy_output, policy_output
from bayesalign.objectives.conditional import CDPG
from bayesalign.objectives.distribution_matching import DPG, GDCPlusPlus
from bayesalign.objectives.f_divergence import DIVERGENCES, FDPG, Divergence, InfiniteDivergenceError
from bayesalign.objectives.reward_maximisation import PPO, KLController, KLReinforce, Reinforce
from bayesalign.objectives.trajectory_balance import TrajectoryBalance
from bayesalign.objectives.twist import Twist

__all__ = [
    "CDPG",
    "DIVERGENCES",
    "DPG",
    "FDPG",
    "Batch",
    "Divergence",
    "GDCPlusPlus",
    "InfiniteDivergenceError",
    "KLController",
    "KLReinforce",
    "Objective",
    "PPO",
    "PolicyOutput",
    "Reinforce",
    "TrajectoryBalance",
    "Twist",
    "frozen_policy_output",
    "policy_output",
]
