"""Contexts c for conditional targets P_c(x) = a(x|c)·b(x, c): where they come from and how a
training step picks them (n contexts × m samples each, so every context of the step has enough
samples for its own normaliser Z_c)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bayesalign.context_datasets import BUILDERS, DatasetSourceError, read_rows
from bayesalign.preflight import looks_like_path


class ContextError(ValueError):
    """A contexts file or list that cannot be used, with the file and line named."""


class Context(str):
    """A context that also carries the other columns of its row (a .jsonl line's other keys, a
    dataset row's other columns), for scorers that ask for them (a ``callable`` with
    ``columns``). It is a str everywhere else, so sampling, grouping and checkpoints see only
    the text; rows whose texts are equal are one context to CDPG's normaliser Ẑ_c."""

    columns: dict[str, Any]

    def __new__(cls, text: str, columns: Mapping[str, Any]) -> Context:
        context = super().__new__(cls, text)
        context.columns = dict(columns)
        return context

    def __reduce__(self) -> tuple:  # pickled whole into scorer worker processes
        return Context, (str(self), self.columns)


def load_contexts(
    source: str | Path | Sequence[str], field: str = "context", *, split: str = "train", hub: bool = False
) -> list[str]:
    """Contexts from an inline list, a .txt file (one per line, blank lines skipped), a .jsonl
    file (the string ``field`` of every line's object), or a dataset that ``datasets`` reads (a
    .parquet/.csv/.json/.arrow file, a ``save_to_disk`` folder, or with ``hub`` a hub dataset
    id: the column ``field`` of split ``split``). Rows of .jsonl files and datasets become
    `Context` objects that carry their other columns."""
    if not isinstance(source, str | Path):
        contexts = list(source)
        where = "the inline list"
    else:
        path = Path(source).expanduser()
        where = str(source)
        if path.is_file() and path.suffix not in BUILDERS:
            if path.suffix == ".jsonl":
                contexts = [_jsonl_field(path, i, line, field) for i, line in _lines(path)]
            else:
                contexts = [line for _, line in _lines(path)]
        elif not path.exists() and (
            looks_like_path(str(source)) or path.suffix in (*BUILDERS, ".txt", ".jsonl")
        ):
            raise ContextError(f"contexts file {source} does not exist")
        else:
            try:
                rows = read_rows(str(source), field, split, hub=hub)
            except DatasetSourceError as err:
                raise ContextError(str(err)) from None
            contexts = [_row_context(row, field) for row in rows]
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
    return _row_context(record, field)


def _row_context(row: dict[str, Any], field: str) -> Any:
    """The row's ``field`` as a `Context` with the other columns; a value that is no text is
    returned as it is, for load_contexts to name."""
    text = row[field]
    return Context(text, {k: v for k, v in row.items() if k != field}) if isinstance(text, str) else text


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
