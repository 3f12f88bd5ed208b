"""Checkpoints: everything needed to continue a run exactly where it stopped, and (with
``checkpoint.loadable``, the default) the policy as a Hugging Face folder beside it, so that
``from_pretrained`` (``PeftModel.from_pretrained`` for a LoRA adapter) loads any checkpoint.

A checkpoint is written to ``step_N.tmp``, every file fsynced, and renamed when complete; older
checkpoints are deleted only after that, so a crash never loses a finished checkpoint. Weights
are stored with safetensors; the rest (optimizer, scheduler, random generators) with
``torch.save`` and read back with ``weights_only=True``. An objective that keeps state
(``state_dict``/``load_state_dict``, e.g. f-DPG's moving-average baseline) has it saved there too,
whatever the objective is.

``checksums.json`` (written last) holds the SHA-256 of every file: a checkpoint damaged after
the fact (a truncated copy, a disk error) is recognised before anything is loaded from it, and
resuming falls back to the previous one, which ``checkpoint.keep`` retains for exactly this.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from bayesalign.atomic import fsync_dir, fsync_file
from bayesalign.training.run import RunFolder, RunFolderError, RunFolderWarning

if TYPE_CHECKING:
    from bayesalign.models import LanguageModel
    from bayesalign.training.trainer import Trainer

CHECKSUMS = "checksums.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back (damaged, truncated, incomplete), named."""


def trainable_names(model: LanguageModel) -> list[str]:
    return [n for n, p in model.module.named_parameters() if p.requires_grad]


def _save_params(model: LanguageModel, names: list[str], path: Path) -> None:
    params = dict(model.module.named_parameters())
    save_file({n: params[n].detach().contiguous().cpu() for n in names}, str(path))


def _copy_params(model: LanguageModel, values: dict[str, torch.Tensor]) -> None:
    params = dict(model.module.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
    files = sorted(tmp.iterdir())
    (tmp / CHECKSUMS).write_text(json.dumps({p.name: _sha256(p) for p in files}, indent=1))
    for path in tmp.iterdir():
        fsync_file(path)
    fsync_dir(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    fsync_dir(folder.parent)
    older = sorted(p for p in folder.parent.glob("step_*") if p.is_dir() and p.suffix != ".tmp")
    for stale in older[:-keep]:
        shutil.rmtree(stale)


@dataclass
class CheckpointData:
    """A checkpoint read into memory and verified, before any of it touches the trainer."""

    policy: dict[str, torch.Tensor]
    proposal: dict[str, torch.Tensor] | None
    state: dict[str, Any]
    extra: dict[str, Any]


def _verify(folder: Path) -> None:
    """Compare every file with the checksums written with it (checkpoints written before
    checksums existed are verified by reading them)."""
    listed = folder / CHECKSUMS
    if not listed.exists():
        return
    try:
        sums = json.loads(listed.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{CHECKSUMS} is damaged ({err})") from None
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{name} is missing")
        if _sha256(path) != expected:
            raise CheckpointError(f"{name} does not match its checksum (truncated or damaged)")


def read_checkpoint(folder: Path) -> CheckpointData:
    """Every file of ``folder``, verified; a CheckpointError names the file that is not usable."""
    _verify(folder)
    reading = "policy.safetensors"
    try:
        policy = load_file(str(folder / reading))
        reading = "state.json"
        state = json.loads((folder / reading).read_text())
        proposal = None
        if state.get("proposal_is_copy"):
            reading = "proposal.safetensors"
            proposal = load_file(str(folder / reading))
        reading = "trainer.pt"
        extra = torch.load(folder / reading, weights_only=True)
    except Exception as err:  # any reader's failure on a damaged file means the same here
        raise CheckpointError(f"{reading} is unreadable ({type(err).__name__}: {err})") from None
    return CheckpointData(policy, proposal, state, extra)


def load_checkpoint(trainer: Trainer, folder: Path) -> None:
    """Restore ``trainer`` from ``folder``; nothing is changed when the checkpoint is unreadable."""
    apply_checkpoint(trainer, read_checkpoint(folder), folder)


def apply_checkpoint(trainer: Trainer, data: CheckpointData, folder: Path) -> None:
    from bayesalign.training.trainer import TrainState

    _copy_params(trainer.policy, data.policy)
    trainer.state = TrainState(**data.state)
    if data.proposal is not None:
        trainer.proposal = trainer.policy.frozen_copy()
        _copy_params(trainer.proposal, data.proposal)
    extra = data.extra
    trainer.optimizer.load_state_dict(extra["optimizer"])
    trainer.scheduler.load_state_dict(extra["scheduler"])
    trainer.generator.set_state(extra["generator"])
    trainer.eval_generator.set_state(extra["eval_generator"])
    _load_objective_state(trainer, extra.get("objective"), folder)


def load_newest_checkpoint(trainer: Trainer, run: RunFolder) -> Path | None:
    """Restore the newest checkpoint that reads back whole, warning about each newer one that
    does not; None when the run has no checkpoint at all."""
    problems = []
    for step in reversed(run.checkpoint_steps()):
        folder = run.checkpoint_dir(step)
        try:
            data = read_checkpoint(folder)
        except CheckpointError as err:
            problems.append(f"{folder.name}: {err}")
            warnings.warn(f"skipped checkpoint {folder}: {err}", RunFolderWarning, stacklevel=2)
            continue
        apply_checkpoint(trainer, data, folder)
        return folder
    if problems:
        raise RunFolderError(
            f"no usable checkpoint in {run.checkpoints} ({'; '.join(problems)}); remove the folder "
            "checkpoints/ to start the run over"
        )
    return None


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
