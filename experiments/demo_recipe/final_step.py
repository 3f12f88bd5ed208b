"""Probe for the demo (issue 15): the scorer tilt with p's own last step (``final``) against the
same tilt with fitted weights at the last position, on one split of the demo's pool, paired on
the same held-out p-samples. Both fits share one set of features: without the last step the
fit's last-position terms are the weights' (the compact positions are the same; only the
constant log π of the last step is dropped). Satisfaction, KL(π‖a) and the frontier excess on
``--eval`` fresh samples of each.

    nice .venv/bin/python experiments/demo_recipe/final_step.py --seed 0 --final 512 --out final.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from demo_split import Clock, append_record, load_demo, sample_fresh, split_arguments, tilt_fit_record

from bayesalign import estimators as est
from bayesalign.scorer_tilt import FEATURES, tilted
from bayesalign.tilt_fit import TiltFit

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
split_arguments(parser, eval_samples=128)
parser.add_argument("--top", type=int, default=32)
parser.add_argument("--final", type=int, default=512)
parser.add_argument("--edges", default="0,2,8")
parser.add_argument("--l2", type=float, default=1e-2)
args = parser.parse_args()
clock = Clock()
demo = load_demo(args, lora=False)
prior, split = demo.prior, demo.split
train, held_out = demo.p_samples()
edges = tuple(int(e) for e in args.edges.split(","))
tilt = demo.scorer_tilt(top=args.top, edges=edges, final=args.final)
fits = {"final": (TiltFit(tilt, prior, train), TiltFit(tilt, prior, held_out))}
print(clock(), "features", flush=True)


def without_final(fit: TiltFit) -> TiltFit:
    """The same positions with the last step left to the weights (no constant log π there)."""
    copy = TiltFit.__new__(TiltFit)
    copy.__dict__.update(fit.__dict__)
    copy.pos = dataclasses.replace(fit.pos, log_final=torch.full_like(fit.pos.log_final, float("nan")))
    return copy


plain_tilt = demo.scorer_tilt(top=args.top, edges=edges, final=0)
fits["weights"] = tuple(without_final(f) for f in fits["final"])
with torch.no_grad():
    prior_lp = fits["weights"][1].log_prob(torch.zeros(len(edges), len(FEATURES)))
print(clock(), f"prior: held-out KL(p‖π) {split.val.kl_p_model(prior_lp):.4f}", flush=True)
val_lps = {}
for name, model_tilt in (("weights", plain_tilt), ("final", tilt)):
    fit, val_fit = fits[name]
    fit.tilt = val_fit.tilt = model_tilt
    mean_log_pi = fit.fit(l2=args.l2)
    with torch.no_grad():
        val_lp = val_fit.log_prob(model_tilt.weights)
    model = tilted(prior, model_tilt)
    scored = model.log_prob_frozen(held_out.select(range(4))).double()
    assert torch.allclose(scored, val_lp[:4], atol=1e-3), (scored, val_lp[:4])
    val_lps[name] = val_lp
    kl, gain = split.val.kl_p_model(val_lp), est.mean(val_lp - prior_lp)
    versus = est.mean(val_lp - val_lps["weights"]) if name == "final" else None
    print(
        clock(),
        f"{name}: held-out KL(p‖π) {kl:.4f}, gain over the prior {gain:.4f}"
        + ("" if versus is None else f", minus the fitted last step's (paired) {versus:.4f}"),
        flush=True,
    )
    fresh, samples = sample_fresh(model, demo, args.eval, args.batch)
    print(clock(), fresh.line(), flush=True)
    append_record(
        args.out,
        {
            "args": vars(args),
            "last_step": name,
            **tilt_fit_record(split, model_tilt.weights, mean_log_pi, kl, gain),
            "log_pi_gain_over_fitted_last_step": None if versus is None else [versus.value, versus.stderr],
            "val_log_pi": val_lp.tolist(),
            **fresh.record(),
            "fresh_texts": samples.texts,
            "wall": clock.wall(),
            "cpu": clock.cpu(),
        },
    )
