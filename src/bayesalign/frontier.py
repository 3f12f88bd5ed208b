"""The KL frontier: the least KL(π‖a) any model can spend to reach a given mean of the evidence.

Among all distributions π with E_π[s] = s̄, KL(π‖a) is smallest for the tilt π_t ∝ a·exp(t·s)
whose mean is s̄ (the I-projection), and that least value is KL(π_t‖a) = t·s̄ − log E_a[exp(t·s)].
For a boolean s with E_a[s] = z this is KL*(s̄) = s̄·log(s̄/z) + (1−s̄)·log((1−s̄)/(1−z)).

A trained π sits at (E_π[s], KL(π‖a)); `frontier_excess` = KL(π‖a)/KL*(E_π[s]) says how much
more than necessary π moved away from the prior for what it achieved: 1.0 is as good as any
model can be, 6 means six times the distance the evidence asked for ("catastrophic forgetting",
measured). The frontier is computed from prior samples (a posterior pool's draws).
"""

from __future__ import annotations

import math

import torch

MIN_FRONTIER_KL = 0.01  # below this KL*, π is within sampling noise of the prior's mean: no excess


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def boolean_kl(mean: float, z: float) -> float:
    """KL*(s̄) for a boolean s with prior mean z (closed form; inf outside (0, 1) reach)."""
    if not 0 <= mean <= 1:
        return float("nan")
    if (mean > 0 and z == 0) or (mean < 1 and z == 1):
        return float("inf")
    return _xlogy(mean, mean / z) + _xlogy(1 - mean, (1 - mean) / (1 - z))


class Frontier:
    """The frontier of an evidence statistic s, from its values on samples of the prior.

    ``boolean``: s ∈ {0, 1} (constraint satisfaction); the closed form is used. Otherwise the
    tilt family is estimated on the samples by self-normalised weights, so its reach is the
    range of the values seen: a mean outside it has no frontier point (nan).
    """

    def __init__(self, values: torch.Tensor, *, boolean: bool) -> None:
        self.values = values.double()
        self.boolean = boolean
        self.prior_mean = self.values.mean().item()

    def _tilt(self, t: float) -> tuple[float, float]:
        """(E_t[s], KL(π_t‖a)) of the tilt with parameter t, on the samples."""
        logits = t * self.values
        log_mean = torch.logsumexp(logits, 0).item() - math.log(len(self.values))
        mean = (torch.softmax(logits, 0) * self.values).sum().item()
        return mean, t * mean - log_mean

    def kl(self, mean: float) -> float:
        """KL*(mean): the least KL(π‖a) over π with E_π[s] = mean (nan outside the reach)."""
        if self.boolean:
            return boolean_kl(mean, self.prior_mean)
        low, high = self.values.min().item(), self.values.max().item()
        if not low < mean < high:
            return float("nan") if mean != self.prior_mean else 0.0
        sign = 1.0 if mean >= self.prior_mean else -1.0
        scale = 1.0 / max(self.values.std().item(), 1e-12)
        hi = scale
        while sign * (self._tilt(sign * hi)[0] - mean) < 0:
            hi *= 2
            if hi > 1e12:
                return float("nan")
        lo = 0.0
        for _ in range(100):  # bisection on |t|: the tilt's mean grows monotonically with t
            mid = 0.5 * (lo + hi)
            if sign * (self._tilt(sign * mid)[0] - mean) < 0:
                lo = mid
            else:
                hi = mid
        return self._tilt(sign * 0.5 * (lo + hi))[1]

    def excess(self, mean: float, kl_pi_a: float) -> float:
        """KL(π‖a)/KL*(E_π[s]); nan where KL* is below `MIN_FRONTIER_KL` or undefined."""
        star = self.kl(mean)
        if not math.isfinite(star) or star < MIN_FRONTIER_KL:
            return float("nan")
        return kl_pi_a / star

    def curve(self, points: int = 41) -> list[tuple[float, float]]:
        """(mean, KL*) pairs from the prior's mean up to near the largest reachable mean."""
        if self.boolean:
            start = self.prior_mean
            means = [start + (1 - start) * i / (points - 1) * 0.999 for i in range(points)]
            return [(m, boolean_kl(m, self.prior_mean)) for m in means]
        scale = 1.0 / max(self.values.std().item(), 1e-12)
        return [self._tilt(scale * 20 * (i / (points - 1)) ** 2) for i in range(points)]
