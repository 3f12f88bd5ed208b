"""Trajectory balance: GFlowNet fine-tuning of an LM towards p (Hu et al. 2023, "Amortizing
intractable inference in large language models"), in its VarGrad form.

For an autoregressive policy a sequence is its own trajectory, and trajectory balance asks
log Z + log π(x) = log P(x) for every x. Hu et al. minimise (log Z_θ + log π(x) − log P(x))² with
a learned scalar log Z_θ. Here log Z_θ is replaced by its optimum on each step's batch, the
mean of δ(x) = log P(x) − log π(x) (VarGrad, Richter et al. 2020; also in Hu et al.): the loss is
the batch variance of δ, whose gradient is that of Σ_i (δ_i − δ̄)² with δ̄ held fixed (its own
dependence cancels, since Σ_i (δ_i − δ̄) = 0): per sample (log π(x) − log P(x) + δ̄)², δ̄ detached.
No learning rate for log Z, no parameter outside the policy. δ̄ is computed once per step, on the
whole (gathered) batch with π before the step's updates, and held through its minibatches and
epochs, as a learned log Z would lag behind π.

Why it is worth having. The loss is zero exactly when log π − log P is constant on the samples,
i.e. π = p on the support of the proposal q, **for samples from any q**: no importance weights,
so samples of a, of an old proposal or of a replay need no correction and carry no weight
variance. On-policy (q = π) its gradient is that of KL(π‖p) (REINFORCE on log P − log π with the
batch mean as baseline); off-policy it is a different loss with the same minimiser.

Where P(x) = 0 (a pointwise constraint fails) log P = −∞ and the loss is infinite. ``min_log_b``
replaces such a b(x) = 0 by e^min_log_b: the target becomes p_ε ∝ a·max(b, ε), which puts mass
ε·(1 − Z)/(Z + ε·(1 − Z)) on the violators (about 1e-4 for ε = e^-10 and Z = 0.3) and otherwise
equals p. A constraint target without ``min_log_b`` is refused before any sampling.
"""

from __future__ import annotations

import torch

from bayesalign.objectives.base import Batch, Objective, PolicyOutput
from bayesalign.targets import Target


class TrajectoryBalance(Objective):
    """loss = (log π(x) − log P(x) + δ̄)², δ̄ = mean over the step's batch of log P − log π."""

    name = "tb"

    def __init__(self, min_log_b: float | None = None) -> None:
        if min_log_b is not None and not min_log_b < 0:
            raise ValueError(f"tb: min_log_b must be < 0 (log of the floor ε on b), got {min_log_b}")
        self.min_log_b = min_log_b
        self._metrics: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"TrajectoryBalance(min_log_b={self.min_log_b})"

    def check_target(self, target: Target) -> None:
        constraints = getattr(target, "constraints", ())
        if constraints and self.min_log_b is None:
            names = ", ".join(repr(c.scorer.name) for c in constraints)
            raise ValueError(
                f"tb: the target has pointwise constraints ({names}), so log P = −∞ wherever one "
                "fails and the squared loss is infinite there; set training.tb.min_log_b (e.g. -10: "
                "b = 0 counts as e^-10) or use gdc++"
            )

    def log_target(self, batch: Batch) -> torch.Tensor:
        """log P(x), with b = 0 floored at e^min_log_b (float64, on the CPU)."""
        if batch.log_target is None:
            raise ValueError("tb needs log P (the prior's pass), and the batch has none")
        if self.min_log_b is None:
            return batch.log_target
        log_a = batch.require_token_log_a(self.name).sum(-1).double()
        return torch.maximum(batch.log_target, log_a + self.min_log_b)

    def prepare(self, batch: Batch, old: PolicyOutput) -> Batch:
        delta = self.log_target(batch) - old.log_prob.detach().double().cpu()
        if not torch.isfinite(delta).all():
            raise ValueError("tb: log P − log π is not finite on some sample (a b = 0 without min_log_b?)")
        mean = delta.mean()
        self._metrics = {"tb_log_z": mean.item(), "tb_std": delta.std().item() if len(delta) > 1 else 0.0}
        return batch.with_extras(tb_offset=(self.log_target(batch) - mean))

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        log_pi = out.log_prob
        return (log_pi - batch.extras["tb_offset"].to(log_pi)) ** 2

    def step_metrics(self) -> dict[str, float]:
        return self._metrics
