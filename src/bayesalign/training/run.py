"""The run folder: resolved config, metrics.jsonl, sampled texts, checkpoints and final/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml


def _jsonable(value: float | int | bool | str | None) -> float | int | bool | str | None:
    """JSON has no NaN/inf: write them as null so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunFolder:
    """Layout::

    config.yaml        the resolved configuration (every default filled in)
    target.json        the target, and the fitted λ of its distributional constraints (if any)
    metrics.jsonl      one JSON object per evaluation
    samples/step_N.jsonl   texts sampled from π at each evaluation, with their scores
    checkpoints/step_N/    resumable state (the newest `keep` are kept)
    final/             save_pretrained output (safetensors) + tokenizer

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

    def create(self) -> RunFolder:
        if not self.writable:
            return self
        for folder in (self.path, self.checkpoints, self.samples):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, config: dict) -> None:
        if not self.writable:
            return
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def read_config(self) -> dict:
        return yaml.safe_load(self.config_file.read_text())

    def write_target(self, target: dict) -> None:
        if not self.writable:
            return
        self.target_file.write_text(json.dumps(target, indent=1, ensure_ascii=False) + "\n")

    def read_target(self) -> dict | None:
        return json.loads(self.target_file.read_text()) if self.target_file.exists() else None

    def log_metrics(self, record: dict) -> None:
        if not self.writable:
            return
        with self.metrics_file.open("a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records newer than a checkpoint we resume from (they will be recomputed)."""
        if not self.writable:
            return
        kept = [r for r in self.read_metrics() if r["step"] <= after_step]
        self.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write_samples(self, step: int, rows: list[dict]) -> None:
        if not self.writable:
            return
        with (self.samples / f"step_{step:06d}.jsonl").open("w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:06d}"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (incomplete ones live under a .tmp name)."""
        done = sorted(p for p in self.checkpoints.glob("step_*") if p.is_dir() and p.suffix != ".tmp")
        return done[-1] if done else None
