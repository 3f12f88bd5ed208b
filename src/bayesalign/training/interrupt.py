"""Ctrl-C and SIGTERM during training: finish the step, save a checkpoint, stop in one line.

A signal that arrives mid-step cannot be turned into a checkpoint on the spot: the optimizer may
have applied half a step. So the first SIGINT/SIGTERM only asks the loop to stop at the next
step boundary (where the state is whole); a second one interrupts at once, without saving.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal at a step boundary; ``checkpoint`` holds that step (None
    when nothing was trained yet, so there is nothing to keep)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        kept = f"checkpoint {checkpoint} saved; continue with --resume" if checkpoint else "nothing to keep"
        super().__init__(f"interrupted by {name} at step {step}: {kept}")


class StopRequest:
    """Set by the first signal; the loop reads ``signum`` between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def stop_at_step_boundary(enabled: bool) -> Iterator[StopRequest]:
    """While inside, SIGINT/SIGTERM set the request (and say so on stderr) instead of raising;
    a second signal raises KeyboardInterrupt. Signal handlers belong to the main
    thread, so elsewhere (or when not ``enabled``: several processes must stop together) the
    signals keep their usual effect."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: object) -> None:
        if request.signum is not None:
            raise KeyboardInterrupt
        request.signum = signum
        print(
            f"{signal.Signals(signum).name}: stopping after this step to save a checkpoint "
            "(send it again to quit at once, without one)",
            file=sys.stderr,
        )

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
