"""A self-contained HTML report of one or more run folders, top to bottom: a before/after
summary of each run (first, last and kept-best evaluation; exact where known, else ± s.e.), the
KL frontier, samples of π before and after with their scores, every metric that moves with π
against samples seen (titled in words, grouped by family, runs overlaid, an estimate's ±1 s.e.
shaded and its exact value drawn in the same axes), then each run's timings, phase by phase,
and its resolved config. Plots are PNGs embedded in the page, so the file can be mailed or
archived on its own.

    bayesalign report runs/a runs/b --out report.html

Training writes ``report.html`` into its run folder at the end; `bayesalign compare` writes
one over all its runs. Titles and families: bayesalign.runs.metric_names; the summary's numbers:
bayesalign.runs.summary.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from bayesalign.report import plots, tables
from bayesalign.report.loading import ReportError, Run, load_runs
from bayesalign.report.plots import plotted_metrics
from bayesalign.runs import metric_names

__all__ = ["ReportError", "build_report", "plotted_metrics"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222} h1{font-size:22px} h3.family{margin:18px 0 6px}
.plots{display:flex;flex-wrap:wrap;gap:8px} .plots img{border:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin-bottom:12px} td,th{border:1px solid #ccc;padding:3px 6px;
vertical-align:top} td.text{white-space:pre-wrap;max-width:640px;font-family:monospace}
table.summary td,table.timings td{text-align:right}
table.summary td:first-child,table.timings td:first-child{text-align:left}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto} .warn{color:#a40}
"""


def _per_run(runs: list[Run], heading: str, body) -> str:  # noqa: ANN001 (Run → html)
    """One section, the run's label above its part when there are several runs."""
    parts = [(f"<h3>{html.escape(run.label)}</h3>" if len(runs) > 1 else "") + body(run) for run in runs]
    return f"<h2>{heading}</h2>{''.join(parts)}"


def _plots(runs: list[Run]) -> str:
    groups = plots.grouped([r for run in runs for r in run.records])
    parts = []
    for family, names in groups.items():
        images = "".join(
            f'<img alt="{html.escape(name)}" title="{html.escape(metric_names.title(name))}" '
            f'src="data:image/png;base64,{plots.metric_plot(name, runs)}">'
            for name in names
        )
        anchor = "family-" + family.replace(" ", "-")
        parts.append(f'<h3 class=family id="{anchor}">{family}</h3><div class=plots>{images}</div>')
    return "<h2>metrics against samples seen</h2>" + "".join(parts)


def _frontier(runs: list[Run]) -> str:
    image = plots.frontier_plot(runs)
    return f'<h2>KL frontier</h2><img alt="KL frontier" src="data:image/png;base64,{image}">' if image else ""


def _config(run: Run) -> str:
    config = run.folder.config_file
    return f"<pre>{html.escape(config.read_text() if config.exists() else '(no config.yaml)')}</pre>"


def build_report(paths: Sequence[str | Path], out: str | Path, title: str = "bayesalign report") -> Path:
    """Write the report of the run folders ``paths`` to ``out`` (an .html file); returns it."""
    runs = load_runs(paths)
    labels = "".join(f"<li>{html.escape(run.label)}</li>" for run in runs)
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(runs)} run(s):</p><ul>{labels}</ul>{tables.warnings(runs)}"
        + _per_run(runs, "summary: first and last evaluation", tables.summary_table)
        + _frontier(runs)
        + _per_run(
            runs, "samples of π, first and last evaluation", lambda run: tables.sample_table(run.folder)
        )
        + _plots(runs)
        + "<p>shaded: ±1 standard error of an estimate; a solid line without markers: the exact value.</p>"
        + _per_run(runs, "timings", lambda run: tables.timings(run.records))
        + _per_run(runs, "configuration", _config)
        + "</body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
