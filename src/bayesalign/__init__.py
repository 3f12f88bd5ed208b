"""bayesalign: aligning language models as Bayesian inference (prior LM × evidence → posterior).

The public names are imported on first use (PEP 562), not with the package: importing
``bayesalign.cli`` must not pull in torch, so that ``bayesalign --help`` answers at once."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayesalign.evaluator import Evaluator
    from bayesalign.models import LanguageModel, make_policy
    from bayesalign.objectives import CDPG, DPG, FDPG, PPO, GDCPlusPlus, KLReinforce, Objective, Reinforce
    from bayesalign.samples import Samples, SamplingParams
    from bayesalign.scorer_tilt import ScorerTilt, tilted
    from bayesalign.targets import Constraint, Feature, Target, Tilt
    from bayesalign.tilt_fit import TiltFit
    from bayesalign.training import CheckpointArgs, SamplingArgs, TrainArgs, Trainer
    from bayesalign.twist_fit import TwistFitSettings, TwistFitter

_HOME = {
    "LanguageModel": "bayesalign.models",
    "Samples": "bayesalign.samples",
    "SamplingParams": "bayesalign.samples",
    "make_policy": "bayesalign.models",
    "Constraint": "bayesalign.targets",
    "Feature": "bayesalign.targets",
    "Target": "bayesalign.targets",
    "Tilt": "bayesalign.targets",
    "Objective": "bayesalign.objectives",
    "DPG": "bayesalign.objectives",
    "GDCPlusPlus": "bayesalign.objectives",
    "FDPG": "bayesalign.objectives",
    "CDPG": "bayesalign.objectives",
    "Reinforce": "bayesalign.objectives",
    "KLReinforce": "bayesalign.objectives",
    "PPO": "bayesalign.objectives",
    "Trainer": "bayesalign.training",
    "TrainArgs": "bayesalign.training",
    "SamplingArgs": "bayesalign.training",
    "CheckpointArgs": "bayesalign.training",
    "Evaluator": "bayesalign.evaluator",
    "TwistFitter": "bayesalign.twist_fit",
    "TwistFitSettings": "bayesalign.twist_fit",
    "ScorerTilt": "bayesalign.scorer_tilt",
    "tilted": "bayesalign.scorer_tilt",
    "TiltFit": "bayesalign.tilt_fit",
}

__all__ = [
    "CDPG",
    "CheckpointArgs",
    "Constraint",
    "DPG",
    "Evaluator",
    "FDPG",
    "Feature",
    "GDCPlusPlus",
    "KLReinforce",
    "LanguageModel",
    "Objective",
    "PPO",
    "Reinforce",
    "Samples",
    "ScorerTilt",
    "SamplingArgs",
    "SamplingParams",
    "Target",
    "Tilt",
    "TiltFit",
    "TrainArgs",
    "Trainer",
    "TwistFitSettings",
    "TwistFitter",
    "make_policy",
    "tilted",
]


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module 'bayesalign' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
