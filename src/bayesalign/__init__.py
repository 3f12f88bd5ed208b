"""bayesalign: aligning language models as Bayesian inference (prior LM × evidence → posterior).

The public names are imported on first use (PEP 562), not with the package: importing
``bayesalign.cli`` must not pull in torch, so that ``bayesalign --help`` answers at once."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayesalign.models import LanguageModel, Samples, SamplingParams, make_policy
    from bayesalign.targets import Constraint, Feature, Target, Tilt

_HOME = {
    "LanguageModel": "bayesalign.models",
    "Samples": "bayesalign.models",
    "SamplingParams": "bayesalign.models",
    "make_policy": "bayesalign.models",
    "Constraint": "bayesalign.targets",
    "Feature": "bayesalign.targets",
    "Target": "bayesalign.targets",
    "Tilt": "bayesalign.targets",
}

__all__ = [
    "Constraint",
    "Feature",
    "LanguageModel",
    "Samples",
    "SamplingParams",
    "Target",
    "Tilt",
    "make_policy",
]


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module 'bayesalign' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
