"""The real-model RM-vs-DM table and frontier plot, from `bayesalign compare` folders.

    python experiments/rm_vs_dm/summarise.py RUNS... [--out docs/results/rm_vs_dm_smollm2]

RUNS are compare `--out` folders (one comparison may be split over several processes, one
folder each). Every number comes from each run's last evaluation record:
  - KL(p*‖π): the posterior pool's exact-sample estimate (`pool_kl_p_pi`, with its standard
    error within the run), never an importance-sampling estimate;
  - E_π[b], KL(π‖a), entropy, Distinct-2: means over the evaluation's fresh samples of π (exact
    samples of π; KL(π‖a) = mean of log π − log a on them);
  - KL(π‖p*) = KL(π‖a) − E_π[b]/β + log Z, with KL(π‖a) and E_π[b] as above and log Z the
    pool's (for a boolean tilt b/β: on π's own samples, no importance weights);
  - frontier excess: KL(π‖a) over the least KL(π‖a) any model needs for π's E_π[b] (the frontier
    of the pool's prior samples).
Across seeds: mean ± standard error (standard deviation / √seeds). Each method is then set
against the first method named in --reference (default gdc++): the difference of means with the
standard error of the difference, and the verdict by our rule (inside 2 s.e.: no difference).
Writes OUT.md (tables), OUT.json (every run's numbers) and OUT.png (the frontier plot).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import yaml

from bayesalign.report.tables import phase_seconds

COLUMNS = {  # metric in the record -> column title
    "pool_kl_p_pi": "KL(p*‖π) (pool)",
    "reverse_kl": "KL(π‖p*)",
    "score_b_pi": "E_π[b]",
    "kl_pi_a": "KL(π‖a)",
    "frontier_excess": "frontier excess",
    "entropy_pi": "H(π) (nats)",
    "distinct_2_pi": "Distinct-2",
}
COLOURS = {"gdc++": "C0", "dpg": "C1", "reinforce": "C3", "kl-reinforce": "C2", "ppo": "C4"}


def runs(folders: list[Path]) -> dict[str, list[dict]]:
    """method -> one dict per seed: the last record, the first one (π = a), every record, and
    the run's wall and CPU seconds (training and evaluation, from the records' phase times)."""
    found: dict[str, list[dict]] = {}
    for folder in folders:
        for metrics in sorted(folder.glob("*/seed*/metrics.jsonl")):
            if not (metrics.parent / "final").is_dir():  # unfinished (or failed): left out
                continue
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            method, seed = metrics.parent.parent.name, int(metrics.parent.name.removeprefix("seed"))
            reward = yaml.safe_load((metrics.parent / "config.yaml").read_text())["target"]["reward"]
            score = f"score_{reward['scorer']['name']}_pi"  # E_π[b] under the scorer's own name
            for r in records:
                r["score_b_pi"] = r[score]
                r["reverse_kl"] = r["kl_pi_a"] - r["score_b_pi"] / reward["beta"] + r["pool_log_z"]
            phases = phase_seconds(records)
            found.setdefault(method, []).append(
                {
                    "seed": seed,
                    "first": records[0],
                    "last": records[-1],
                    "curve": records,
                    "wall": sum(w for w, _ in phases.values()),
                    "cpu": sum(c for _, c in phases.values()),
                }
            )
    order = list(COLOURS)  # the methods in the docs' order, seeds in order
    return {
        m: sorted(found[m], key=lambda s: s["seed"])
        for m in sorted(found, key=lambda m: order.index(m) if m in order else len(order))
    }


def mean_se(values: list[float | None]) -> tuple[float, float]:
    """Mean and standard error of the defined values (the frontier excess is undefined, None,
    where π's E_π[b] is not above the prior's: no finite KL* to divide by)."""
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return statistics.fmean(values), se


def defined(seeds: list[dict], key: str) -> str:
    """ " (k of n defined)" when some seeds' value is None, else ""."""
    k = sum(s["last"][key] is not None for s in seeds)
    return f" ({k} of {len(seeds)} defined)" if k < len(seeds) else ""


def table(found: dict[str, list[dict]], reference: str) -> str:
    lines = ["| method | seeds | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    first = next(iter(found.values()))[0]["first"]
    prior = [f"{round(first[k], 3) + 0.0:.3f}" if first.get(k) is not None else "–" for k in COLUMNS]
    lines.append("| π = a (step 0) | – | " + " | ".join(prior) + " |")
    for method, seeds in found.items():
        cells = []
        for key in COLUMNS:
            m, se = mean_se([s["last"][key] for s in seeds])
            cells.append(f"{m:.3f} ± {se:.3f}{defined(seeds, key)}")
        lines.append(f"| {method} | {len(seeds)} | " + " | ".join(cells) + " |")
    lines += ["", f"Differences from {reference} (mean over seeds; s.e. of the difference):", ""]
    lines += ["| method | " + " | ".join(list(COLUMNS.values())[:5]) + " |", "|---" * 6 + "|"]
    for method, seeds in found.items():
        if method == reference:
            continue
        cells = []
        for key in list(COLUMNS)[:5]:
            m1, se1 = mean_se([s["last"][key] for s in seeds])
            m0, se0 = mean_se([s["last"][key] for s in found[reference]])
            d, se = m1 - m0, math.hypot(se1, se0)
            if not math.isfinite(se):
                verdict = "one seed: no verdict"
            else:
                verdict = "no difference" if abs(d) <= 2 * se else ("higher" if d > 0 else "lower")
            cells.append(f"{d:+.3f} ± {se:.3f} ({verdict})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    costs = []
    for method, seeds in found.items():
        cpu, wall = (statistics.fmean(s[k] for s in seeds) for k in ("cpu", "wall"))
        costs.append(f"{method} {cpu:.0f} CPU s / {wall:.0f} wall s")
    lines += ["", "Mean cost per run (training and evaluations): " + "; ".join(costs) + "."]
    lines += [
        "",
        "Frontier excess is undefined (left out of its mean) where π's E_π[b] is not above the "
        "prior's: π moved away from a without raising b at all.",
    ]
    per_run = [
        f"{m} seed {s['seed']}: {s['last']['pool_kl_p_pi']:.3f} ± {s['last']['pool_kl_p_pi_stderr']:.3f}"
        for m, seeds in found.items()
        for s in seeds
    ]
    lines += ["", "KL(p*‖π) per run (± the pool estimate's own s.e.): " + "; ".join(per_run) + "."]
    return "\n".join(lines) + "\n"


def plot(found: dict[str, list[dict]], frontier: Path, out: Path, b_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = json.loads(frontier.read_text())["points"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([kl for _, kl in points], [s for s, _ in points], "k-", lw=1, label="KL frontier (least KL(π‖a))")
    first = next(iter(found.values()))[0]["first"]
    ax.plot([0], [first["score_b_pi"]], "k*", ms=10, label="π = a")
    # p* itself: KL(p*‖a) = −log Z of the posterior (the pool's), E_p*[b] = 1 to ~1e-4
    ax.plot([first["pool_kl_p_a"]], [1.0], "kD", ms=7, label="p* (the target)")
    for method, seeds in found.items():
        xs = [s["last"]["kl_pi_a"] for s in seeds]
        ys = [s["last"]["score_b_pi"] for s in seeds]
        ax.plot(xs, ys, "o", color=COLOURS.get(method), label=method)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL(π‖a), nats (symlog scale)")
    ax.set_ylabel(f"E_π[b]  (b = {b_label})")
    ax.set_title("Every run's final π against the KL frontier (SmolLM2-135M)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results/rm_vs_dm_smollm2"))
    parser.add_argument("--reference", default="gdc++")
    parser.add_argument("--b-label", default="VADER compound > 0.5", help="what b is, for the plot's axis")
    args = parser.parse_args()
    found = runs(args.folders)
    if args.reference not in found:
        raise SystemExit(f"error: --reference {args.reference!r} has no runs in {args.folders}")
    text = table(found, args.reference)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    keep = [*COLUMNS, "pool_kl_p_pi_stderr", "step", "samples_seen", "seconds"]
    dump = {
        m: [
            {
                "seed": s["seed"],
                "cpu_seconds": s["cpu"],
                "wall_seconds": s["wall"],
                "curve": [{k: r[k] for k in keep if k in r} for r in s["curve"]],
            }
            for s in seeds
        ]
        for m, seeds in found.items()
    }
    args.out.with_suffix(".json").write_text(json.dumps(dump, indent=1))
    frontier = next(args.folders[0].glob("*/seed*/frontier.json"))
    plot(found, frontier, args.out.with_suffix(".png"), args.b_label)


if __name__ == "__main__":
    main()
