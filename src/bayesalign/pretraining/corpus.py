"""The documents of a pretraining corpus, from local files.

Three formats: ``files`` reads each file as one document (source files, one book per file);
``text`` and ``json`` go through Hugging Face ``datasets`` (its local "text" and "json"
loaders; nothing is fetched), which splits text files into paragraphs or lines and reads the
documents of JSON Lines files from one field of each record. With ``streaming`` the records are
read lazily, without building the Arrow cache, so that ``max_documents`` takes the head of a
corpus too large to load whole.

Every check (files exist, the JSON field exists) happens before the corpus is read.
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

CorpusFormat = Literal["files", "text", "json"]


class CorpusError(ValueError):
    """The corpus cannot be read as configured: a missing file, a field the records lack."""


def resolve_files(patterns: Sequence[str]) -> list[str]:
    """Paths from ``patterns`` (paths or glob patterns such as ``data/*.jsonl``), sorted within
    each pattern; a pattern that matches no file is an error."""
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise CorpusError(f"corpus file {pattern!r} does not exist (or matches no file)")
        files += matches
    return files


def load_documents(
    patterns: Sequence[str],
    format: CorpusFormat = "files",
    *,
    field: str = "text",
    sample_by: Literal["paragraph", "line"] = "paragraph",
    streaming: bool = False,
    max_documents: int | None = None,
) -> list[str]:
    """The non-empty documents of the corpus, in file order, at most ``max_documents``.

    ``text``: a document is a paragraph (text between blank lines) or a line of the files
    (``sample_by``); ``json``: a document is the ``field`` of each JSON Lines record.
    """
    files = resolve_files(patterns)
    if format == "files":
        texts: Iterable[str] = (_read_utf8(f) for f in files)
    elif format in ("text", "json"):
        texts = _dataset_texts(files, format, field, sample_by, streaming)
    else:
        raise CorpusError(f"unknown corpus format {format!r}; valid: files, text, json")
    documents = list(itertools.islice((t for t in texts if t and not t.isspace()), max_documents))
    if not documents:
        raise CorpusError(f"the corpus {', '.join(files)} holds no non-empty document")
    return documents


def _read_utf8(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise CorpusError(
            f"corpus file {path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x})"
        ) from None


def _dataset_texts(
    files: list[str], format: str, field: str, sample_by: str, streaming: bool
) -> Iterable[str]:
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise ImportError("corpus format text/json needs datasets: pip install 'bayesalign[corpus]'") from err
    options: dict[str, Any] = {"sample_by": sample_by} if format == "text" else {}
    dataset = load_dataset(format, data_files=files, split="train", streaming=streaming, **options)
    if format == "text":
        field = "text"  # the text loader's one column
    records = iter(dataset)
    first = next(records, None)
    if first is None:
        return []
    if field not in first:
        raise CorpusError(f"corpus field {field!r} is not in the JSON records; their fields: {sorted(first)}")
    for record in itertools.chain([first], records):
        value = record[field]
        if value is not None and not isinstance(value, str):
            raise CorpusError(
                f"corpus field {field!r} must hold text, got {type(value).__name__}: {value!r:.80}"
            )
        yield value or ""
