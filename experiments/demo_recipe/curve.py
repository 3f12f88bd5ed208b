"""The demo's numbers against time, from a run folder (issue 15: "show the curve of these numbers
against wall time up to 60 minutes, and say where it would cross").

    .venv/bin/python experiments/demo_recipe/curve.py RUN_DIR --out docs/results/demo_curve.png

Plots the pool estimate of KL(p‖π) (± 1 s.e., exact p-samples held out of training) against the
p-samples trained on, and satisfaction under π and the frontier excess against wall minutes,
with the issue's targets as lines: KL(p‖π) < ½·KL(p‖a), satisfaction ≥ 0.85, excess ≤ 1.3.
Prints the table it plots, with wall seconds and CPU seconds (the records' ``time_*_cpu``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bayesalign.report.tables import phase_seconds  # noqa: E402


def cpu_seconds(records: list[dict]) -> list[float]:
    """Cumulative CPU seconds of training and evaluation at each record (the report's phase
    totals of the records so far). Drawing the posterior pool is not in the records' timing
    fields (it happens before the first evaluation's clock starts); the wall seconds hold it."""
    return [sum(cpu for _, cpu in phase_seconds(records[: i + 1]).values()) for i in range(len(records))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    half = 0.5 * records[0]["pool_kl_p_a"] if "pool_kl_p_a" in records[0] else 0.5 * records[0]["minus_log_z"]
    wall = [r["seconds"] for r in records]
    cpu = cpu_seconds(records)
    header = "| step | wall s | CPU s | pool KL(p‖π) ± s.e. | satisfaction ± s.e. | KL(π‖a) ± s.e. | excess |"
    print(header)
    print("|---|---|---|---|---|---|---|")
    for r, w, c in zip(records, wall, cpu, strict=True):
        excess = r.get("frontier_excess")
        print(
            f"| {r['step']} | {w:.0f} | {c:.0f} | {r['pool_kl_p_pi']:.3f} ± {r['pool_kl_p_pi_stderr']:.3f} | "
            f"{r['satisfaction_pi']:.3f} ± {r['satisfaction_pi_stderr']:.3f} | "
            f"{r['kl_pi_a']:.3f} ± {r['kl_pi_a_stderr']:.3f} | {'–' if excess is None else f'{excess:.2f}'} |"
        )
    print(f"target: KL(p‖π) < {half:.3f} (half of KL(p‖a)), satisfaction ≥ 0.85, excess ≤ 1.3")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    kl = [r["pool_kl_p_pi"] for r in records]
    se = [r["pool_kl_p_pi_stderr"] for r in records]
    seen = [r["samples_seen"] for r in records]
    axes[0].errorbar(seen, kl, yerr=se, marker="o")
    axes[0].axhline(half, color="k", ls="--", label="target: ½·KL(p‖a)")
    axes[0].set(
        xlabel="exact p-samples trained on (with repeats)",
        ylabel="KL(p‖π), held-out exact p-samples",
        title="KL(p‖π)",
    )
    axes[0].legend(fontsize=8)
    axes[1].errorbar(
        [x / 60 for x in wall],
        [r["satisfaction_pi"] for r in records],
        yerr=[r["satisfaction_pi_stderr"] for r in records],
        marker="o",
    )
    axes[1].axhline(0.85, color="k", ls="--")
    axes[1].set(xlabel="wall minutes", ylabel="E_π[b]", title="satisfaction under π (target 0.85)")
    excess = [
        (w / 60, r["frontier_excess"]) for w, r in zip(wall, records, strict=True) if r.get("frontier_excess")
    ]
    if excess:
        axes[2].plot(*zip(*excess, strict=True), marker="o")
    axes[2].axhline(1.3, color="k", ls="--")
    axes[2].set(
        xlabel="wall minutes",
        ylabel="KL(π‖a) / least KL at that satisfaction",
        title="frontier excess (target 1.3)",
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
