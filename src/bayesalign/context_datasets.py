"""Rows of a Hugging Face ``datasets`` dataset, for contexts (contexts.py): a local file in a
format ``datasets`` reads (.parquet, .csv, .json, .arrow), a folder written by ``save_to_disk``,
or a hub dataset id. ``datasets`` is imported only here, and only when such a source is named:
.txt and .jsonl contexts never need it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# file suffix -> the `datasets` builder that reads it (.jsonl stays with contexts.py's reader,
# whose errors name the line)
BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".arrow": "arrow"}


class DatasetSourceError(ValueError):
    """A dataset that cannot be read as asked (missing, malformed, no such split or column)."""


def read_rows(source: str, field: str, split: str, *, hub: bool) -> list[dict[str, Any]]:
    """Every row of ``source`` (split ``split``) as a dict, after checking that it has the
    column ``field``. ``source`` is a local file or folder, or, with ``hub``, a hub dataset id."""
    data = _read(source, split, hub)
    columns = list(data.column_names)
    if field not in columns:
        raise DatasetSourceError(
            f"{source} has no column {field!r} (set contexts.field); its columns: {', '.join(columns)}"
        )
    return data.to_list()


def _read(source: str, split: str, hub: bool) -> Any:
    """The dataset (one split) at ``source``. Every failure of ``datasets`` becomes one
    DatasetSourceError: a malformed file or an unknown split is the user's to fix."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"reading contexts from {source} needs datasets: pip install 'bayesalign[corpus]'"
        ) from err
    path = Path(source).expanduser()
    if not path.exists() and not hub:
        raise DatasetSourceError(
            f"{source!r} is no local file or folder, and reading datasets from the Hugging Face Hub is "
            "off: set contexts.hub: true (or HF_HUB_OFFLINE=0) to download it"
        )
    with _quiet(datasets):
        try:
            if path.is_dir():
                data = datasets.load_from_disk(str(path))
            elif path.is_file():
                data = datasets.load_dataset(BUILDERS[path.suffix], data_files=str(path), split=split)
            else:
                data = datasets.load_dataset(source, split=split)
        except Exception as err:  # the user's file, folder or id: what datasets says, in one line
            if "corresponds to no data" in str(err):  # how datasets 3-5 say that a split is empty
                raise DatasetSourceError(
                    f"{source} holds no context (its split {split!r} is empty)"
                ) from None
            raise DatasetSourceError(f"{source}: datasets cannot read it: {_root_cause(err)}") from None
    if isinstance(data, datasets.DatasetDict):  # a save_to_disk folder of several splits
        if split not in data:
            raise DatasetSourceError(
                f"{source} has no split {split!r} (set contexts.split); its splits: {', '.join(data)}"
            )
        data = data[split]
    return data


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost error: datasets wraps a parser's precise message
    ("Error tokenizing data ... line 3") in a generic one ("An error occurred while generating")."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


@contextlib.contextmanager
def _quiet(datasets: Any) -> Iterator[None]:
    """No progress bars from ``datasets`` while reading: they would break the run's own lines."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()
