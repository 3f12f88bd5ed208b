"""Checkpoints: everything needed to continue a run exactly where it stopped, and (with
``checkpoint.loadable``, the default) the policy as a Hugging Face folder beside it, so that
``from_pretrained`` (``PeftModel.from_pretrained`` for a LoRA adapter) loads any checkpoint.

A checkpoint is written to ``step_N.tmp`` and renamed when complete, and older checkpoints are
deleted only after that, so a crash never loses a finished checkpoint. Weights are stored with
safetensors; the rest (optimizer, scheduler, random generators) with ``torch.save`` and read
back with ``weights_only=True``. An objective that keeps state (``state_dict``/``load_state_dict``,
e.g. f-DPG's moving-average baseline) has it saved there too, whatever the objective is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from bayesalign.models import LanguageModel
    from bayesalign.training.trainer import Trainer


def trainable_names(model: LanguageModel) -> list[str]:
    return [n for n, p in model.module.named_parameters() if p.requires_grad]


def _save_params(model: LanguageModel, names: list[str], path: Path) -> None:
    params = dict(model.module.named_parameters())
    save_file({n: params[n].detach().contiguous().cpu() for n in names}, str(path))


def _load_params(model: LanguageModel, path: Path) -> None:
    params = dict(model.module.named_parameters())
    with torch.no_grad():
        for name, value in load_file(str(path)).items():
            params[name].copy_(value)


def save_checkpoint(trainer: Trainer, folder: Path, keep: int) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = trainable_names(trainer.policy)
    _save_params(trainer.policy, names, tmp / "policy.safetensors")
    if trainer.state.proposal_is_copy:
        _save_params(trainer.proposal, names, tmp / "proposal.safetensors")
    extra = {
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "generator": trainer.generator.get_state(),
        "eval_generator": trainer.eval_generator.get_state(),
    }
    if (objective_state := getattr(trainer.objective, "state_dict", None)) is not None:
        extra["objective"] = objective_state()
    torch.save(extra, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(trainer.state), indent=1))
    if trainer.config.checkpoint.loadable:  # beside the state: any checkpoint can be evaluated or served
        trainer.policy.save_pretrained(tmp, merge_lora=False)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    older = sorted(p for p in folder.parent.glob("step_*") if p.is_dir() and p.suffix != ".tmp")
    for stale in older[:-keep]:
        shutil.rmtree(stale)


def load_checkpoint(trainer: Trainer, folder: Path) -> None:
    from bayesalign.training.trainer import TrainState

    _load_params(trainer.policy, folder / "policy.safetensors")
    trainer.state = TrainState(**json.loads((folder / "state.json").read_text()))
    if trainer.state.proposal_is_copy:
        trainer.proposal = trainer.policy.frozen_copy()
        _load_params(trainer.proposal, folder / "proposal.safetensors")
    extra = torch.load(folder / "trainer.pt", weights_only=True)
    trainer.optimizer.load_state_dict(extra["optimizer"])
    trainer.scheduler.load_state_dict(extra["scheduler"])
    trainer.generator.set_state(extra["generator"])
    trainer.eval_generator.set_state(extra["eval_generator"])
    _load_objective_state(trainer, extra.get("objective"), folder)


def _load_objective_state(trainer: Trainer, state: dict | None, folder: Path) -> None:
    """Restore the objective's own state; a checkpoint and an objective that disagree on whether
    there is any are refused rather than resumed with a reset (or ignored) state."""
    load = getattr(trainer.objective, "load_state_dict", None)
    name = trainer.objective.name
    if load is None and state is not None:
        raise ValueError(f"checkpoint {folder} holds objective state, but objective {name} keeps none")
    if load is not None:
        if state is None:
            raise ValueError(f"checkpoint {folder} holds no state for objective {name}, which keeps some")
        load(state)
