"""The progress display of every long command (train, pretrain, sample, compare): a bar with
done/total, elapsed time, ETA and the headline metrics. Off a terminal (CI, a redirected log)
the bar is disabled, so logs hold no control codes; commands print their records as lines
there instead (see :func:`show_record`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from bayesalign.console import headline


class Status(Protocol):
    """What a long job reports as it goes: the phase, and how far into it (``done`` of ``total``)
    when the job can count its parts (chunks of a pool, samples featurised, ...), so that the
    display can give that phase an ETA."""

    def __call__(self, phase: str, done: int | None = None, total: int | None = None) -> None: ...


def quiet(phase: str, done: int | None = None, total: int | None = None) -> None:
    """The `Status` that shows nothing."""


def with_count(phase: str, done: int | None, total: int | None) -> str:
    """The phase as one line of text: ``phase done/total`` when counted."""
    return phase if total is None else f"{phase} {done or 0}/{total}"


class _PhaseColumn(ProgressColumn):
    """What runs now, last on the bar row and the one cut (with …) when the row is too wide:
    the bar and the times matter more."""

    def render(self, task: Task) -> Text:
        return Text(task.fields["phase"], no_wrap=True, overflow="ellipsis")


class _BarAndInfo(Progress):
    """The bar row (title, phase, bar, done/total, elapsed, ETA) alone on its line, so that it
    keeps its bar and ETA on an 80-column terminal; each task's ``info`` on the lines below."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            if task.fields.get("info"):
                yield Text("  " + task.fields["info"])


def progress_bar(console: Console, title: str) -> Progress:
    """A bar for one task with the fields ``phase`` (what runs now) and ``info`` (metrics)."""

    def fixed() -> Column:  # a column the table never narrows (only the phase gives way)
        return Column(no_wrap=True)

    return _BarAndInfo(
        TextColumn(f"[bold]{title}[/]", table_column=fixed()),
        BarColumn(bar_width=20, table_column=fixed()),
        MofNCompleteColumn(table_column=fixed()),
        TimeElapsedColumn(table_column=fixed()),
        TextColumn("ETA", table_column=fixed()),
        TimeRemainingColumn(table_column=fixed()),
        _PhaseColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def show_record(console: Console, label: str, record: dict, keys: tuple[str, ...]) -> None:
    """Print a record as one line when no bar is shown (non-TTY), so a log still tells progress:
    one line whatever the width, so that a log can be grepped and read as a table."""
    if not console.is_terminal:
        console.print(f"{label}: {headline(record, keys)}", highlight=False, soft_wrap=True)


class Heartbeat:
    """Off a terminal, a line every ``every`` seconds with the current phase, the progress and
    an ETA, so that a log redirected to a file still shows a long run is alive (a bar does
    that on a terminal). ``total`` counts training steps; ``None`` or 0 for work counted in
    phases only (an evaluation, a run of no steps): the line then holds no step count. A phase
    that counts its parts (`Status`'s done/total) gets its own ETA, from its rate since it began;
    one that does not, the seconds spent in it. A daemon thread; use it as a context manager."""

    def __init__(self, console: Console, total: int | None, every: float = 20.0) -> None:
        import threading
        import time

        self.console, self.total, self.every = console, total, every
        self.phase, self.done = "starting", 0
        self.part: tuple[int, int] | None = None  # the phase's done/total parts, when it counts them
        self._clock = time.perf_counter
        self._started = self._phase_started = self._clock()
        self._part_start = 0  # parts already done when the phase began (e.g. cached chunks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def update(
        self, *, phase: str | None = None, done: int | None = None, part: tuple[int, int] | None = None
    ) -> None:
        """A new phase (``part``: its parts done and in all, if it counts them) or steps done."""
        if phase is not None:
            if phase != self.phase or (part is None) != (self.part is None):
                self._phase_started, self._part_start = self._clock(), 0 if part is None else part[0]
            self.phase, self.part = phase, part
        self.done = done if done is not None else self.done

    def line(self) -> str:
        now = self._clock()
        elapsed, in_phase = now - self._started, now - self._phase_started
        if self.part is None:
            where = f"{self.phase} ({in_phase:.0f}s in this phase)"
        else:
            done, total = self.part
            rate = (done - self._part_start) / in_phase if in_phase > 0 else 0.0
            eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
            where = f"{self.phase} {done}/{total}, ETA of this phase {eta}"
        if not self.total:
            return f"[{elapsed:5.0f}s] {where}"
        eta = "?" if not self.done else f"{elapsed / self.done * (self.total - self.done):.0f}s"
        return f"[{elapsed:5.0f}s] step {self.done}/{self.total}, ETA {eta}: {where}"

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.console.print(self.line(), highlight=False, soft_wrap=True)  # one line, any width

    def __enter__(self) -> Heartbeat:
        if not self.console.is_terminal:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
