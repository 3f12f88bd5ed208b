"""The run folder: resolved config, metrics.jsonl, sampled texts, checkpoints and final/.

Every file is written so that a crash at any moment (kill -9, a full disk, a power cut) leaves
it readable: rewrites are atomic (bayesalign.atomic), metrics are appended one fsynced line at a
time and a torn last line is dropped with a warning, and a lock keeps a second process out.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from pathlib import Path
from typing import IO

import yaml

from bayesalign.atomic import append_line, write_atomic


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (in use, damaged, not a run), named."""


class RunFolderWarning(UserWarning):
    """Something in a run folder was repaired or skipped (a torn line, a damaged checkpoint)."""


def _jsonable(value: float | int | bool | str | None) -> float | int | bool | str | None:
    """JSON has no NaN/inf: write them as null so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# The names a run writes into its folder: a non-empty folder with anything else is the user's.
RUN_ENTRIES = frozenset(
    {
        ".lock",
        "config.yaml",
        "target.json",
        "metrics.jsonl",
        "samples",
        "checkpoints",
        "final",
        "report.html",
        "frontier.json",
        "best.safetensors",
        "tensorboard",
        "wandb",
        "mlflow.db",
        "mlflow-artifacts",
    }
)


class RunFolder:
    """Layout::

    config.yaml        the resolved configuration (every default filled in)
    target.json        the target, and the fitted λ of its distributional constraints (if any)
    metrics.jsonl      one JSON object per evaluation
    samples/step_N.jsonl   texts sampled from π at each evaluation, with their scores
    checkpoints/step_N/    resumable state (the newest `keep` are kept)
    final/             save_pretrained output (safetensors) + tokenizer (+ selection.json: which
                       evaluated π it is, with training.keep_best)
    frontier.json      the KL frontier of the target's evidence (runs with a posterior pool)
    best.safetensors   the trainable weights of the best evaluated π so far (training.keep_best)
    .lock              held (flock) by the process writing the run; holds its PID

    Every process of a multi-process run runs the same loop, and all of them read the folder (a
    checkpoint to resume from); only the main one writes it: on the others (``writable=False``)
    the writing methods do nothing.
    """

    def __init__(self, path: str | Path, *, writable: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        self.final = self.path / "final"
        self.metrics_file = self.path / "metrics.jsonl"
        self.config_file = self.path / "config.yaml"
        self.target_file = self.path / "target.json"
        self.lock_file = self.path / ".lock"
        self._lock: IO[str] | None = None

    def create(self) -> RunFolder:
        if not self.writable:
            return self
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a folder; choose another --out")
        for folder in (self.path, self.checkpoints, self.samples):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    # -- who may write ---------------------------------------------------------------------------
    def lock(self) -> RunFolder:
        """Take the folder for this process, or refuse naming the process that holds it. The
        lock is an flock on ``.lock``: the kernel releases it when its holder exits or is killed,
        so a crashed run never leaves the folder locked."""
        if not self.writable or self._lock is not None:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        handle = self.lock_file.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(
                f"{self.path} is in use by another process (PID {holder}); wait for it to finish, "
                "or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle
        return self

    def unlock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def holds_run(self) -> bool:
        """Records or a checkpoint: something a fresh start would destroy."""
        return bool(self.read_metrics(warn=False)) or bool(self.checkpoint_steps())

    def foreign_entries(self) -> list[str]:
        """Entries of the folder that no run writes: the folder is the user's, not a run's."""
        if not self.path.is_dir():
            return []
        names = (p.name for p in self.path.iterdir())
        return sorted(n for n in names if n not in RUN_ENTRIES and n.removesuffix(".tmp") not in RUN_ENTRIES)

    # -- files -----------------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        if not self.writable:
            return
        write_atomic(self.config_file, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def read_config(self) -> dict:
        try:
            raw = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as err:
            raise RunFolderError(f"{self.config_file} is damaged ({err}); it is not a config") from None
        if not isinstance(raw, dict):
            raise RunFolderError(f"{self.config_file} is damaged (empty or not a mapping)")
        return raw

    def write_target(self, target: dict) -> None:
        if not self.writable:
            return
        write_atomic(self.target_file, json.dumps(target, indent=1, ensure_ascii=False) + "\n")

    def read_target(self) -> dict | None:
        if not self.target_file.exists():
            return None
        try:
            return json.loads(self.target_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunFolderError(f"{self.target_file} is damaged ({err})") from None

    def log_metrics(self, record: dict) -> None:
        if not self.writable:
            return
        append_line(self.metrics_file, json.dumps({k: _jsonable(v) for k, v in record.items()}))

    def read_metrics(self, *, warn: bool = True) -> list[dict]:
        """Every record. A last line cut short (a crash or a full disk while appending it) is
        dropped, with a warning; a damaged line before it is an error, since records are
        appended in order and only the last write can be torn."""
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_bytes().split(b"\n")
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except (UnicodeDecodeError, json.JSONDecodeError):
                if any(rest.strip() for rest in lines[number:]):
                    raise RunFolderError(
                        f"{self.metrics_file}:{number} is damaged (not a JSON record), and records "
                        "follow it; remove that line to use the run"
                    ) from None
                if warn:
                    warnings.warn(
                        f"{self.metrics_file}: dropped an incomplete last line (line {number}, "
                        f"{len(line)} bytes): the run was interrupted while writing it",
                        RunFolderWarning,
                        stacklevel=2,
                    )
        return records

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records newer than a checkpoint we resume from (they will be recomputed), and a
        torn last line; the rewrite is atomic, so a crash here loses no record."""
        if not self.writable or not self.metrics_file.exists():
            return
        kept = [r for r in self.read_metrics() if r["step"] <= after_step]
        write_atomic(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))

    def write_samples(self, step: int, rows: list[dict]) -> None:
        if not self.writable:
            return
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_atomic(self.samples / f"step_{step:06d}.jsonl", text)

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:06d}"

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first (incomplete ones live under .tmp)."""
        if not self.checkpoints.is_dir():
            return []
        steps = []
        for p in self.checkpoints.glob("step_*"):
            number = p.name.removeprefix("step_")
            if p.is_dir() and number.isdigit():
                steps.append(int(number))
        return sorted(steps)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint."""
        steps = self.checkpoint_steps()
        return self.checkpoint_dir(steps[-1]) if steps else None
