"""Probe for the demo (issue 15): the library's scorer tilt (bayesalign.scorer_tilt, fitted by
bayesalign.tilt_fit) on the demo's pool split, the same held-out p-samples as the other probes.

It differs from scorer_tilt.py (the experiment it came from) in three ways: weights per bucket
of tokens still to come (``--edges``), an "ends unsatisfied" feature on EOS, and candidate texts
decoded from ids (not the prefix's text + the token's). Held-out KL(p‖π) is exact-sample (the
compact fit's log π_w, checked against the model's own scoring on a few rows); satisfaction,
KL(π‖a) and the frontier excess on ``--eval`` fresh samples of each tilted model. The features
are computed once; ``--variants`` fits several bucketings and penalties on them.

    nice .venv/bin/python experiments/demo_recipe/library_tilt.py --seed 0 \
        --variants '0/1e-4;0,1,2,3,6,12/1e-4;0,1,2,3,6,12/1e-2' --out lib.jsonl
"""

from __future__ import annotations

import argparse

import torch
from demo_split import (
    Clock,
    append_record,
    load_demo,
    paired_against,
    sample_fresh,
    split_arguments,
    tilt_fit_record,
)

from bayesalign import estimators as est
from bayesalign.scorer_tilt import FEATURES, ScorerTilt, tilted
from bayesalign.tilt_fit import TiltFit

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
split_arguments(parser, eval_samples=256)
parser.add_argument("--top", type=int, default=32)
parser.add_argument(
    "--variants",
    default="0/1e-4",
    help="';'-separated EDGES/L2[/FEATURES] fits on the same features, e.g. "
    "'0/1e-4;0,1,2,3,6,12/1e-2;0/1e-4/s+,s-,end' (EDGES: first tokens-to-go of each bucket, from 0; "
    "FEATURES: comma-separated names of the ones fitted, default all)",
)
parser.add_argument("--iters", type=int, default=100)
parser.add_argument("--against", default=None, help="probe.py's jsonl: paired differences")
args = parser.parse_args()
clock = Clock()
demo = load_demo(args, lora=False)
prior, split = demo.prior, demo.split
train, held_out = demo.p_samples()


def make_tilt(edges: tuple[int, ...]) -> ScorerTilt:
    return demo.scorer_tilt(top=args.top, edges=edges)


fit, val_fit = TiltFit(make_tilt((0,)), prior, train), TiltFit(make_tilt((0,)), prior, held_out)
print(clock(), f"features at {len(fit.pos.taken):,} + {len(val_fit.pos.taken):,} positions", flush=True)
with torch.no_grad():
    prior_lp = val_fit.log_prob(torch.zeros(1, len(FEATURES)))
print(clock(), f"prior: held-out KL(p‖π) {split.val.kl_p_model(prior_lp):.4f}", flush=True)
first_lp = None
for variant in args.variants.split(";"):
    edges_text, l2, *only = variant.split("/")
    edges = tuple(int(e) for e in edges_text.split(","))
    tilt = make_tilt(edges)
    fit.tilt = val_fit.tilt = tilt  # the features do not depend on the buckets
    mask = torch.ones(len(edges), len(FEATURES))
    if only:  # only these features (names of FEATURES, comma-separated); the others stay at 0
        mask[:, [i for i, f in enumerate(FEATURES) if f not in only[0].split(",")]] = 0
    mean_log_pi = fit.fit(l2=float(l2), iters=args.iters, mask=mask)
    with torch.no_grad():
        val_lp = val_fit.log_prob(tilt.weights)
    model = tilted(prior, tilt)
    check = held_out.select(range(4))
    scored = model.log_prob_frozen(check).double()
    assert torch.allclose(scored, val_lp[:4], atol=1e-3), (scored, val_lp[:4])
    kl, gain = split.val.kl_p_model(val_lp), est.mean(val_lp - prior_lp)
    versus = None if first_lp is None else est.mean(first_lp - val_lp)
    first_lp = val_lp if first_lp is None else first_lp
    print(
        clock(),
        f"edges {edges} l2 {l2}: train mean log π_w {mean_log_pi:.4f}, held-out KL(p‖π) {kl:.4f}, "
        f"gain {gain:.4f}" + ("" if versus is None else f", − the first variant's (paired) {versus:.4f}"),
        flush=True,
    )
    fresh, samples = sample_fresh(model, demo, args.eval, args.batch)
    print(clock(), fresh.line(), flush=True)
    against = paired_against(args.against, args, val_lp) if args.against else []
    summary = {
        "args": vars(args),
        "edges": list(edges),
        "l2": float(l2),
        "features": only[0].split(",") if only else list(FEATURES),
        **tilt_fit_record(split, tilt.weights, mean_log_pi, kl, gain),
        "versus_first": None if versus is None else [versus.value, versus.stderr],
        "val_log_pi": val_lp.tolist(),
        **fresh.record(),
        "fresh_texts": samples.texts,
        "against": against,
        "wall": clock.wall(),
        "cpu": clock.cpu(),
    }
    append_record(args.out, summary)
