"""The runs a report is built from: each folder's label, RunFolder and records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from bayesalign.runs import RunFolder


class ReportError(ValueError):
    """A folder that holds no run (no metrics.jsonl), named."""


class Run(NamedTuple):
    label: str
    folder: RunFolder
    records: list[dict]


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    if not paths:
        raise ReportError("no run folder given")
    runs = []
    for path in paths:
        folder = RunFolder(path, writable=False)
        records = folder.read_metrics()
        if not records:
            raise ReportError(f"{folder.path} holds no run: no records in metrics.jsonl")
        runs.append(Run(str(folder.path), folder, records))
    return runs


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
