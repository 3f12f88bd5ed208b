"""Probe for the demo (issue 15): does the scorer tilt get nearer p with more posterior samples?

The issue asks, where the 10-minute demo misses its targets, for the curve of the numbers against
the budget up to an hour and where it would cross. The demo's budget goes almost all into prior
samples (the pool) and the tilt's features on the accepted ones, so the curve's axis is the number
of training p-samples. One large pool (``--pool``, e.g. 10,240: four times the demo's), one split
(a third held out, ``--seed``): the tilt is fitted (the demo's setting: edges [0, 2, 8], l2 1e-2)
on the first N training p-samples for each N of ``--sizes``, and every fit is scored on the same
held-out p-samples (exact-sample estimates, paired between fits) and by ``--eval`` fresh samples
of the tilted π (satisfaction, KL(π‖a), frontier excess). The features are computed once.

    nice .venv/bin/python experiments/demo_recipe/tilt_curve.py --pool 10240 --threads 2 \
        --workers 2 --sizes 128,256,512,1024,0 --out curve.jsonl     # 0: every training p-sample
"""

from __future__ import annotations

import argparse

import torch
from demo_split import Clock, append_record, load_demo, sample_fresh, split_arguments, tilt_fit_record

from bayesalign import estimators as est
from bayesalign.scorer_tilt import FEATURES, tilted
from bayesalign.tilt_fit import TiltFit


def main() -> None:
    """Spawned scorer workers import this file: the work runs only as __main__."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    split_arguments(parser, eval_samples=128)
    parser.add_argument("--sizes", default="128,256,512,1024,0", help="training p-samples per fit (0: all)")
    parser.add_argument("--workers", type=int, default=0, help="scorer processes")
    parser.add_argument("--edges", default="0,2,8")
    parser.add_argument("--l2", type=float, default=1e-2)
    args = parser.parse_args()
    clock = Clock()
    demo = load_demo(args, lora=False)
    prior, split = demo.prior, demo.split
    train, held_out = demo.p_samples()
    tilt = demo.scorer_tilt(top=32, edges=tuple(int(e) for e in args.edges.split(",")), workers=args.workers)
    print(
        clock(),
        f"pool {len(split.draws)}: {len(train)} training, {len(held_out)} held-out p-samples",
        flush=True,
    )
    fit, val_fit = TiltFit(tilt, prior, train), TiltFit(tilt, prior, held_out)
    print(clock(), f"features at {len(fit.pos.taken):,} + {len(val_fit.pos.taken):,} positions", flush=True)
    with torch.no_grad():
        prior_lp = val_fit.log_prob(torch.zeros(len(tilt.edges), len(FEATURES)))
    print(clock(), f"prior: held-out KL(p‖π) {split.val.kl_p_model(prior_lp):.4f}", flush=True)
    largest_lp = None
    for size in sorted((int(s) or len(train) for s in args.sizes.split(",")), reverse=True):
        size = min(size, len(train))
        omega = (torch.arange(len(train)) < size).double()  # the first `size` training p-samples
        mean_log_pi = fit.fit(omega, l2=args.l2)
        with torch.no_grad():
            val_lp = val_fit.log_prob(tilt.weights)
        kl, gain = split.val.kl_p_model(val_lp), est.mean(val_lp - prior_lp)
        versus = None if largest_lp is None else est.mean(largest_lp - val_lp)  # > 0: largest N nearer p
        largest_lp = val_lp if largest_lp is None else largest_lp
        print(
            clock(),
            f"N = {size}: held-out KL(p‖π) {kl:.4f}, gain {gain:.4f}"
            + ("" if versus is None else f", the largest N's − this one's (paired) {versus:.4f}"),
            flush=True,
        )
        model = tilted(prior, tilt)
        fresh, _ = sample_fresh(model, demo, args.eval, args.batch)
        print(clock(), fresh.line(), flush=True)
        append_record(
            args.out,
            {
                "args": vars(args),
                "train_p_samples": size,
                "held_out_p_samples": len(held_out),
                **tilt_fit_record(split, tilt.weights, mean_log_pi, kl, gain),
                "largest_minus_this": None if versus is None else [versus.value, versus.stderr],
                **fresh.record(),
                "wall": clock.wall(),
                "cpu": clock.cpu(),
            },
        )


if __name__ == "__main__":
    main()
