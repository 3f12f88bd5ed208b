"""A learned twist (src/bayesalign/twisted.py, twist_fit.py) fitted in epochs over a fixed pool of
samples of a, on bench_disco's workload, with early stopping on held-out exact p-samples;
scored by bench_disco's estimator (pool of 30,000 samples of a, seed 12345; the training pool
uses another seed). The side-by-side runs with disco use bench_disco.py's ``bench_twist`` probe
instead (new samples every step, no validation).

    .venv/bin/python experiments/disco_workload/twist.py --word w35 --seed 0 [--epochs 3]
        [--lr 1e-3] [--head vocabulary|embedding] [--samples 25600] [--out twist.jsonl]

Budget: ``--samples`` samples of a in all (a ``--holdout`` share of them held out: its b = 1 rows
are exact p-samples, and −mean log π over them is KL(p‖π) up to a constant, the stopping rule).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_disco  # noqa: E402

from bayesalign.models import LanguageModel  # noqa: E402
from bayesalign.samples import SamplingParams  # noqa: E402
from bayesalign.scorers import WordScorer  # noqa: E402
from bayesalign.targets import Target  # noqa: E402
from bayesalign.twist_fit import TwistFitSettings, TwistFitter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--word", default="w35")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=25_600)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head", default="vocabulary")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/disco_workload"))
    parser.add_argument("--out", type=Path, default=Path("twist.jsonl"))
    parser.add_argument("--name", default="twist-epochs")
    args = parser.parse_args()

    torch.set_num_threads(1)
    prior_dir = args.work_dir / "prior"
    if not prior_dir.exists():
        bench_disco.build_prior(prior_dir, init_std=0.1)
    prior = LanguageModel.from_pretrained(prior_dir)
    target = Target.pointwise(prior, [WordScorer((args.word,))])
    settings = TwistFitSettings(lr=args.lr, batch_size=args.batch, seed=args.seed, head=args.head)
    fitter = TwistFitter(target, SamplingParams(bench_disco.MAX_NEW_TOKENS), settings)
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    pool = bench_disco.draw(prior, args.samples, 777 + args.seed)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))
    n_val = int(args.holdout * len(pool))
    fitter.add(pool.select(order[n_val:]))
    held_out = pool.select(order[:n_val])
    held_out_p = held_out.select(torch.nonzero(target.evidence(held_out).satisfied)[:, 0])
    trainable = [p for p in fitter.model.module.parameters() if p.requires_grad]
    best, best_state, history = math.inf, None, []
    for epoch in range(args.epochs):
        perm = torch.randperm(len(fitter.labels), generator=fitter.generator)
        for i in range(0, len(perm), args.batch):
            fitter.update(perm[i : i + args.batch])
        val_ce = -fitter.model.log_prob_frozen(held_out_p, batch_size=2048).mean().item()
        history.append({"epoch": epoch + 1, "val_ce_p": val_ce, "cpu": time.process_time() - started_cpu})
        print(json.dumps(history[-1]), flush=True)
        if val_ce < best:
            best, best_state = val_ce, [p.detach().clone() for p in trainable]
    with torch.no_grad():
        for p, kept in zip(trainable, best_state, strict=True):
            p.copy_(kept)
    train_cpu, train_wall = time.process_time() - started_cpu, time.perf_counter() - started_wall

    estimator = bench_disco.Estimator(prior, 30_000, 1024)
    with tempfile.TemporaryDirectory() as folder:
        fitter.model.save_pretrained(folder)
        scores = estimator.score(Path(folder), estimator.workload(args.word), args.seed)
    row = {
        "name": args.name,
        "word": args.word,
        "seed": args.seed,
        "args": {k: v for k, v in vars(args).items() if k not in ("work_dir", "out")},
        "train_cpu": train_cpu,
        "train_wall": train_wall,
        "history": history,
        **scores,
    }
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "history"}))


if __name__ == "__main__":
    main()
