"""Several methods on one target with one sample budget: what `bayesalign compare` runs.

Each (method, seed) is an ordinary training run (session.py) in its own folder
``OUT/<method>/seed<s>/``, from the same base config with only three changes: the method, the
seed s = base seed + k for the k-th run of a method (the folder names the seed the run used),
and ``training.proposal.update: on_policy``, so that every method draws ``training.batch_size``
samples per step from its own policy and all runs see the same number of samples (the twist,
which fits on samples of a, draws as many from a: ``fixed``). Folders keep
the method's own name: its characters (``gdc++``, ``kl-reinforce``) are safe in file names.
Options sections of other methods (``training.ppo`` in a config run with ``gdc++``) are dropped
per run, so one config can hold every method's options.

After each run the per-sample gradient variance of its objective is measured on fresh samples
(diagnostics.py). The summary gives, per method, the mean and standard deviation over seeds of
the final metrics and the mean learning curve, as ``summary.json`` and ``summary.md``, and
``report.html`` plots every run's curves together.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bayesalign.config import Config, ConfigError, apply_overrides, parse_config
from bayesalign.config.loading import import_callables
from bayesalign.config.methods import METHOD_OPTIONS, METHODS, check_method
from bayesalign.report import build_report
from bayesalign.runs import RunFolder, metric_names
from bayesalign.runs.metric_names import ENTROPY_PI, KL_P_PI, KL_PI_A, KL_PI_P, POOL_KL_P_PI, SATISFACTION_PI
from bayesalign.session import train

# Final metrics of the summary, in this order; those absent from every run are left out. The
# scores of reward terms (score_<name>_pi) are added per target.
FINAL = (
    *(n for n in metric_names.HEADLINE if n != metric_names.KL_P_A),  # KL(p‖a) is the target's
    *metric_names.QUALITY[:3],
    *(metric_names.exact(n) for n in (SATISFACTION_PI, KL_P_PI, KL_PI_P, KL_PI_A, ENTROPY_PI)),
    "grad_variance",
    "grad_mean_sq_norm",
    "seconds",
)


class CompareRunError(RuntimeError):
    """One run of a comparison failed; the message names its method, seed and folder."""


@dataclass
class RunResult:
    method: str
    seed: int
    folder: Path
    final: dict[str, float]  # the last evaluation record, plus the gradient statistics
    curve: list[dict]  # every evaluation record


def check_methods(methods: Sequence[str]) -> list[str]:
    """The methods to compare, validated before any run starts."""
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise ConfigError("--methods names no method")
    for method in methods:
        check_method(method)
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise ConfigError(f"--methods repeats {repeated}")
    return methods


def run_config(raw: dict, method: str, seed: int | None = None) -> Config:
    """The base config with this run's method, seed (unless None) and an on-policy proposal (q = a
    for a method that fits on samples of a),
    without the options sections of other methods."""
    raw = copy.deepcopy(raw)
    training = raw.setdefault("training", {})
    for key, owner in METHOD_OPTIONS.items():
        if owner != method:
            training.pop(key, None)
    update = "fixed" if METHODS[method].prior_samples else "on_policy"  # the twist samples a
    overrides = [f"training.method={method}", f"training.proposal.update={update}"]
    if seed is not None:
        overrides.append(f"training.seed={seed}")
    return parse_config(apply_overrides(raw, overrides))


def compare(
    raw: dict,
    methods: Sequence[str],
    seeds: int,
    out: str | Path,
    *,
    grad_samples: int = 16,
    console: Console | None = None,
    config_folder: str | Path | None = None,
) -> dict:
    """Train every method ``seeds`` times on the target of ``raw`` (a config dict); returns the
    summary it writes to ``out``. Every config is validated and ``out`` checked before any run;
    ``callable`` scorers are imported then too, looking first in ``config_folder`` (the config
    file's folder, when there is one)."""
    console = console or Console(stderr=True)
    methods = check_methods(methods)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if grad_samples < 2:
        raise ConfigError(f"--grad-samples must be >= 2, got {grad_samples}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} is not an empty folder; choose a new --out for a comparison")
    base_seed = run_config(raw, methods[0]).training.seed
    plan = [
        (method, base_seed + k, run_config(raw, method, base_seed + k))
        for method in methods
        for k in range(seeds)
    ]
    if config_folder is not None:
        import_callables(plan[0][2], config_folder)
    results, started = [], time.perf_counter()
    for i, (method, seed, config) in enumerate(plan, 1):
        folder = out / method / f"seed{seed}"
        elapsed = time.perf_counter() - started
        eta = f", ETA {elapsed / (i - 1) * (len(plan) - i + 1):.0f} s" if i > 1 else ""
        console.print(
            f"[bold]compare[/] run {i}/{len(plan)}: {method}, seed {seed} -> {folder} "
            f"({elapsed:.0f} s elapsed{eta})"
        )
        try:
            trainer = train(config, folder, console=console)
            stats = trainer.gradient_stats(grad_samples)
        except Exception as err:  # say which run failed; the finished runs' folders stay
            raise CompareRunError(
                f"method {method!r}, seed {seed} ({folder}): {type(err).__name__}: {err}"
            ) from err
        curve = RunFolder(folder).read_metrics()
        final = curve[-1] | {"grad_variance": stats.variance, "grad_mean_sq_norm": stats.mean_sq_norm}
        results.append(RunResult(method, seed, folder, final, curve))
    summary = summarise(results, budget=describe_budget(plan[0][2]))
    write_summary(summary, out)
    if plan[0][2].eval.report:
        build_report(
            [r.folder for r in results], out / "report.html", title=f"bayesalign compare: {out.name}"
        )
    console.print(summary_table(summary))
    return summary


def describe_budget(config: Config) -> str:
    t = config.training
    return (
        f"{t.steps} steps x {t.batch_size} samples from each run's own policy (on-policy), "
        f"{t.epochs} epoch(s) in minibatches of {t.minibatch}; eval every {config.eval.every} steps "
        f"on {config.eval.samples} fresh samples"
    )


def _mean_std(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "std": std, "n": len(finite)}


def summarise(results: list[RunResult], budget: str = "") -> dict:
    """Per method: mean ± std over seeds of each final metric, and the mean curve per step."""
    scores = metric_names.reward_scores(k for r in results for k in r.final)
    names = [n for n in (*FINAL[:1], *scores, *FINAL[1:]) if any(n in r.final for r in results)]
    curve = (SATISFACTION_PI, *scores, POOL_KL_P_PI, KL_P_PI, KL_PI_P, KL_PI_A)
    curve_names = [n for n in curve if n in names]
    methods: dict[str, dict] = {}
    for method in dict.fromkeys(r.method for r in results):
        runs = [r for r in results if r.method == method]
        steps = sorted({rec["step"] for r in runs for rec in r.curve})
        curve = []
        for step in steps:
            point: dict = {"step": step}
            for name in curve_names:
                values = [rec[name] for r in runs for rec in r.curve if rec["step"] == step and name in rec]
                point[name] = _mean_std(values)["mean"]
            curve.append(point)
        methods[method] = {
            "seeds": [r.seed for r in runs],
            "folders": [str(r.folder) for r in runs],
            "final": {n: _mean_std([r.final.get(n) for r in runs]) for n in names},
            "curve": curve,
        }
    return {"budget": budget, "metrics": names, "curve_metrics": curve_names, "methods": methods}


def _cell(stat: dict[str, float]) -> str:
    if stat["n"] == 0:
        return "–"
    return f"{stat['mean']:.3g} ± {stat['std']:.2g}" if stat["n"] > 1 else f"{stat['mean']:.3g}"


def markdown(summary: dict) -> str:
    names = summary["metrics"]
    lines = [f"Budget: {summary['budget']}. Mean ± standard deviation over seeds.", ""]
    lines += ["| method | seeds | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for method, s in summary["methods"].items():
        cells = [_cell(s["final"][n]) for n in names]
        lines.append(f"| {method} | {len(s['seeds'])} | " + " | ".join(cells) + " |")
    curve_names = summary["curve_metrics"]
    lines += ["", "Per step (mean over seeds):", ""]
    lines += ["| method | step | " + " | ".join(curve_names) + " |", "|---" * (len(curve_names) + 2) + "|"]
    for method, s in summary["methods"].items():
        for point in s["curve"]:
            cells = [f"{point[n]:.3g}" for n in curve_names]
            lines.append(f"| {method} | {point['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))


def summary_table(summary: dict) -> Table:
    """Final metrics with one column per method (metrics are many, methods few: it fits a terminal)."""
    table = Table(title="compare: final metrics, mean ± std over seeds")
    table.add_column("metric")
    methods = summary["methods"]
    for method in methods:
        table.add_column(method, justify="right")
    for name in summary["metrics"]:
        table.add_row(name, *(_cell(s["final"][name]) for s in methods.values()))
    return table
