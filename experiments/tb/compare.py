"""Trajectory balance (method tb) against GDC++ on the same budget, exact on a toy space (issue 15).

    .venv/bin/python experiments/tb/compare.py [--seeds 0,1,2] [--steps 100] [--out tb_compare.jsonl]

A random GPT-2 over six words with at most five tokens (9,331 sequences, enumerated at the end of
every run: the KL values are exact). Two targets: a pointwise constraint p ∝ a·[has "b"] (tb with
min_log_b = -10) and a tilt p ∝ a·exp(count("b")/0.5). Two proposals: on-policy (q = π) and fixed
(q = a). For each (target, proposal, method, lr) and seed: 100 steps × 64 samples, one update per
step; final exact KL(p‖π), TV(p, π) and KL(π‖a). Prints mean ± s.e. over seeds, and the records
as JSON lines to --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from bayesalign.config import apply_overrides, parse_config
from bayesalign.config.build import build_models, build_target, build_trainer

WORDS = ["a", "b", "c", "d", "e", "f"]
BASE = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 3, "n_layer": 2, "n_embd": 32}},
    "sampling": {"max_new_tokens": 5},
    "training": {"steps": 100, "batch_size": 64},
    "eval": {"samples": 64, "exact": True, "report": False},
}
TARGETS = {
    "has_b": ({"constraints": [{"type": "word", "words": ["b"]}]}, ["training.tb={min_log_b: -10}"]),
    "tilt_b": (
        {"reward": {"scorer": {"type": "regex", "pattern": r"\bb\b", "count": True}, "beta": 0.5}},
        [],
    ),
}
PROPOSALS = {"on_policy": "training.proposal.update=on_policy", "q=a": "training.proposal.update=fixed"}
SHOWN = ("exact_kl_p_pi", "exact_tv_p_pi", "exact_kl_pi_a")


def run(target: str, proposal: str, method: str, lr: float, seed: int, steps: int) -> dict:
    section, tb_options = TARGETS[target]
    raw = copy.deepcopy(BASE) | {"target": section}
    raw["eval"]["every"] = steps
    overrides = [f"training.method={method}", PROPOSALS[proposal], f"training.lr={lr}"]
    overrides += [f"training.seed={seed}", f"training.steps={steps}"]
    overrides += tb_options if method == "tb" else []
    config = parse_config(apply_overrides(raw, overrides))
    policy, prior = build_models(config.model, config.prompt, config.training.seed)
    trainer = build_trainer(config, policy, build_target(config.target, prior))
    started = time.process_time()
    records = trainer.fit()
    first, last = records[0], records[-1]
    return {
        "target": target,
        "proposal": proposal,
        "method": method,
        "lr": lr,
        "seed": seed,
        "steps": steps,
        "samples": steps * config.training.batch_size,
        "start_kl_p_pi": first["exact_kl_p_pi"],
        **{k: last[k] for k in SHOWN},
        "cpu_s": time.process_time() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lrs", default="3e-3,1e-2")
    parser.add_argument("--out", default="tb_compare.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with open(args.out, "a") as out:
        for target in TARGETS:
            for proposal in PROPOSALS:
                for method in ("gdc++", "tb"):
                    for lr in (float(x) for x in args.lrs.split(",")):
                        results = [run(target, proposal, method, lr, s, args.steps) for s in seeds]
                        for r in results:
                            out.write(json.dumps(r) + "\n")
                        rows.append(summarise(results))
                        print(format_row(rows[-1]), flush=True)


def summarise(results: list[dict]) -> dict:
    row = {k: results[0][k] for k in ("target", "proposal", "method", "lr")}
    for key in SHOWN:
        values = [r[key] for r in results]
        spread = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        row[key] = (statistics.mean(values), spread)
    row["start_kl_p_pi"] = results[0]["start_kl_p_pi"]
    row["cpu_s"] = statistics.mean(r["cpu_s"] for r in results)
    return row


def format_row(row: dict) -> str:
    cells = [row["target"], row["proposal"], row["method"], f"{row['lr']:g}", f"{row['start_kl_p_pi']:.3f}"]
    cells += [f"{row[k][0]:.3f} ± {row[k][1]:.3f}" for k in SHOWN]
    return "| " + " | ".join(cells) + f" | {row['cpu_s']:.1f} |"


if __name__ == "__main__":
    main()
