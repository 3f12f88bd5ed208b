"""Checkpoints: everything needed to continue a run exactly where it stopped, and (with
``checkpoint.loadable``, the default) the policy as a Hugging Face folder beside it, so that
``from_pretrained`` (``PeftModel.from_pretrained`` for a LoRA adapter) loads any checkpoint.

A checkpoint is written to ``step_N.tmp``, every file fsynced, and renamed when complete; older
checkpoints are deleted only after that, so a crash never loses a finished checkpoint. Weights
are stored with safetensors; the rest (optimizer, scheduler, random generators) with
``torch.save`` and read back with ``weights_only=True``. An objective that keeps state
(``state_dict``/``load_state_dict``, e.g. f-DPG's moving-average baseline) has it saved there too,
whatever the objective is.

This module reads and writes `CheckpointData` (dicts of tensors and plain values); what goes
into them, and how they are put back, is the trainer's (``Trainer.state_dict`` /
``Trainer.load_state_dict``).

``checksums.json`` (written last) holds the SHA-256 of every file: a checkpoint damaged after
the fact (a truncated copy, a disk error) is recognised before anything is loaded from it, and
resuming falls back to the previous one, which ``checkpoint.keep`` retains for exactly this.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bayesalign.atomic import fsync_dir, fsync_file
from bayesalign.models import LanguageModel
from bayesalign.runs import RunFolder, RunFolderError, RunFolderWarning

CHECKSUMS = "checksums.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back (damaged, truncated, incomplete), named."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CheckpointData:
    """A trainer's state as plain data: the trainable weights of π (and of q when q is a frozen
    copy of an earlier π), the loop's counters, and the optimizer, scheduler, generators and
    objective state (``extra``)."""

    policy: dict[str, torch.Tensor]
    proposal: dict[str, torch.Tensor] | None
    state: dict[str, Any]
    extra: dict[str, Any]


def save_checkpoint(
    folder: Path, data: CheckpointData, keep: int, policy: LanguageModel | None = None
) -> None:
    """Write ``data`` to ``folder`` (atomically: see above), and with ``policy`` the Hugging Face
    folder of it beside the state, so that any checkpoint can be evaluated or served. Then
    delete all but the newest ``keep`` checkpoints next to it."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(data.policy, str(tmp / "policy.safetensors"))
    if data.proposal is not None:
        save_file(data.proposal, str(tmp / "proposal.safetensors"))
    torch.save(data.extra, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(data.state, indent=1))
    if policy is not None:
        policy.save_pretrained(tmp, merge_lora=False)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())  # a twisted policy's folder nests
    sums = {p.relative_to(tmp).as_posix(): _sha256(p) for p in files}
    (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1))
    for path in [*files, tmp / CHECKSUMS]:
        fsync_file(path)
    for path in sorted({p.parent for p in files}, reverse=True):
        fsync_dir(path)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    fsync_dir(folder.parent)
    older = sorted(p for p in folder.parent.glob("step_*") if p.is_dir() and p.suffix != ".tmp")
    for stale in older[:-keep]:
        shutil.rmtree(stale)


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


def newest_checkpoint(run: RunFolder) -> tuple[Path, CheckpointData] | None:
    """The newest checkpoint that reads back whole, warning about each newer one that does not;
    None when the run has no checkpoint at all."""
    problems = []
    for step in reversed(run.checkpoint_steps()):
        folder = run.checkpoint_dir(step)
        try:
            data = read_checkpoint(folder)
        except CheckpointError as err:
            problems.append(f"{folder.name}: {err}")
            warnings.warn(f"skipped checkpoint {folder}: {err}", RunFolderWarning, stacklevel=2)
            continue
        return folder, data
    if problems:
        raise RunFolderError(
            f"no usable checkpoint in {run.checkpoints} ({'; '.join(problems)}); remove the folder "
            "checkpoints/ to start the run over"
        )
    return None
