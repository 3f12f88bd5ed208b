"""The progress display of every long command (train, pretrain, sample, compare): a bar with
done/total, elapsed time, ETA and the headline metrics. Off a terminal (CI, a redirected log)
the bar is disabled, so logs hold no control codes; commands print their records as lines
there instead (see :func:`show_record`)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console, title: str) -> Progress:
    """A bar for one task with the fields ``phase`` (what runs now) and ``info`` (metrics)."""
    return Progress(
        TextColumn(f"[bold]{title}[/] " + "{task.fields[phase]:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not console.is_terminal,
    )


def headline(record: dict, keys: tuple[str, ...]) -> str:
    """``key=value`` of the keys the record holds, in the given order."""
    return "  ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)


def show_record(console: Console, label: str, record: dict, keys: tuple[str, ...]) -> None:
    """Print a record as one line when no bar is shown (non-TTY), so a log still tells progress."""
    if not console.is_terminal:
        console.print(f"{label}: {headline(record, keys)}", highlight=False)
