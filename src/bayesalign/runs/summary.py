"""The numbers a run's before/after summary shows, whoever prints them (the demo's closing
table, run_summary.py; the table at the top of the HTML report, bayesalign.report): which
evaluations are compared (the first; the last; with training.keep_best the one final/ holds) and
each metric's value at each, exact where the run enumerated it, else the estimate ± s.e."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from bayesalign.runs import metric_names
from bayesalign.runs.folder import RunFolder


@dataclass(frozen=True)
class Cell:
    """One metric at one evaluation: ``exact`` values have no standard error."""

    value: float
    stderr: float | None
    exact: bool

    def text(self, digits: str = ".4g", exact_mark: str = " exact", stderr_digits: str = ".2g") -> str:
        if self.exact:
            return f"{self.value:{digits}}{exact_mark}"
        error = f" ± {self.stderr:{stderr_digits}}" if self.stderr is not None else ""
        return f"{self.value:{digits}}{error}"


def cell(record: dict, key: str, exact: bool = True) -> Cell | None:
    """``key`` at ``record``: ``exact_<key>`` when ``exact`` and the record holds it, else the
    estimate with ``<key>_stderr``; None when absent or nan (e.g. the frontier excess at π = a)."""
    value = record.get(metric_names.exact(key)) if exact else None
    if value is not None and not _nan(value):
        return Cell(float(value), None, True)
    value = record.get(key)
    if value is None or _nan(value):
        return None
    stderr = record.get(f"{key}_stderr")
    return Cell(float(value), None if stderr is None or _nan(stderr) else float(stderr), False)


def _nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def kept_step(run: RunFolder) -> int | None:
    """The step of the evaluated π that final/ holds when the run used training.keep_best (its
    final/selection.json), else None."""
    selection = run.final / "selection.json"
    return json.loads(selection.read_text())["step"] if selection.exists() else None


def columns(run: RunFolder, records: list[dict]) -> list[tuple[str, dict]]:
    """(heading, record) of the evaluations a summary compares: the first (π = a), the last, and
    with training.keep_best the kept one when it is not the last."""
    first, last = records[0], records[-1]
    chosen = kept_step(run)
    found = [("first", first)]
    if last is not first:
        found.append(("last" if chosen is None or chosen != last["step"] else "last = kept best", last))
    kept = next((r for r in records if r["step"] == chosen), None)
    if kept is not None and kept is not last:
        found.append(("kept best (final/)", kept))
    return found


def rows(records: list[dict]) -> list[str]:
    """The metrics a summary shows, in order: the headline ones that move with π, then the
    scores of π under the target's scorers (constants of the target: `constants`)."""
    held = {k.removeprefix(metric_names.EXACT_PREFIX) for r in records for k in r}
    keys = [k for k in metric_names.HEADLINE if not metric_names.is_target_constant(k)]
    keys += metric_names.reward_scores(held)
    return [k for k in keys if k in held]


def constants(records: list[dict]) -> list[tuple[str, Cell]]:
    """The target's constants the run measured (KL(p‖a), on q's samples and on the pool), each
    once: the exact value where known, else the last evaluation's estimate."""
    found = []
    for key in (metric_names.KL_P_A, metric_names.POOL_KL_P_A):
        if (value := cell(records[-1], key)) is not None:
            found.append((key, value))
    return found
