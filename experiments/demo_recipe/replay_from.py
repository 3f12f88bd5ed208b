"""Passes over a fixed pool of prior samples: which rows, which objective (exact, toy space).

    .venv/bin/python experiments/demo_recipe/replay_from.py [--lr 3e-3] [--steps 300] [--seeds 0,1,2]

A random GPT-2 over six words, at most five tokens (9,331 sequences, enumerated at every
evaluation: the KL values are exact); p ∝ a·[has "b"]. A pool of 768 prior samples per seed,
a third held out; training reuses the other 514 rows in passes, 32 samples per step:
  - posterior-dpg: `replay_from: posterior` with DPG — maximum likelihood on the split's
    accepted samples (the demo's recipe);
  - prior-gdc++: `replay_from: prior` with GDC++ — every row, q = a, advantage b/Z − π/a;
  - prior-dpg: `replay_from: prior` with DPG — every row, weight b/Z (the control: the same
    rows as prior-gdc++ without its π/a term, i.e. maximum likelihood on the accepted rows
    diluted by zero-weight rejected ones).
Prints the exact KL(p‖π) every 25 steps per run, then the best and last values, mean ± s.e.
over seeds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

from bayesalign.config import apply_overrides, parse_config
from bayesalign.config.build import build_models, build_target, build_trainer

WORDS = ["a", "b", "c", "d", "e", "f"]
BASE = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 3, "n_layer": 2, "n_embd": 32}},
    "sampling": {"max_new_tokens": 5},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    "training": {"batch_size": 32, "replay_pool": True, "proposal": {"update": "fixed"}},
    "eval": {
        "samples": 64,
        "exact": True,
        "report": False,
        "every": 25,
        "pool": {"samples": 768, "holdout": 0.33, "cache": False},
    },
}
VARIANTS = {
    "posterior-dpg": ("posterior", "dpg"),
    "prior-gdc++": ("prior", "gdc++"),
    "prior-dpg": ("prior", "dpg"),
}


def run(variant: str, lr: float, seed: int, steps: int) -> list[tuple[int, float]]:
    rows, method = VARIANTS[variant]
    overrides = [f"training.method={method}", f"training.replay_from={rows}", f"training.lr={lr}"]
    overrides += [f"training.seed={seed}", f"training.steps={steps}", f"eval.pool.seed={seed}"]
    config = parse_config(apply_overrides(copy.deepcopy(BASE), overrides))
    policy, prior = build_models(config.model, config.prompt, config.training.seed)
    trainer = build_trainer(config, policy, build_target(config.target, prior))
    return [(r["step"], r["exact_kl_p_pi"]) for r in trainer.fit()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    args = parser.parse_args()
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    for variant in VARIANTS:
        for seed in args.seeds:
            started = time.process_time()
            curve = run(variant, args.lr, seed, args.steps)
            curves.setdefault(variant, []).append(curve)
            points = " ".join(f"{step}:{kl:.3f}" for step, kl in curve)
            print(f"{variant} seed {seed}: {points} ({time.process_time() - started:.0f} CPU s)", flush=True)
    for variant, runs in curves.items():
        best, last = [min(kl for _, kl in c) for c in runs], [c[-1][1] for c in runs]
        se = lambda v: statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else float("nan")  # noqa: E731
        print(
            f"{variant}: best {statistics.fmean(best):.3f} ± {se(best):.3f}, "
            f"last {statistics.fmean(last):.3f} ± {se(last):.3f}"
        )


if __name__ == "__main__":
    main()
