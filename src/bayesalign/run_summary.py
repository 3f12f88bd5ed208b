"""The before/after summary of a finished run folder that `bayesalign demo` ends with: the
first evaluation against the one final/ holds, posterior-pool rows with their standard errors
when the run had a pool, and a few samples of each."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bayesalign.runs import RunFolder, summary
from bayesalign.runs import metric_names as names

SUMMARY_ROWS = (
    ("satisfaction E_π[b]", names.SATISFACTION_PI),
    ("KL(p‖π), pool (exact p-samples)", names.POOL_KL_P_PI),
    ("  of it −log E_π[b]: least at π's satisf.", "frontier_kl_p_pi"),
    ("  of it the rest: KL(p‖π(·|b))", "pool_kl_p_pi_within"),
    ("KL(p‖a) − KL(p‖π), paired", names.POOL_KL_GAIN_PI),
    ("KL(p‖π), IS from q (or exact)", names.KL_P_PI),
    ("KL(π‖a)", names.KL_PI_A),
    ("frontier KL* at π's satisf.", "frontier_kl"),
    ("frontier excess KL(π‖a)/KL*", names.FRONTIER_EXCESS),
    ("−log Z = KL(p‖a), pool", names.POOL_KL_P_A),
)


def summarise(run: RunFolder, console: Console, seconds: float) -> None:
    """Before/after table from the run folder: the first evaluation and the one final/ holds
    (the last, or with training.keep_best the chosen one). Posterior-pool rows appear when the
    run had a pool; the IS row carries its effective sample size."""
    records = run.read_metrics()
    before, after = records[0], records[-1]
    chosen = summary.kept_step(run)
    if chosen is not None:
        after = next(r for r in records if r["step"] == chosen)
    table = Table(title=f"before (step 0, π = a) vs final/ (step {after['step']}), {seconds:.0f} s")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")

    def cell(record: dict, key: str) -> str:
        found = summary.cell(record, key)  # exact where the run enumerated it
        if found is None:  # absent, or nan (e.g. excess at the prior)
            return "–"
        text = found.text(".3f", "  (exact)", ".3f")
        if key == names.KL_P_PI and not found.exact:
            text += f"  (ESS {record['ess']:.0f})" if "ess" in record else ""
        return text

    for label, key in SUMMARY_ROWS:
        if key in after:
            table.add_row(escape(label), cell(before, key), cell(after, key))
    console.print(table)
    console.print(
        "frontier excess: 1 = no model reaches π's satisfaction closer to a; the paired gain > 2 s.e. "
        "means π is closer to p than the prior is"
    )
    if names.POOL_ACCEPTED in after:
        console.print(
            f"posterior pool: {after['pool_accepted']:.0f} exact p-samples (held out) of "
            f"{after['pool_size']:.0f} prior samples; drawing them took "
            f"{before.get('pool_draw_seconds') or 0:.0f} s (0 s: from the cache)"
        )
    for title, step in (("before", before["step"]), ("after", after["step"])):
        rows = [json.loads(line) for line in (run.samples / f"step_{step:06d}.jsonl").open()]
        console.print(f"[bold]samples {title}[/] (1 = constraint holds)")
        for row in rows[:5]:
            flags = " ".join(f"{k}={v:g}" for k, v in row.items() if k not in ("text", "log_pi"))
            console.print(escape(f"  [{flags}] {row['text']!r}"))
