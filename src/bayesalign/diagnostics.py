"""Diagnostics of the training signal itself, not of the model: how noisy is a gradient estimator?

Distribution-matching objectives differ in variance, not in expectation: DPG and GDC++ estimate
the same gradient of KL(p‖π), but GDC++ subtracts a baseline whose expectation is zero, and the
reason to prefer it is that its per-sample gradients scatter less around their mean. Loss curves
do not show that; this module measures it directly, so that a claim like "GDC++ lowers gradient
variance" can be checked on a batch (tests, benchmarks, reports) rather than taken on trust.

The per-sample gradients are computed one backward pass per sample, so this is a diagnostic for
small models and batches (toy models, or a few dozen samples of a LoRA policy), not something to
run every training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayesalign.models import LanguageModel
from bayesalign.objectives import Batch, Objective


@dataclass(frozen=True)
class GradientStats:
    """Statistics of the per-sample gradients g_i = ∇θ loss_i over one batch.

    ``mean`` is the flattened mean gradient (1/n)·Σ g_i over the trainable parameters (the
    direction an optimizer step follows); ``variance`` is (1/n)·Σ‖g_i‖² − ‖mean‖², the trace of
    the per-sample covariance (how much one sample's gradient scatters around the mean).
    """

    mean: torch.Tensor
    mean_sq_norm: float
    variance: float
    n: int


def gradient_variance(
    policy: LanguageModel, objective: Objective, batch: Batch, *, hidden: bool = False
) -> GradientStats:
    """Per-sample gradient statistics of ``objective`` on ``batch`` w.r.t. the policy's trainable weights.

    The objective sees the whole batch (as in training; prepared, if it has a ``prepare`` hook),
    and each sample's loss is then differentiated on its own. ``hidden``: pass the policy's
    hidden states (objectives with a value head). The policy's ``.grad`` fields are left untouched.
    """
    params = [p for p in policy.module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    n = len(batch)
    if n == 0:
        raise ValueError("cannot compute gradient statistics on an empty batch")
    losses = objective.per_sample_loss(batch, objective.view_policy(policy, batch, hidden=hidden))
    if losses.shape != (n,):
        raise ValueError(f"{objective.name}: per_sample_loss returned shape {tuple(losses.shape)} for {n}")
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    sq_norms = 0.0
    for i in range(n):
        grads = torch.autograd.grad(losses[i], params, retain_graph=i < n - 1, allow_unused=True)
        flat = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1)
                for g, p in zip(grads, params, strict=True)
            ]
        ).double()
        if not torch.isfinite(flat).all():
            raise FloatingPointError(f"{objective.name}: the gradient of sample {i} is not finite")
        total += flat.cpu()
        sq_norms += float(flat @ flat)
    mean = total / n
    mean_sq_norm = sq_norms / n
    return GradientStats(
        mean=mean, mean_sq_norm=mean_sq_norm, variance=mean_sq_norm - float(mean @ mean), n=n
    )
