"""bayesalign: aligning language models as Bayesian inference (prior LM × evidence → posterior)."""

from bayesalign.models import LanguageModel, Samples, SamplingParams, make_policy
from bayesalign.targets import Constraint, Feature, Target, Tilt

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
