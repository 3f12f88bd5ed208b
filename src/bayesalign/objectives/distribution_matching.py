"""Distribution matching: minimise the forward KL(p‖π) with importance-weighted policy gradients.

∇ KL(p‖π) = −E_p[∇ log π(x)] = −E_q[(p(x)/q(x)) ∇ log π(x)], for samples x ~ q.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayesalign.objectives.base import Batch, Objective, PolicyOutput


@dataclass(frozen=True)
class DPG(Objective):
    """Distributional Policy Gradient (Parshakova et al. 2019; GDC, Khalifa et al. 2021).

    loss = −(p/q)·log π. Every weight is ≥ 0, so samples that violate a constraint contribute
    nothing: they are never pushed down, only the others pushed up.
    """

    name: str = "dpg"
    prior_pass = "support"  # reads log P only: the prior runs where P(x) > 0

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        log_pi = out.log_prob
        return -batch.normalised_weights.to(log_pi) * log_pi

    def rows_with_loss(self, batch: Batch) -> torch.Tensor:
        return batch.normalised_weights != 0  # P(x) = 0: weight 0, no gradient


@dataclass(frozen=True)
class GDCPlusPlus(Objective):
    """DPG with a baseline (GDC++, Korbak et al. 2022).

    loss = −(p/q − π/q)·log π. The subtracted term has expectation zero under q
    (E_q[(π/q)∇log π] = Σ ∇π = 0), so the gradient is unbiased, and it lowers its variance.
    On-policy (q = π) the advantage is p/π − 1; off-policy, samples with P = 0 get a negative
    advantage and are actively pushed down. π/q is detached.
    """

    name: str = "gdc++"
    prior_pass = "support"  # reads log P only: the prior runs where P(x) > 0

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        log_pi = out.log_prob
        baseline = torch.exp(log_pi.detach().double().cpu() - batch.log_q)
        advantage = (batch.normalised_weights - baseline).to(log_pi)
        return -advantage * log_pi
