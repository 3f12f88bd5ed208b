"""Importance-sampling estimates of the quantities that tell how close a model is to the target.

Samples x_1..x_n come from a proposal q; w_i = P(x_i)/q(x_i). Everything is computed from
log-probabilities in float64 and weights are rescaled by their maximum before exponentiating, so
no weight overflows however peaked the target is. Every estimate comes with a standard error
(delta method for ratios; see each function). Terms with P(x) = 0 contribute 0 (0·log 0 = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Estimate:
    value: float
    stderr: float

    def __format__(self, spec: str) -> str:
        return f"{self.value:{spec or '.4g'}} ± {self.stderr:{spec or '.2g'}}"


class ZeroPartitionError(ValueError):
    """No sample had P(x) > 0: the importance-sampling estimate of Z is 0."""


def log_weights(log_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """log w = log P − log q in float64, refusing NaN and +inf (−inf, i.e. P = 0, is fine)."""
    log_w = log_target.double() - log_q.double()
    if torch.isnan(log_w).any() or (log_w == float("inf")).any():
        raise ValueError("importance weights contain NaN or +inf: check the scorers and log-probs")
    return log_w


def _scaled_weights(log_target: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, float]:
    """w_i / max_j w_j and log max_j w_j, from log P and log q."""
    log_w = log_weights(log_target, log_q)
    shift = log_w.max().item()
    if shift == float("-inf"):
        raise ZeroPartitionError(f"none of the {len(log_w)} samples has P(x) > 0: Z estimate is 0")
    return torch.exp(log_w - shift), shift


def _mean_stderr(values: torch.Tensor) -> Estimate:
    n = len(values)
    if n == 0:
        raise ValueError("cannot estimate a mean from zero samples")
    std = values.std(unbiased=True).item() if n > 1 else float("nan")
    return Estimate(values.mean().item(), std / math.sqrt(n))


def _ratio_delta(num: torch.Tensor, den: torch.Tensor, grad: tuple[float, float]) -> float:
    """Delta-method standard error of g(mean(num), mean(den)) with gradient ``grad``."""
    n = len(num)
    cov = torch.cov(torch.stack([num, den])) if n > 1 else torch.full((2, 2), float("nan"))
    g = torch.tensor(grad, dtype=torch.float64)
    return math.sqrt(max((g @ cov @ g).item(), 0.0) / n)


def log_partition(log_target: torch.Tensor, log_q: torch.Tensor) -> Estimate:
    """log Z with Z ≈ mean(w); stderr by the delta method: sd(w)/(mean(w)·√n)."""
    w, shift = _scaled_weights(log_target, log_q)
    mean = _mean_stderr(w)
    return Estimate(shift + math.log(mean.value), mean.stderr / mean.value)


def partition(log_target: torch.Tensor, log_q: torch.Tensor) -> Estimate:
    """Z ≈ mean(P/q) and its standard error."""
    w, shift = _scaled_weights(log_target, log_q)
    mean = _mean_stderr(w)
    scale = math.exp(shift)
    return Estimate(mean.value * scale, mean.stderr * scale)


def kl_target_model(log_target: torch.Tensor, log_q: torch.Tensor, log_model: torch.Tensor) -> Estimate:
    """KL(p‖m) ≈ mean(w·(log P − log m))/mean(w) − log Z, for any model m (π, q, a).

    With A = mean(w·(log P − log m)) and B = mean(w), KL = A/B − log B (up to the shift of the
    weights, which cancels); its stderr follows from the delta method on (A, B).
    """
    w, shift = _scaled_weights(log_target, log_q)
    gap = torch.where(w > 0, log_target.double() - log_model.double(), 0.0)
    f = w * gap
    a, b = f.mean().item(), w.mean().item()
    value = a / b - (shift + math.log(b))
    return Estimate(value, _ratio_delta(f, w, (1 / b, -a / b**2 - 1 / b)))


def tv_target_model(log_target: torch.Tensor, log_q: torch.Tensor, log_model: torch.Tensor) -> Estimate:
    """TV(p, m) ≈ ½·mean|m/q − w/Z|, with Z estimated on the same samples.

    Z is estimated on the same samples, so the stderr comes from the delta method on
    (terms, w): each term t_i = ½|m_i/q_i − w_i/Z| moves with Z by ½·sign(·)·w_i/Z², which adds
    the slope times w_i/Z to the influence of sample i.
    """
    log_z = log_partition(log_target, log_q).value
    p_over_q = torch.exp(log_target.double() - log_q.double() - log_z)
    m_over_q = torch.exp(log_model.double() - log_q.double())
    terms = 0.5 * (m_over_q - p_over_q).abs()
    slope = (0.5 * torch.sign(m_over_q - p_over_q) * p_over_q).mean()
    return Estimate(terms.mean().item(), _mean_stderr(terms + slope * p_over_q).stderr)


def kl_model_target(log_model: torch.Tensor, log_target: torch.Tensor, log_z: Estimate) -> Estimate:
    """KL(m‖p) = E_m[log m − log P] + log Z on samples of m, with log Z estimated elsewhere.

    The standard error adds log Ẑ's to the sample mean's (independent draws): leaving it out
    understates the error whenever Z is uncertain, as it is on every real model.
    """
    gap = _mean_stderr(log_model.double() - log_target.double())
    return Estimate(gap.value + log_z.value, math.sqrt(gap.stderr**2 + log_z.stderr**2))


def kl_on_samples(log_model: torch.Tensor, log_other: torch.Tensor) -> Estimate:
    """KL(m‖o) ≈ mean(log m − log o) on samples drawn from m (e.g. KL(π‖a) on samples of π)."""
    return _mean_stderr(log_model.double() - log_other.double())


def mean(values: torch.Tensor) -> Estimate:
    """A plain Monte Carlo mean, e.g. E_π[b] on samples of π."""
    return _mean_stderr(values.double())


def target_expectation(log_target: torch.Tensor, log_q: torch.Tensor, values: torch.Tensor) -> Estimate:
    """E_p[φ] ≈ Σ w·φ / Σ w (self-normalised); stderr by the delta method on the ratio."""
    w, _ = _scaled_weights(log_target, log_q)
    f = w * values.double()
    a, b = f.mean().item(), w.mean().item()
    return Estimate(a / b, _ratio_delta(f, w, (1 / b, -a / b**2)))


def effective_sample_size(log_target: torch.Tensor, log_q: torch.Tensor) -> float:
    """(Σw)²/Σw²: how many samples from p the weighted sample is worth."""
    w, _ = _scaled_weights(log_target, log_q)
    return (w.sum() ** 2 / (w**2).sum()).item()
