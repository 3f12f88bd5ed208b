"""A self-contained HTML report of one or more run folders: every metric against samples seen
(runs overlaid, ±1 standard error shaded where the metric has one), samples of π before and
after with their scores, the resolved configs and the timings. Plots are PNGs embedded in the
page, so the file can be mailed or archived on its own.

    bayesalign report runs/a runs/b --out report.html

Training writes ``report.html`` into its run folder at the end; `bayesalign compare` writes
one over all its runs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

from bayesalign.runs import RunFolder, metric_names
from bayesalign.runs.metric_names import KL_PI_A

# Shown first, in this order (then every other metric, alphabetically)
LEADING = (*metric_names.HEADLINE, *metric_names.QUALITY)
SAMPLE_ROWS = 12


class ReportError(ValueError):
    """A folder that holds no run (no metrics.jsonl), named."""


def _runs(paths: Sequence[str | Path]) -> list[tuple[str, RunFolder, list[dict]]]:
    if not paths:
        raise ReportError("no run folder given")
    runs = []
    for path in paths:
        run = RunFolder(path)
        records = run.read_metrics()
        if not records:
            raise ReportError(f"{run.path} holds no run: no records in metrics.jsonl")
        runs.append((str(run.path), run, records))
    return runs


def plotted_metrics(records: Sequence[dict]) -> list[str]:
    """Numeric metrics that appear in the records, headline ones first."""
    names = {
        k
        for r in records
        for k, v in r.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not k.endswith("_stderr")
        if not metric_names.is_bookkeeping(k)
    }
    leading = [n for n in LEADING if n in names]
    scores = metric_names.reward_scores(names)
    return leading + scores + sorted(names - set(leading) - set(scores))


def _plot(name: str, runs: list[tuple[str, RunFolder, list[dict]]]) -> str:
    """One metric against samples seen, every run a line: a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display; never pops a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=100)
    for label, _, records in runs:
        points = [
            (r["samples_seen"], r[name], r.get(f"{name}_stderr")) for r in records if r.get(name) is not None
        ]
        if not points:
            continue
        x, y, err = zip(*points, strict=True)
        (line,) = ax.plot(x, y, marker="o", markersize=3, label=label)
        if all(e is not None for e in err):
            ax.fill_between(
                x,
                [v - e for v, e in zip(y, err, strict=True)],
                [v + e for v, e in zip(y, err, strict=True)],
                color=line.get_color(),
                alpha=0.15,
            )
    ax.set_title(name)
    ax.set_xlabel("samples seen")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _frontier_plot(runs: list[tuple[str, RunFolder, list[dict]]]) -> str:
    """KL(π‖a) against the evidence statistic for every run's evaluations, with the KL frontier
    (the least KL any model needs for that statistic) drawn: '' when no run has frontier.json."""
    found = [run.path / "frontier.json" for _, run, _ in runs if (run.path / "frontier.json").exists()]
    if not found:
        return ""
    frontier = json.loads(found[0].read_text())
    statistic = frontier["statistic"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    means, kls = zip(*frontier["points"], strict=True)
    ax.plot(kls, means, color="black", linewidth=2, label="frontier: least KL(π‖a) (tilts of a)")
    for label, _, records in runs:
        points = [(r[KL_PI_A], r[statistic]) for r in records if statistic in r and KL_PI_A in r]
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, marker="o", markersize=4, label=label)
            ax.annotate("end", (x[-1], y[-1]), fontsize=7)
    ax.set_xlabel("KL(π‖a), nats")
    ax.set_ylabel(statistic)
    ax.set_title("the KL frontier: left of the curve is out of reach; on it is optimal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    image = base64.b64encode(buffer.getvalue()).decode()
    return f'<h2>KL frontier</h2><img alt="KL frontier" src="data:image/png;base64,{image}">'


def _warnings(runs: list[tuple[str, RunFolder, list[dict]]]) -> str:
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


def _sample_table(run: RunFolder) -> str:
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


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _timings(records: list[dict]) -> str:
    last = records[-1]
    steps, seconds = last.get("step", 0), last.get("seconds")
    if seconds is None:
        return "<p>no timing recorded</p>"
    per_step = f"{seconds / steps:.3g} s per step, " if steps else ""
    return (
        f"<p>{steps} steps, {last.get('samples_seen', 0)} samples seen, {seconds:.1f} s "
        f"({per_step}evaluations included)</p>"
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222} h1{font-size:22px}
.plots{display:flex;flex-wrap:wrap;gap:8px} .plots img{border:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin-bottom:12px} td,th{border:1px solid #ccc;padding:3px 6px;
vertical-align:top} td.text{white-space:pre-wrap;max-width:640px;font-family:monospace}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto} .warn{color:#a40}
"""


def build_report(paths: Sequence[str | Path], out: str | Path, title: str = "bayesalign report") -> Path:
    """Write the report of the run folders ``paths`` to ``out`` (an .html file); returns it."""
    runs = _runs(paths)
    metrics = plotted_metrics([r for _, _, records in runs for r in records])
    plots = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{_plot(name, runs)}">' for name in metrics
    )
    sections = []
    for label, run, records in runs:
        config = run.config_file.read_text() if run.config_file.exists() else "(no config.yaml)"
        sections.append(
            f"<h2>{html.escape(label)}</h2><h3>samples of π, first and last evaluation</h3>"
            f"{_sample_table(run)}<h3>timings</h3>{_timings(records)}"
            f"<h3>configuration</h3><pre>{html.escape(config)}</pre>"
        )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(runs)} run(s); every metric against samples seen; shaded: ±1 standard error.</p>"
        f"{_warnings(runs)}{_frontier_plot(runs)}<div class=plots>{plots}</div>"
        f"{''.join(sections)}</body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
