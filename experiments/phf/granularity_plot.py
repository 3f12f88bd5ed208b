"""docs/phf.md "One control token per document": two plots comparing conditional training's
segment granularity (sentences against whole documents) with MLE of the same setting, dense PII,
1,048,576 training tokens.

- misalignment against training tokens: the runs' in-training evaluations (128 samples each,
  after <|good|> for conditional runs), mean ± s.e. over seeds;
- misalignment of the final models (final_eval.py, 1,024 samples) against the fair LM loss of the
  run's last evaluation, one point per run.

    python experiments/phf/granularity_plot.py \
        sentences=runs/phf_long/pii_dense:docs/results/phf_final_eval_pii_dense_1m.jsonl \
        documents=runs/phf_docs_1m/pii_dense:docs/results/phf_final_eval_pii_dense_docs_1m.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bayesalign import estimators as est  # noqa: E402

OUT = Path("docs/results")
GROUPS = ["mle_untied", "conditional_untied", "mle", "conditional"]  # run names without _seedN


def load(spec: str) -> tuple[str, dict[str, list[list[dict]]], dict[str, list[dict]]]:
    """``label=runs_root:final_eval.jsonl`` → label, in-run histories and final rows per group."""
    label, rest = spec.split("=", 1)
    root, evals = rest.split(":", 1)
    histories: dict[str, list[list[dict]]] = defaultdict(list)
    finals: dict[str, list[dict]] = defaultdict(list)
    for row in map(json.loads, Path(evals).read_text().splitlines()):
        group = row["run"].rsplit("_seed", 1)[0]
        history = [
            json.loads(x) for x in (Path(root) / row["run"] / "metrics.jsonl").read_text().splitlines()
        ]
        histories[group].append(history)
        finals[group].append({**row, "fair_loss": history[-1]["heldout_loss_marginal"]})
    return label, histories, finals


def main() -> None:
    data = [load(spec) for spec in sys.argv[1:]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    for label, histories, finals in data:
        for group in GROUPS:
            runs = histories.get(group)
            if not runs:
                continue
            name = f"{group}, {label} ({len(runs)} seeds)"
            steps = min(len(h) for h in runs)
            tokens = [r["tokens"] for r in runs[0][:steps]]
            curve = [est.mean(torch.tensor([h[i]["misalignment"] for h in runs])) for i in range(steps)]
            left.errorbar(
                tokens,
                [c.value for c in curve],
                yerr=[c.stderr for c in curve],
                marker="o",
                capsize=3,
                label=name,
            )
            rows = finals[group]
            right.errorbar(
                [r["fair_loss"] for r in rows],
                [r["misalignment"] for r in rows],
                yerr=[r["misalignment_stderr"] for r in rows],
                fmt="o" if group.startswith("mle") else "s",
                capsize=3,
                label=name,
            )
    left.set_xlabel("training tokens")
    left.set_ylabel("misalignment (PII per character), 128 samples per evaluation")
    left.set_title("dense PII: during training (mean ± s.e. over seeds)", fontsize=9)
    right.set_xlabel("fair held-out LM loss (nats/token, marginal over control tokens)")
    right.set_ylabel("misalignment of 1,024 samples (± s.e.)")
    right.set_title("final models, one point per run", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    # both panels draw the groups in the same order, so their colours match: one legend below
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = OUT / "phf_pii_dense_granularity.png"
    fig.savefig(path, dpi=110)
    print(path)


if __name__ == "__main__":
    main()
