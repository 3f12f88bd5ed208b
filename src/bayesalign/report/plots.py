"""The report's plots, as base64 PNGs: every metric that moves with π against samples seen,
titled in words and grouped by family (metric_names.FAMILIES), an estimate (±1 s.e. shaded) and
its exact counterpart in the same axes; and the KL frontier."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence

from bayesalign.report.loading import Run, is_number
from bayesalign.runs import metric_names
from bayesalign.runs.metric_names import EXACT_PREFIX, KL_PI_A

# Shown first within their family, in this order (then scores, then every other alphabetically)
LEADING = (*metric_names.HEADLINE, *metric_names.QUALITY)


def plotted_metrics(records: Sequence[dict]) -> list[str]:
    """The metrics that get a plot, in the order shown: grouped by family, headline ones first
    in each. An exact value shares its estimate's plot (``exact_<name>`` is plotted under
    ``<name>``); standard errors, bookkeeping, timings and constants of the target get none."""
    names = {
        k.removeprefix(EXACT_PREFIX)
        for r in records
        for k, v in r.items()
        if is_number(v) and not k.endswith("_stderr")
        if not metric_names.is_bookkeeping(k) and not metric_names.is_target_constant(k)
    }
    leading = [n for n in LEADING if n in names]
    scores = metric_names.reward_scores(names)
    ordered = leading + scores + sorted(names - set(leading) - set(scores))
    return sorted(ordered, key=lambda n: metric_names.FAMILIES.index(metric_names.family(n)))


def grouped(records: Sequence[dict]) -> dict[str, list[str]]:
    """plotted_metrics by family, families in metric_names.FAMILIES order."""
    groups: dict[str, list[str]] = {}
    for name in plotted_metrics(records):
        groups.setdefault(metric_names.family(name), []).append(name)
    return groups


def _pyplot():  # noqa: ANN202 (matplotlib.pyplot, imported when a report is built)
    import matplotlib

    matplotlib.use("Agg")  # no display; never pops a window
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:  # noqa: ANN001
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def metric_plot(name: str, runs: Sequence[Run]) -> str:
    """``name`` against samples seen, one colour per run: the exact value as a line where the
    run enumerated it, the estimate with markers and its ±1 s.e. band."""
    fig, ax = _pyplot().subplots(figsize=(5.2, 3.2), dpi=100)
    legend = len(runs) > 1
    for i, (label, _, records) in enumerate(runs):
        seen = [r.get("samples_seen", r["step"]) for r in records]
        exact = [(x, r.get(EXACT_PREFIX + name)) for x, r in zip(seen, records, strict=True)]
        exact = [(x, v) for x, v in exact if is_number(v)]
        estimate = [(x, r.get(name), r.get(f"{name}_stderr")) for x, r in zip(seen, records, strict=True)]
        estimate = [(x, v, e) for x, v, e in estimate if is_number(v)]
        both = bool(exact) and bool(estimate)
        legend |= both
        if exact:
            x, y = zip(*exact, strict=True)
            ax.plot(x, y, color=f"C{i}", linewidth=2, label=f"{label}: exact" if both else label)
        if estimate:
            x, y, err = zip(*estimate, strict=True)
            style = {"linestyle": "--" if exact else "-", "marker": "o", "markersize": 3}
            ax.plot(x, y, color=f"C{i}", label=f"{label}: estimate ± s.e." if both else label, **style)
            if all(is_number(e) for e in err):
                low = [v - e for v, e in zip(y, err, strict=True)]
                high = [v + e for v, e in zip(y, err, strict=True)]
                ax.fill_between(x, low, high, color=f"C{i}", alpha=0.15)
    ax.set_title(metric_names.title(name))
    ax.set_xlabel("samples seen")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)
    return _png(fig)


def _exact_or_estimate(record: dict, name: str) -> object:
    exact = record.get(EXACT_PREFIX + name)
    return exact if is_number(exact) else record.get(name)


def frontier_plot(runs: Sequence[Run]) -> str:
    """KL(π‖a) against the evidence statistic for every run's evaluations (exact where known),
    with the KL frontier (the least KL any model needs for that statistic): a base64 PNG, ''
    when no run has frontier.json."""
    found = [
        run.folder.path / "frontier.json" for run in runs if (run.folder.path / "frontier.json").exists()
    ]
    if not found:
        return ""
    frontier = json.loads(found[0].read_text())
    statistic = frontier["statistic"]
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.2), dpi=100)
    means, kls = zip(*frontier["points"], strict=True)
    ax.plot(kls, means, color="black", linewidth=2, label="frontier: least KL(π‖a) (tilts of a)")
    for i, (label, _, records) in enumerate(runs):
        points = [(_exact_or_estimate(r, KL_PI_A), _exact_or_estimate(r, statistic)) for r in records]
        points = [(x, y) for x, y in points if is_number(x) and is_number(y)]
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, marker="o", markersize=4, color=f"C{i}", label=label)
            ax.annotate("end", (x[-1], y[-1]), fontsize=7)
    ax.set_xlabel("KL(π‖a), nats")
    ax.set_ylabel(metric_names.title(statistic))
    ax.set_title("the KL frontier: left of the curve is out of reach; on it is optimal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
