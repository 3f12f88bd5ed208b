"""The training loop's state: its counters (`TrainState`, saved as JSON in every checkpoint),
the policy's trainable weights as plain tensors (for checkpoints), and the best evaluated
policy (`BestPolicy`, training.keep_best)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bayesalign import sharding
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
    π, has no trainable weights of its own), full, detached on the CPU. Collective under FSDP."""
    names = [n for n, p in policy.module.named_parameters() if p.requires_grad]
    sharding.gather(model.module)  # FSDP: the module now shows its full parameters
    params = dict(model.module.named_parameters())
    return {n: sharding.full(params[n]).detach().clone().contiguous().cpu() for n in names}


def copy_weights(model: LanguageModel, values: dict[str, torch.Tensor]) -> None:
    """Put full weights into ``model`` (into every process's shards under FSDP: collective)."""
    sharding.load_full_state(model.module, values)


def full_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer's ``state_dict()`` with FSDP's sharded moments made full (collective under
    FSDP), so that a checkpoint holds what a one-process run holds."""
    per_param = {
        index: {key: sharding.full(value) for key, value in moments.items()}
        for index, moments in state["state"].items()
    }
    return {**state, "state": per_param}


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict`` of a full state: cut each moment as its parameter is cut
    (a no-op without FSDP)."""
    for param, moments in optimizer.state.items():
        if not sharding.is_shard(param):
            continue
        for key, value in moments.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape == param.shape:
                moments[key] = sharding.like(value, param)


class BestPolicy:
    """training.keep_best: the trainable weights of the evaluated π with the lowest pool
    KL(p‖π) on the validation split so far (the first record is π = a, so the prior is a
    candidate). They are kept in memory and, with ``path``, in the run folder
    (best.safetensors, replaced atomically), so that a resumed run still knows them."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.weights: dict[str, torch.Tensor] | None = None

    def offer(self, state: TrainState, record: dict, policy: LanguageModel, *, write: bool) -> None:
        """Keep π's weights if the record's pool KL(p‖π) is the lowest so far."""
        kl = record.get("pool_kl_p_pi")
        if kl is None or not kl < state.best_kl:
            return
        state.best_kl, state.best_step = kl, state.step
        self.weights = trainable_weights(policy, policy)
        if self.path is not None and write:
            tmp = self.path.with_name(self.path.name + ".tmp")
            save_file(self.weights, str(tmp))
            tmp.replace(self.path)

    def reload(self, state: TrainState) -> None:
        """After a resume: the weights the run folder kept, if the restored state has a best."""
        if self.path is not None and state.best_step >= 0 and self.path.exists():
            self.weights = load_file(str(self.path))

    def restore(self, state: TrainState, policy: LanguageModel) -> dict | None:
        """Put the kept weights into π; returns what was chosen ({"step", "pool_kl_p_pi"}), or
        None when nothing is kept."""
        if self.weights is None:
            return None
        copy_weights(policy, self.weights)
        return {"step": state.best_step, "pool_kl_p_pi": state.best_kl}
