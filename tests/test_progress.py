"""The progress display: a live bar with ETA on a terminal; plain record lines without control
codes off a terminal (CI logs)."""

from __future__ import annotations

import io

from rich.console import Console

from bayesalign.progress import headline, progress_bar, show_record


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=160), out


def test_off_a_terminal_the_bar_is_silent_and_records_are_lines():
    con, out = console(terminal=False)
    with progress_bar(con, "train") as progress:
        task = progress.add_task("t", total=10, phase="step", info="")
        progress.update(task, completed=5, info="loss=1")
        show_record(con, "step 5", {"loss": 1.23456, "kl": 0.5, "other": 9}, ("loss", "kl"))
    assert out.getvalue() == "step 5: loss=1.235  kl=0.5\n"  # no bar, no escape codes


def test_on_a_terminal_the_bar_shows_progress_eta_and_metrics():
    con, out = console(terminal=True)
    with progress_bar(con, "pretrain") as progress:
        task = progress.add_task("t", total=8, phase="tokens", info="")
        progress.update(task, completed=4, info=headline({"misalignment": 0.25}, ("misalignment", "x")))
        show_record(con, "ignored", {"misalignment": 0.25}, ("misalignment",))  # the bar has it
    text = out.getvalue()
    assert "pretrain" in text and "4/8" in text and "ETA" in text and "misalignment=0.25" in text
    assert "ignored" not in text
