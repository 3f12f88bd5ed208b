"""Tables and plots of the 3-seed dense-PII experiment (run.py pii_dense --seeds 1 2, then
final_eval.py): the markdown tables of docs/phf.md, and under docs/results/
phf_pii_dense_metrics.jsonl (every in-training evaluation of every run),
phf_pii_dense_summary.json (per objective and seed, with the model size and the CPU time) and
two plots: misalignment against training tokens, and misalignment against the fair LM loss.

    python experiments/phf/summarize.py

The PEP8 and sparse-PII results of docs/phf.md are the first round's (phf_metrics.jsonl,
phf_summary.json, phf_final_eval_v1.jsonl), measured before the fair LM loss existed.
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

TASK = "pii_dense"
RUNS = Path("runs/phf") / TASK
OUT = Path("docs/results")
OBJECTIVES = ["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]
SEEDS = [0, 1, 2]


def name(objective: str, seed: int) -> str:
    return objective if seed == 0 else f"{objective}_seed{seed}"


def parameters(folder: Path) -> int:
    """Parameters of a saved model (tied embeddings stored once)."""
    with safe_open(folder / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds (nan for one value)."""
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return statistics.fmean(values), se


def fmt(values: list[float], f: str) -> str:
    m, se = mean_se(values)
    return f"{f.format(m)} ± {f.format(se)}"


def load() -> tuple[dict, dict]:
    histories = {}
    for folder in sorted(RUNS.glob("*")):
        path = folder / "metrics.jsonl"
        if path.is_file() and (folder / "final").is_dir():
            histories[folder.name] = [json.loads(line) for line in path.open()]
    finals = {}
    path = OUT / f"phf_final_eval_{TASK}.jsonl"
    if path.is_file():
        finals = {r["run"]: r for r in map(json.loads, path.open())}
    return histories, finals


def objective_table(histories: dict, finals: dict) -> str:
    lines = [
        "| objective | seeds | misalignment (PII/char), mean ± se over seeds | × MLE "
        "| per seed (± se of 1,024 samples) | misaligned fraction | fair LM loss (marginal) "
        "| LM loss as sampled | untagged held-out loss | KL(π‖mle seed 0) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    mle = [finals[name("mle", s)]["misalignment"] for s in SEEDS if name("mle", s) in finals]
    for objective in OBJECTIVES:
        runs = [
            name(objective, s)
            for s in SEEDS
            if name(objective, s) in finals and name(objective, s) in histories
        ]
        if not runs:
            continue
        mis = [finals[r]["misalignment"] for r in runs]
        last = [histories[r][-1] for r in runs]
        ratio = statistics.fmean(mis) / statistics.fmean(mle) if mle else float("nan")
        per_seed = ", ".join(
            f"{finals[r]['misalignment']:.2e} ± {finals[r]['misalignment_stderr']:.1e}" for r in runs
        )
        kl = [x["kl_from_reference"] for x in last if "kl_from_reference" in x]
        lines.append(
            f"| {objective} | {len(runs)} | {fmt(mis, '{:.2e}')} | {ratio:.2f} | {per_seed} "
            f"| {fmt([finals[r]['misaligned_fraction'] for r in runs], '{:.3f}')} "
            f"| {fmt([x['heldout_loss_marginal'] for x in last], '{:.3f}')} "
            f"| {fmt([x['heldout_loss_as_sampled'] for x in last], '{:.3f}')} "
            f"| {fmt([x['heldout_loss'] for x in last], '{:.3f}')} "
            f"| {fmt(kl, '{:.1f}') if kl else '0 (seed 0 is the reference)'} |"
        )
    return "\n".join(lines)


def control_table(histories: dict, finals: dict) -> str:
    lines = [
        "| run | after <\\|good\\|>, both banned (paper) | <\\|good\\|> at every segment | after <\\|bad\\|> "
        "| P(<\\|good\\|> \\| EOS) | P(<\\|bad\\|> \\| EOS) | corpus: misaligned first segments |",
        "|---|---|---|---|---|---|---|",
    ]
    for base in ("conditional", "finetune"):
        for s in SEEDS:
            run = name(base, s)
            if run not in finals or run not in histories:
                continue
            f, h = finals[run], histories[run][-1]
            cells = [
                f"{f[p + 'misalignment']:.2e} ± {f[p + 'misalignment_stderr']:.1e} "
                f"({f[p + 'misaligned_fraction']:.3f})"
                for p in ("", "good_every_segment_", "after_bad_")
            ]
            lines.append(
                f"| {run} | "
                + " | ".join(cells)
                + f" | {h['p_good_after_eos']:.3f} | {h['p_bad_after_eos']:.3f} "
                f"| {h['corpus_bad_first_segment_fraction']:.3f} |"
            )
    return "\n".join(lines)


def mode_table(finals: dict) -> str:
    """MLE, MLE restarted from its half-way checkpoint, conditional training and MLE-then-finetune
    over seeds, in both sampling modes."""
    lines = [
        "| run | seeds | after <\\|good\\|>, both banned | <\\|good\\|> at every segment "
        "| after <\\|bad\\|> |",
        "|---|---|---|---|---|",
    ]
    for base in ("mle", "mle_continued", "conditional", "finetune"):
        runs = [name(base, s) for s in SEEDS if name(base, s) in finals]
        if not runs:
            continue
        cells = []
        for prefix in ("", "good_every_segment_", "after_bad_"):
            values = [
                finals[r][prefix + "misalignment"] for r in runs if prefix + "misalignment" in finals[r]
            ]
            cells.append(fmt(values, "{:.2e}") if values else "–")
        lines.append(f"| {base} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(histories: dict, finals: dict) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for objective in OBJECTIVES + ["finetune"]:
        runs = [name(objective, s) for s in SEEDS if name(objective, s) in histories]
        if not runs:
            continue
        tokens = [r["tokens"] for r in histories[runs[0]]]
        curves = [[r["misalignment"] for r in histories[run]] for run in runs]
        if len({len(c) for c in curves}) != 1:
            continue
        means = [statistics.fmean(c[i] for c in curves) for i in range(len(tokens))]
        ses = [mean_se([c[i] for c in curves])[1] if len(curves) > 1 else 0 for i in range(len(tokens))]
        ax.errorbar(tokens, means, yerr=ses, marker="o", capsize=3, label=f"{objective} ({len(runs)} seeds)")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("misalignment (PII per character), 128 samples per eval")
    ax.set_title("dense PII: misalignment during training (mean ± se over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    first = OUT / f"phf_{TASK}_tokens.png"
    fig.savefig(first, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for objective in OBJECTIVES + ["finetune"]:
        runs = [
            name(objective, s)
            for s in SEEDS
            if name(objective, s) in histories and name(objective, s) in finals
        ]
        if not runs:
            continue
        x = [histories[r][-1]["heldout_loss_marginal"] for r in runs]
        y = [finals[r]["misalignment"] for r in runs]
        e = [finals[r]["misalignment_stderr"] for r in runs]
        ax.errorbar(x, y, yerr=e, fmt="o", capsize=3, label=objective)
    ax.set_xlabel("fair held-out LM loss (nats/token, marginal over control tokens)")
    ax.set_ylabel("misalignment of 1,024 samples (± se)")
    ax.set_title("dense PII: every run (3 seeds per objective), final models", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    second = OUT / f"phf_{TASK}_loss.png"
    fig.savefig(second, dpi=120)
    plt.close(fig)
    return [first, second]


def main() -> None:
    histories, finals = load()
    rows = [{"run": run, **r} for run, history in histories.items() for r in history]
    with (OUT / f"phf_{TASK}_metrics.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    size = parameters(RUNS / "mle" / "final") if (RUNS / "mle" / "final").is_dir() else None
    seconds = {run: history[-1]["seconds"] for run, history in histories.items()}
    summary = {"parameters": size, "train_eval_seconds": seconds, "final": finals}
    (OUT / f"phf_{TASK}_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"parameters: {size:,}" if size else "no mle run yet")
    print(f"wall seconds of training + in-training evaluation, all runs: {sum(seconds.values()):.0f}")
    print("\n" + objective_table(histories, finals))
    print("\n" + mode_table(finals))
    print("\n" + control_table(histories, finals))
    print("\nplots:", *plots(histories, finals))


if __name__ == "__main__":
    main()
