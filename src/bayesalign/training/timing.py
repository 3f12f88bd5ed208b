"""Where a run's time goes: wall and CPU seconds of each phase of the training step, averaged
over the steps since the last record and written with it (``time_<phase>_wall``,
``time_<phase>_cpu``), so that any run's metrics.jsonl shows what to speed up. CPU seconds
count every thread of the process, so with several threads they exceed the wall seconds."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseClock:
    """``with clock("draw"): ...`` adds that block's seconds to the phase; `take` returns the
    per-step means since the last call and starts over."""

    def __init__(self) -> None:
        self._wall: dict[str, float] = defaultdict(float)
        self._cpu: dict[str, float] = defaultdict(float)
        self.steps = 0

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._wall[phase] += time.perf_counter() - wall
            self._cpu[phase] += time.process_time() - cpu

    def take(self) -> dict[str, float]:
        steps = max(self.steps, 1)
        out = {}
        for phase in self._wall:
            out[f"time_{phase}_wall"] = self._wall[phase] / steps
            out[f"time_{phase}_cpu"] = self._cpu[phase] / steps
        self._wall.clear()
        self._cpu.clear()
        self.steps = 0
        return out
