"""Files that are either the old version or the new one, never a mix, after any crash.

A file is rewritten by writing a temporary sibling, flushing it to disk (fsync), and renaming it
over the original (``os.replace`` is atomic on POSIX); the folder is fsynced too, so that the
rename itself survives a power cut. A crash (kill -9, full disk) at any moment leaves either the
complete old file or the complete new one, plus at worst a stray ``.tmp`` sibling.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make the creation, rename or removal of entries in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one step: readers and crashes see all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write and fsync it: a crash leaves at most this line torn,
    at the end of the file, where a reader can recognise and drop it."""
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write (disk full) leaves a torn line; say so now
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
