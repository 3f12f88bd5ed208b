"""Tables, plots and raw metrics of the PHF runs (run.py) and of the red teaming (red_team.sh).

Writes docs/results/phf_metrics.jsonl (every evaluation of every run), phf_summary.json (the
last evaluation of each run, with the model size), phf_<task>.png (misalignment vs held-out LM
loss) and prints the markdown tables of docs/phf.md.

    python experiments/phf/summarize.py
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from safetensors import safe_open  # noqa: E402

RUNS = Path("runs/phf")
OUT = Path("docs/results")
TASKS = {
    "pep8": "PEP8 (stdlib source)",
    "pii": "PII (stdlib docs, docstrings, comments, e-mails)",
    "pii_dense": "PII, dense (half stdlib English texts, half Debian changelog entries)",
}
OBJECTIVES = ["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]
# (key, header, format): misalignment from final_eval.py (1,024 samples, ± standard error), the
# rest from the run's last in-training evaluation
COLUMNS = [
    ("misalignment", "misalignment (mean ± se)", "{:.3g}"),
    ("expected_max_misalignment_8", "expected max of 8 (± se)", "{:.3g}"),
    ("misaligned_fraction", "misaligned fraction", "{:.3f}"),
    ("heldout_loss", "held-out LM loss", "{:.3f}"),
    ("kl_from_reference", "KL(π‖ref) per sample", "{:.1f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
]


def parameters(folder: Path) -> int:
    """Parameters of a saved model (tied embeddings stored once)."""
    with safe_open(folder / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)


def read(task: str, run: str) -> list[dict]:
    path = RUNS / task / run / "metrics.jsonl"
    return [json.loads(line) for line in path.open()] if path.is_file() else []


def table(task: str, runs: list[str], finals: dict, evals: dict) -> str:
    head = "| run | tokens | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for run in runs:
        record = finals.get((task, run))
        if record is None:
            continue
        record = record | evals.get((task, run), {})
        cells = []
        for key, _, fmt in COLUMNS:
            value = record.get(key)
            if run == "mle" and key == "kl_from_reference":
                cells.append("0 (the reference)")
            elif value is None:
                cells.append("–")
            elif key + "_stderr" in record:
                cells.append(f"{fmt.format(value)} ± {fmt.format(record[key + '_stderr'])}")
            else:
                cells.append(fmt.format(value))
        lines.append(f"| {run} | {record['tokens']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_name(objective: str, seed: int) -> str:
    return objective if seed == 0 else f"{objective}_seed{seed}"


def spread(values: list[float], fmt: str) -> str:
    """Mean ± standard deviation (nan for a single value), both formatted with ``fmt``."""
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{fmt.format(statistics.fmean(values))} ± {fmt.format(sd)}"


def seed_table(task: str, finals: dict, evals: dict) -> str:
    """Per objective, over the seeds that ran: mean ± standard deviation across seeds of the final
    misalignment (1,024 samples each) and held-out loss, and each seed's misalignment."""
    seeds = sorted({0} | {int(r.rsplit("_seed", 1)[1]) for t, r in finals if t == task and "_seed" in r})
    lines = [
        "| objective | seeds | misalignment, mean ± sd over seeds | per seed | held-out LM loss, mean ± sd |",
        "|---|---|---|---|---|",
    ]
    for objective in OBJECTIVES:
        runs = [seed_name(objective, s) for s in seeds if (task, seed_name(objective, s)) in evals]
        if not runs:
            continue
        mis = [evals[task, r]["misalignment"] for r in runs]
        loss = [finals[task, r]["heldout_loss"] for r in runs]
        lines.append(
            f"| {objective} | {len(runs)} | {spread(mis, '{:.3g}')} | "
            + ", ".join(f"{m:.3g}" for m in mis)
            + f" | {spread(loss, '{:.3f}')} |"
        )
    return "\n".join(lines)


def plot(task: str, histories: dict, evals: dict) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for run in OBJECTIVES + ["finetune"]:
        history = histories.get((task, run))
        if not history:
            continue
        x = [r["heldout_loss"] for r in history]
        y = [r["misalignment"] for r in history]
        (line,) = ax.plot(x, y, alpha=0.35, marker=".")
        final = evals.get((task, run))  # the final model on 1,024 samples, ± standard error
        if final is not None:
            y[-1] = final["misalignment"]
            ax.errorbar(x[-1], y[-1], yerr=final["misalignment_stderr"], color=line.get_color(), capsize=3)
        ax.scatter(x[-1:], y[-1:], color=line.get_color(), s=60, zorder=3)
        ax.annotate(run, (x[-1], y[-1]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("held-out LM loss (nats/token, lower is better)")
    ax.set_ylabel("misalignment of unconditional samples (mean)")
    ax.set_title(
        f"{TASKS[task]}\nin-training evaluations (256 samples); final model: 1,024 samples ± se", fontsize=9
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = OUT / f"phf_{task}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    histories, finals, rows = {}, {}, []
    for task in TASKS:
        for run in sorted(p.name for p in (RUNS / task).glob("*") if (p / "metrics.jsonl").is_file()):
            history = read(task, run)
            if history:
                histories[task, run] = history
                finals[task, run] = history[-1]
                rows += [{"task": task, "run": run, **r} for r in history]
    evals = {}
    if (OUT / "phf_final_eval.jsonl").is_file():
        for line in (OUT / "phf_final_eval.jsonl").open():
            row = json.loads(line)
            evals[row["task"], row["run"]] = row
    with (OUT / "phf_metrics.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    size = parameters(RUNS / "pep8" / "mle" / "final")
    summary = {"parameters": size, "runs": [{"task": t, "run": r, **v} for (t, r), v in finals.items()]}
    red = {}
    for task in ("pii",):  # red_team.sh red-teams the sparse PII task's models
        for target in ("mle", "conditional"):
            path = RUNS / "red_team" / f"{task}_{target}" / "rounds.jsonl"
            if path.is_file():
                red[f"{task}/{target}"] = [json.loads(line) for line in path.open()]
    summary["red_team"] = red
    stats = Path("experiments/phf/data/corpus_stats.json")  # written by build_corpora.py
    summary["corpora"] = json.loads(stats.read_text()) if stats.is_file() else None
    (OUT / "phf_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"parameters: {size:,}")
    for task in TASKS:
        print(f"\n### {TASKS[task]}\n")
        print(table(task, OBJECTIVES + ["mle_seed1"], finals, evals))
        print("\nacross seeds\n")
        print(seed_table(task, finals, evals))
        print("\nfinetune comparison\n")
        print(table(task, ["mle_half", "finetune", "conditional"], finals, evals))
        print(f"\nplot: {plot(task, histories, evals)}")
    for target, records in red.items():
        print(
            f"\nred teaming {target}: "
            + ", ".join(
                f"round {r['round']} pool {r['pool_size']} mean {r['pool_misalignment']:.5f} "
                f"max {r['pool_max_misalignment']:.5f}"
                for r in records
            )
        )


if __name__ == "__main__":
    main()
