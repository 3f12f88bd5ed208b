"""What every objective sees: a batch of samples from the proposal q with their log-weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from bayesalign.models import Samples
from bayesalign.targets import Evidence


@dataclass
class Batch:
    """Samples x ~ q with log q(x) (sampling distribution), log P(x), the evidence, and the
    current estimate of log Z. All detached, float64."""

    samples: Samples
    log_q: torch.Tensor
    log_target: torch.Tensor
    evidence: Evidence
    log_z: float

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, index: torch.Tensor) -> Batch:
        return Batch(
            samples=self.samples.select(index),
            log_q=self.log_q[index],
            log_target=self.log_target[index],
            evidence=self.evidence.select(index),
            log_z=self.log_z,
        )

    @property
    def normalised_weights(self) -> torch.Tensor:
        """p(x)/q(x) = P(x)/(Z·q(x)) with the running Z; exactly 0 where P(x) = 0."""
        return torch.exp(self.log_target - self.log_q - self.log_z)


class Objective(Protocol):
    """A loss per sample; the loop averages it over the minibatch and back-propagates.

    Optional methods, which the loop looks for by capability, never by the objective's name:

    - ``check_target(target)``: raise, before any sampling, if the objective cannot work with
      this target (e.g. reverse KL towards a target with P(x) = 0 somewhere).
    - ``after_update()``: called after every optimizer update, for running statistics (a
      moving-average baseline) that must advance once per update, not once per micro-batch.
    - ``state_dict()`` / ``load_state_dict(state)``: state (a dict of tensors) that a resumed
      run needs to continue exactly; checkpoints save and restore it. Each instance owns its
      state: objectives are built per run, never shared.
    """

    name: str

    def per_sample_loss(self, batch: Batch, log_pi: torch.Tensor) -> torch.Tensor:
        """``log_pi``: differentiable log π(x) for the batch's samples, shape [B]."""
        ...
