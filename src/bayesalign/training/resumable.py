"""What a training run saves and puts back, so that an interrupted run resumes exactly: the
trainer's side of checkpoints (training/checkpoint.py reads and writes the files).

A mixin of `Trainer`: these methods read and replace the trainer's weights, optimizer, scheduler,
generators, proposal and objective state, which the annotations below name."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from bayesalign.models import LanguageModel
from bayesalign.objectives import Objective
from bayesalign.runs import RunFolder
from bayesalign.training.args import CheckpointArgs
from bayesalign.training.averaging import WeightAverage
from bayesalign.training.buffer import SampleBuffer
from bayesalign.training.checkpoint import CheckpointData, newest_checkpoint, save_checkpoint
from bayesalign.training.distributed import Distributed
from bayesalign.training.state import (
    BestPolicy,
    TrainState,
    copy_weights,
    full_optimizer_state,
    shard_optimizer_state,
    trainable_weights,
)


class Resumable:
    """Checkpoint and resume for `Trainer` (its attributes, set in ``Trainer.__init__``)."""

    policy: LanguageModel
    proposal: LanguageModel
    objective: Objective
    state: TrainState
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    eval_generator: torch.Generator
    run: RunFolder | None
    best: BestPolicy | None
    checkpoints: CheckpointArgs
    dist: Distributed
    average: WeightAverage | None
    buffer: SampleBuffer | None

    def resume(self) -> bool:
        """Continue from the run folder's newest usable checkpoint (a damaged newer one is
        skipped with a warning); False when there is none, and then the records of the
        interrupted first steps are dropped too, so that the run starts over cleanly."""
        if self.run is None:
            return False
        found = newest_checkpoint(self.run)
        folder = found[0] if found is not None else None
        if found is not None:
            self.load_state_dict(found[1], folder)
        self.run.truncate_metrics(self.state.step if folder is not None else -1)
        if folder is not None and self.best is not None:
            self.best.reload(self.state)
        return folder is not None

    def state_dict(self) -> CheckpointData:
        """Everything a resumed run needs to continue exactly (training/checkpoint.py writes it)."""
        extra = {
            "optimizer": full_optimizer_state(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "eval_generator": self.eval_generator.get_state(),
        }
        if objective_state := self.objective.state_dict():
            extra["objective"] = objective_state
        if self.average is not None:
            extra["average"] = self.average.state_dict()
        if self.buffer is not None:
            extra["buffer"] = self.buffer.state_dict()
        proposal = trainable_weights(self.proposal, self.policy) if self.state.proposal_is_copy else None
        return CheckpointData(
            trainable_weights(self.policy, self.policy), proposal, asdict(self.state), extra
        )

    def load_state_dict(self, data: CheckpointData, folder: Path | str = "the checkpoint") -> None:
        """Put a `state_dict` back. An objective and a checkpoint that disagree on whether there
        is objective state are refused rather than resumed with a reset (or ignored) state."""
        objective_state, name = data.extra.get("objective"), self.objective.name
        keeps = bool(self.objective.state_dict())
        if objective_state and not keeps:
            raise ValueError(f"checkpoint {folder} holds objective state, but objective {name} keeps none")
        if keeps and not objective_state:
            raise ValueError(f"checkpoint {folder} holds no state for objective {name}, which keeps some")
        copy_weights(self.policy, data.policy)
        self.state = TrainState(**data.state)
        if data.proposal is not None:
            self.proposal = self.policy.frozen_copy()
            copy_weights(self.proposal, data.proposal)
        self.optimizer.load_state_dict(data.extra["optimizer"])
        shard_optimizer_state(self.optimizer)
        self.scheduler.load_state_dict(data.extra["scheduler"])
        self.generator.set_state(data.extra["generator"])
        self.eval_generator.set_state(data.extra["eval_generator"])
        if objective_state:
            self.objective.load_state_dict(objective_state)
        optional = (
            ("buffer", self.buffer, "training.sample_buffer", "samples are kept"),
            ("average", self.average, "training.average_weights", "π's weights are averaged"),
        )
        for key, part, setting, what in optional:  # a part the run's settings switch on or off
            if (part is None) != (key not in data.extra):
                raise ValueError(
                    f"checkpoint {folder} and {setting} disagree on whether {what}; resume with "
                    "the setting the run started with"
                )
            if part is not None:
                part.load_state_dict(data.extra[key])

    def _save_checkpoint(self, folder: Path) -> None:
        """Write a checkpoint (on the main process; under FSDP every process calls this, since
        reading sharded weights is collective)."""
        loadable = self.policy.unsharded() if self.checkpoints.loadable else None
        data = self.state_dict()
        if self.dist.is_main:
            save_checkpoint(folder, data, self.checkpoints.keep, loadable)
