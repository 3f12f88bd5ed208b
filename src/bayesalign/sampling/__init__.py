"""Sampling from a target P without training: acceptance rules (rules.py) run by one sampling
loop (loop.py), QRS diagnostics and the choice of β (diagnostics.py), exact counterparts on a toy
space (exact.py), and `bayesalign sample` as one function (options.py).

In code::

    sampler = Sampler(target, proposal=policy, rule=QuasiRejection(beta=2.0))
    result = sampler.sample(100, generator=torch.Generator().manual_seed(0))
    result.texts, result.stats.acceptance_rate, result.diagnostics([1, 2, 4])

    run = sample(target, prior, 100, SampleArgs(method="qrs", acceptance=0.3))  # as the CLI does
"""

from bayesalign.sampling.diagnostics import (
    QRSRow,
    QRSTable,
    beta_for_acceptance,
    default_betas,
    qrs_acceptance,
    qrs_diagnostics,
    qrs_kl,
    qrs_table,
    qrs_tv,
)
from bayesalign.sampling.exact import ExactQRS, exact_max_ratio, exact_qrs
from bayesalign.sampling.loop import Sampler, SamplerResult, SamplerStats
from bayesalign.sampling.options import SampleArgs, SampleRun, sample
from bayesalign.sampling.rules import (
    BoundExceededError,
    ImportanceResampling,
    LowAcceptanceError,
    QuasiRejection,
    Rejection,
    Rule,
    SamplingError,
    resample,
)

__all__ = [
    "BoundExceededError",
    "ExactQRS",
    "ImportanceResampling",
    "LowAcceptanceError",
    "QRSRow",
    "QRSTable",
    "QuasiRejection",
    "Rejection",
    "Rule",
    "SampleArgs",
    "SamplerResult",
    "SampleRun",
    "Sampler",
    "SamplerStats",
    "SamplingError",
    "beta_for_acceptance",
    "default_betas",
    "exact_max_ratio",
    "exact_qrs",
    "qrs_acceptance",
    "qrs_diagnostics",
    "qrs_kl",
    "qrs_table",
    "qrs_tv",
    "resample",
    "sample",
]
