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


def test_heartbeat_prints_the_phase_and_eta_off_a_terminal():
    import io
    import time

    from rich.console import Console

    from bayesalign.progress import Heartbeat

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with Heartbeat(console, total=10, every=0.05) as beat:
        beat.update(phase="sampling 128 from π", done=2)
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert "step 2/10" in lines[-1] and "sampling 128 from π" in lines[-1] and "ETA" in lines[-1]
    time.sleep(0.15)
    assert len(out.getvalue().splitlines()) == len(lines)  # stopped with the block


def test_a_heartbeat_without_steps_prints_the_phase_alone():
    import io
    import time

    from rich.console import Console

    from bayesalign.progress import Heartbeat

    out = io.StringIO()
    with Heartbeat(Console(file=out, force_terminal=False, width=200), total=0, every=0.05) as beat:
        beat.update(phase="scoring π on the posterior pool")
        time.sleep(0.3)
    last = out.getvalue().splitlines()[-1]
    assert "] scoring π on the posterior pool (0s in this phase)" in last and "step" not in last


def test_a_phase_that_counts_its_parts_gets_its_own_eta():
    """The ETA of a counted phase comes from its rate since it began, not counting parts done
    before it began (chunks read from a cache): 2 parts in 20 s, 6 to go → 60 s."""
    import io

    from rich.console import Console

    from bayesalign.progress import Heartbeat

    now = [100.0]
    beat = Heartbeat(Console(file=io.StringIO(), force_terminal=False), total=0, every=10)
    beat._clock = lambda: now[0]
    beat.update(phase="training")
    beat.update(phase="drawing prior samples", part=(4, 12))  # 4 chunks came from the cache
    assert beat.line().endswith("drawing prior samples 4/12, ETA of this phase ?")
    now[0] += 20
    beat.update(phase="drawing prior samples", part=(6, 12))
    line = beat.line()
    assert line.endswith("drawing prior samples 6/12, ETA of this phase 60s") and "step" not in line
    beat.update(phase="tilt fit", part=(0, 125))  # a new phase starts its own clock
    now[0] += 5
    assert beat.line().endswith("tilt fit 0/125, ETA of this phase ?")
    beat.update(phase="scoring π on the posterior pool")  # uncounted: the seconds spent in it
    now[0] += 7
    assert beat.line().endswith("scoring π on the posterior pool (7s in this phase)")


def test_a_heartbeat_line_is_one_line_on_a_narrow_console():
    """A redirected log has a console 80 columns wide; a long phase must not wrap mid-line."""
    import io
    import time

    from rich.console import Console

    from bayesalign.progress import Heartbeat

    out = io.StringIO()
    with Heartbeat(Console(file=out, force_terminal=False, width=40), total=0, every=0.05) as beat:
        beat.update(phase="drawing prior samples in chunks of 256, 2 processes", part=(3, 10))
        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert lines and all(line.endswith("3/10, ETA of this phase ?") for line in lines)


def test_heartbeat_is_silent_on_a_terminal():
    import io
    import time

    from rich.console import Console

    from bayesalign.progress import Heartbeat

    out = io.StringIO()
    with Heartbeat(Console(file=out, force_terminal=True), total=3, every=0.05):
        time.sleep(0.2)
    assert out.getvalue() == ""
