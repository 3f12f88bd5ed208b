"""Train on bench_disco's workload with any library settings, then score the final π with
bench_disco's independent estimator (docs/results/disco_comparison.md, "Every sample reused, and
batch size against steps").

    .venv/bin/python experiments/disco_workload/train_and_score.py NAME \\
        --training '{"proposal": {"update": "on_policy"}, "steps": 200, "batch_size": 128, "lr": 5e-5}' \\
        [--eval '{"every": 1000}'] [--seed 0] [--word w35] [--work-dir runs/disco_workload] [--out rows.jsonl]

The prior is bench_disco's (a 0.41M GPT-2 over w1..w100, initialiser std 0.1, written once to
WORK_DIR/prior); the target b(x) = [x contains WORD]; 20 new tokens, GDC++ at lr 1e-4 and 256
samples per step unless ``--training`` says otherwise. ``--eval`` is merged into the config's
``eval`` section: a replay-pool row needs e.g. ``{"every": 10, "pool": {"samples": 25600,
"holdout": 0.2, "seed": 777, "cache": false}}`` (a pool seed other than the estimator's 12345, so
that the scoring samples are not the training ones). The run goes through ``bayesalign train``
in a child process; its CPU seconds are the child's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument(
        "--training", type=json.loads, default={}, help="JSON: the config's training overrides"
    )
    parser.add_argument(
        "--eval", type=json.loads, default={"every": 1000}, help="JSON: the config's eval overrides"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--word", default="w35", help="the constraint's word (w35: base rate ≈ 0.1)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/disco_workload"))
    parser.add_argument("--out", type=Path, default=Path("disco_workload.jsonl"), help="JSON lines, appended")
    args = parser.parse_args()

    import bench_disco
    import torch

    from bayesalign.models import LanguageModel

    torch.set_num_threads(1)
    prior_dir = args.work_dir / "prior"
    if not prior_dir.exists():
        bench_disco.build_prior(prior_dir, init_std=0.1)
    config = {
        "model": {"name": str(prior_dir)},
        "prompt": "",
        "sampling": {"max_new_tokens": bench_disco.MAX_NEW_TOKENS},
        "target": {"constraints": [{"type": "word", "words": [args.word]}]},
        "training": {
            "method": "gdc++",
            "batch_size": bench_disco.BATCH,
            "lr": 1e-4,
            "seed": args.seed,
            "threads": 1,
            **args.training,
        },
        "eval": {"samples": 64, "save_samples": 0, "report": False, **args.eval},
        "checkpoint": {"every": 100_000},
    }
    run = args.work_dir / f"{args.name}_s{args.seed}"
    config_file = run.with_suffix(".yaml")
    config_file.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    train = [sys.executable, "-m", "bayesalign.cli", "train", str(config_file), "--out", str(run)]
    done = subprocess.run(train, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: bayesalign train failed for {args.name}:\n{done.stderr[-3000:]}")
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    estimator = bench_disco.Estimator(LanguageModel.from_pretrained(prior_dir), 30_000, 1024)
    scores = estimator.score(run / "final", estimator.workload(args.word), args.seed)
    row = {
        "name": args.name,
        "seed": args.seed,
        "word": args.word,
        "training": args.training,
        "eval": args.eval,
        "train_wall": time.perf_counter() - started,
        "train_cpu": child.ru_utime + child.ru_stime,
        **scores,
    }
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
