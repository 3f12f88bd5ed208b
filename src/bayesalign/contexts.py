"""Contexts c for conditional targets P_c(x) = a(x|c)·b(x, c): where they come from and how a
training step picks them (n contexts × m samples each, so every context of the step has enough
samples for its own normaliser Z_c)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch


class ContextError(ValueError):
    """A contexts file or list that cannot be used, with the file and line named."""


def load_contexts(source: str | Path | Sequence[str], field: str = "context") -> list[str]:
    """Contexts from an inline list, a .txt file (one per line, blank lines skipped) or a .jsonl
    file (the string ``field`` of every line's object)."""
    if not isinstance(source, str | Path):
        contexts = list(source)
        where = "the inline list"
    else:
        path = Path(source)
        if not path.is_file():
            raise ContextError(f"contexts file {path} does not exist")
        if path.suffix == ".jsonl":
            contexts = [_jsonl_field(path, i, line, field) for i, line in _lines(path)]
        else:
            contexts = [line for _, line in _lines(path)]
        where = str(path)
    if not contexts:
        raise ContextError(f"{where} holds no context")
    bad = [i for i, c in enumerate(contexts) if not isinstance(c, str) or not c]
    if bad:
        raise ContextError(f"{where}: context {bad[0]} is not a non-empty string: {contexts[bad[0]]!r}")
    return contexts


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise ContextError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x})") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def _jsonl_field(path: Path, number: int, line: str, field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ContextError(f"{path}:{number}: not JSON ({err.msg})") from None
    if not isinstance(record, dict) or field not in record:
        raise ContextError(f"{path}:{number}: no field {field!r} (set contexts.field)")
    return record[field]


def step_contexts(contexts: Sequence[str], per_step: int, n: int, generator: torch.Generator) -> list[str]:
    """The contexts of ``n`` samples: ``per_step`` distinct contexts drawn uniformly, each
    repeated n / per_step times (consecutively)."""
    if per_step > len(contexts):
        raise ContextError(f"{per_step} contexts per step, but only {len(contexts)} contexts")
    if n % per_step:
        raise ContextError(f"{n} samples do not split evenly over {per_step} contexts")
    chosen = torch.randperm(len(contexts), generator=generator)[:per_step].tolist()
    return [contexts[i] for i in chosen for _ in range(n // per_step)]


def evaluation_rows(contexts: Sequence[str], n: int) -> list[str]:
    """The contexts of an evaluation draw of about ``n`` samples: every evaluation context, the
    same every time, n // len(contexts) samples each (consecutively)."""
    return [c for c in contexts for _ in range(n // len(contexts))]


def group_by_context(contexts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Row indices of each distinct context, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(contexts):
        groups.setdefault(c, []).append(i)
    return {c: torch.tensor(rows) for c, rows in groups.items()}
