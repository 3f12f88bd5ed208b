"""The progress display of every long command (train, pretrain, sample, compare): a bar with
done/total, elapsed time, ETA and the headline metrics. Off a terminal (CI, a redirected log)
the bar is disabled, so logs hold no control codes; commands print their records as lines
there instead (see :func:`show_record`)."""

from __future__ import annotations

from collections.abc import Iterable

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
