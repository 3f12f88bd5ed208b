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


class Heartbeat:
    """Off a terminal, a line every ``every`` seconds with the current phase, the progress and
    an ETA, so that a log redirected to a file still shows a long run is alive (a bar does
    that on a terminal). A daemon thread; use it as a context manager."""

    def __init__(self, console: Console, total: int, every: float = 20.0) -> None:
        import threading
        import time

        self.console, self.total, self.every = console, total, every
        self.phase, self.done = "starting", 0
        self._clock = time.perf_counter
        self._started = self._clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def update(self, *, phase: str | None = None, done: int | None = None) -> None:
        self.phase = phase if phase is not None else self.phase
        self.done = done if done is not None else self.done

    def line(self) -> str:
        elapsed = self._clock() - self._started
        eta = "?" if not self.done else f"{elapsed / self.done * (self.total - self.done):.0f}s"
        return f"[{elapsed:5.0f}s] step {self.done}/{self.total}, ETA {eta}: {self.phase}"

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.console.print(self.line(), highlight=False)

    def __enter__(self) -> Heartbeat:
        if not self.console.is_terminal:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
