"""The training loop's state: its counters (`TrainState`, saved as JSON in every checkpoint),
and the policy's trainable weights as plain tensors, for checkpoints and for keeping the best
evaluated policy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bayesalign.models import LanguageModel


@dataclass
class TrainState:
    step: int = 0
    samples_seen: int = 0  # samples drawn from q for training and proposal checks
    z_log_sum: float = float("-inf")  # log Σ P/q over every sample drawn from a proposal
    z_count: int = 0
    proposal_updates: int = 0
    proposal_is_copy: bool = False  # q is a frozen copy of an earlier π (else a, or π itself)
    replay_position: int = 0  # training.replay_pool: pool rows consumed so far (over all passes)
    best_step: int = -1  # training.keep_best: the step of the best evaluated π (-1: none yet)
    best_kl: float = float("inf")  # ... and its pool KL(p‖π)
    last_check: dict[str, float] = field(default_factory=dict)  # repeated in later records

    @property
    def log_z(self) -> float:
        return self.z_log_sum - math.log(self.z_count) if self.z_count else float("nan")


def trainable_weights(model: LanguageModel, policy: LanguageModel) -> dict[str, torch.Tensor]:
    """``model``'s copies of the policy's trainable weights (q, when a frozen copy of an earlier
    π, has no trainable weights of its own), detached on the CPU."""
    names = [n for n, p in policy.module.named_parameters() if p.requires_grad]
    params = dict(model.module.named_parameters())
    return {n: params[n].detach().clone().contiguous().cpu() for n in names}


def copy_weights(model: LanguageModel, values: dict[str, torch.Tensor]) -> None:
    params = dict(model.module.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)
