"""The report's tables, as HTML: the before/after summary of each run (runs.summary), the
samples of π, the timings (where the run's seconds went, phase by phase) and the warnings."""

from __future__ import annotations

import html
import json

from bayesalign.report.loading import Run, is_number
from bayesalign.runs import RunFolder, metric_names, summary

SAMPLE_ROWS = 12
#: the phases training/timing.py times, in the order of a step (then the evaluation)
PHASES = ("draw", "prepare", "forward_backward", "optimizer", "proposal_check", "evaluate")
#: phases whose record fields hold that record's own seconds, not a mean per step
ONCE_PER_RECORD = frozenset({"evaluate"})


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _cell(found: summary.Cell | None) -> str:
    if found is None:
        return "<td>–</td>"
    return (
        f"<td>{html.escape(found.text(exact_mark=''))}" + (" <i>exact</i>" if found.exact else "") + "</td>"
    )


def summary_table(run: Run) -> str:
    """The headline metrics (and π's scores) at the first, the last and, with training.keep_best,
    the kept evaluation: exact where the run enumerated them, else estimate ± s.e.; then the
    target's constants, once."""
    columns = summary.columns(run.folder, run.records)
    head = "".join(f"<th>{html.escape(name)} (step {r['step']})</th>" for name, r in columns)
    body = "".join(
        f"<tr><td>{html.escape(metric_names.title(key))}</td>"
        + "".join(_cell(summary.cell(r, key)) for _, r in columns)
        + "</tr>"
        for key in summary.rows(run.records)
    )
    constants = "; ".join(
        f"{html.escape(metric_names.title(key))} = {html.escape(found.text(exact_mark=''))}"
        + (" <i>exact</i>" if found.exact else " (last evaluation)")
        for key, found in summary.constants(run.records)
    )
    note = f"<p>constants of the target (they do not move with π): {constants}</p>" if constants else ""
    return f"<table class=summary><tr><th>metric</th>{head}</tr>{body}</table>{note}"


def sample_table(run: RunFolder) -> str:
    """The texts of π at the first and last evaluation, with their scores."""
    files = sorted(run.samples.glob("step_*.jsonl")) if run.samples.is_dir() else []
    if not files:
        return "<p>no samples were saved (eval.save_samples: 0)</p>"
    parts = []
    for path in dict.fromkeys([files[0], files[-1]]):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line][:SAMPLE_ROWS]
        columns = sorted({k for r in rows for k in r} - {"text"})
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["text", *columns])
        body = "".join(
            "<tr><td class=text>"
            + html.escape(str(r.get("text", "")))
            + "</td>"
            + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns)
            + "</tr>"
            for r in rows
        )
        step = int(path.stem.removeprefix("step_"))
        parts.append(f"<h4>step {step}</h4><table><tr>{head}</tr>{body}</table>")
    return "".join(parts)


def total_seconds(records: list[dict]) -> float | None:
    """The run's wall seconds in its training loop: each record's ``seconds`` counts from the
    start of the loop, which a resumed run restarts, so each stretch's last value is summed."""
    seen = [r["seconds"] for r in records if is_number(r.get("seconds"))]
    if not seen:
        return None
    ends = [a for a, b in zip(seen, seen[1:], strict=False) if b < a]  # a stretch ends before a restart
    return sum(ends) + seen[-1]


def phase_seconds(records: list[dict]) -> dict[str, tuple[float, float]]:
    """phase → (wall, CPU) seconds over the run, from the records' ``time_<phase>_wall``/``_cpu``:
    means per step over the steps since the previous record (so × those steps), except
    ``evaluate``'s, which are that record's own evaluation."""
    totals: dict[str, list[float]] = {}
    previous = 0
    for record in records:
        steps = record.get("step", 0) - previous
        previous = record.get("step", 0)
        for key, value in record.items():
            if not (key.startswith("time_") and key.endswith(("_wall", "_cpu")) and is_number(value)):
                continue
            phase, _, kind = key.removeprefix("time_").rpartition("_")
            times = 1 if phase in ONCE_PER_RECORD else steps
            totals.setdefault(phase, [0.0, 0.0])[kind == "cpu"] += value * times
    order = [p for p in PHASES if p in totals] + sorted(set(totals) - set(PHASES))
    return {p: (totals[p][0], totals[p][1]) for p in order}


def timings(records: list[dict]) -> str:
    """Steps, samples and wall seconds, then the split by phase (wall and CPU) as a table."""
    last, total = records[-1], total_seconds(records)
    if total is None:
        return "<p>no timing recorded</p>"
    steps = last.get("step", 0)
    per_step = f", {total / steps:.3g} s per step (evaluations included)" if steps else ""
    text = f"<p>{steps} steps, {last.get('samples_seen', 0)} samples seen, {total:.1f} s wall{per_step}</p>"
    phases = phase_seconds(records)
    if not phases:
        return text
    rows = "".join(
        f"<tr><td>{html.escape(p)}</td><td>{w:.3f}</td><td>{c:.3f}</td><td>{w / total:.0%}</td></tr>"
        for p, (w, c) in phases.items()
    )
    timed = sum(w for w, _ in phases.values())
    cpu = sum(c for _, c in phases.values())
    if total > timed:
        rows += f"<tr><td>other (checkpoints, logging)</td><td>{total - timed:.3f}</td><td></td>"
        rows += f"<td>{(total - timed) / total:.0%}</td></tr>"
    head = "<tr><th>phase</th><th>wall s</th><th>CPU s</th><th>of the wall</th></tr>"
    foot = f"<tr><th>timed phases</th><th>{timed:.3f}</th><th>{cpu:.3f}</th><th>{timed / total:.0%}</th></tr>"
    return (
        f"{text}<table class=timings>{head}{rows}{foot}</table>"
        "<p>CPU seconds count every thread, so with several threads they exceed the wall seconds.</p>"
    )


def warnings(runs: list[Run]) -> str:
    """Estimates that should not be trusted, said at the top rather than plotted silently."""
    notes = []
    for label, _, records in runs:
        low = [r["step"] for r in records if r.get("ess_low")]
        if low:
            notes.append(
                f"{html.escape(label)}: the importance-sampling estimates (kl_p_pi, tv_p_pi, log_z, ...) "
                f"at steps {low} rest on an effective sample size below 30 and are unreliable"
                + (
                    "; the pool_* estimates are not affected"
                    if metric_names.POOL_KL_P_PI in records[-1]
                    else ""
                )
            )
        unreliable = [r["step"] for r in records if r.get("pool_reliable") == 0.0]
        if unreliable:
            notes.append(f"{html.escape(label)}: the posterior pool holds fewer than 30 p-samples")
    return "".join(f"<p class=warn>warning: {n}</p>" for n in notes)
