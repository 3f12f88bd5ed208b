"""Table of probe.py runs (its --out jsonl): per run the best held-out KL(p‖π), its paired gain
over the prior on the same held-out p-samples, and the split of that KL into the part that
satisfaction alone explains and the rest.

π puts mass s = E_π[b] on the constraint's set B, and p lives on B, so
KL(p‖π) = −log s + KL(p‖π_B) with π_B = π(·|B): the tilt a·e^{λb} (the KL frontier) has the
second term 0, so −log s is the least KL(p‖π) any model with satisfaction s can have, and the
rest is how far π's positive texts are distributed differently from the prior's.

    .venv/bin/python experiments/demo_recipe/probe_table.py runs.jsonl
"""

from __future__ import annotations

import json
import math
import sys

import torch

from bayesalign import estimators as est
from bayesalign.estimators import Estimate


def paired_gain(run: dict) -> Estimate | None:
    """Mean ± s.e. of log π_best − log π_prior over the held-out p-samples."""
    lp = run.get("val_log_pi")
    if not lp:
        return None
    best, prior = (torch.tensor(lp[k], dtype=torch.float64) for k in ("best", "0.0"))
    return est.mean(best - prior)


def variant(args: dict) -> str:
    objective = args["objective"]
    if objective == "value":  # which prefixes the cross-entropy fits
        objective += " (all prefixes)" if args["value_prefixes"] == "all" else " (terminal)"
    if objective == "cv":  # which baseline c_t the control variate uses
        objective += " (c = π(x<t)/a(x<t))" if args["cv_baseline"] == "prefix" else " (c = 1)"
    parts = [objective, f"lr {args['lr']:g}", f"mb {args['minibatch']}"]
    if args["seed"]:
        parts.insert(0, f"**seed {args['seed']}** (its own split)")
    if args.get("online"):
        lr = args.get("online_lr") or args["lr"]
        if args.get("online_objective") == "kl":
            method = f"KL-REINFORCE (λ = {args['online_lambda']:g}, lr {lr:g})"
        else:
            method = f"GDC++ (lr {lr:g})"
        parts.append(f"then {args['online']} on-policy {method} steps × {args['online_batch']}")
    if args.get("prior_ce"):
        parts.append(f"prior-CE {args['prior_ce']:g}")
    if args.get("decay"):
        parts.append("lr decayed linearly to 0")
    if args.get("average"):
        parts.append(f"avg {args['average']:g}")
    if args.get("dropout"):
        parts.append(f"LoRA dropout {args['dropout']:g}")
    if args.get("optimizer", "adamw") != "adamw":
        parts.append(f"{args['optimizer'].upper()} (momentum {args['momentum']:g})")
    if args["r"] == 0:
        parts.append("full fine-tuning")
    elif args["r"] != 16 or args["modules"] != "q_proj,k_proj,v_proj,o_proj" or args["layers"]:
        parts.append(f"LoRA r{args['r']} {args['modules']} layers {args['layers'] or 'all'}")
    return ", ".join(parts)


print(
    "| variant | epochs run | best at epoch | held-out KL(p‖π) | paired gain over the prior | "
    "satisfaction s | −log s | KL(p‖π_B) = rest | KL(π‖a) | frontier excess | CPU s |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|")
with open(sys.argv[1]) as f:
    runs = [json.loads(line) for line in f]
for run in runs:
    a = run["args"]
    evaluated = run.get("extrapolation", []) + run.get("online", []) + run["history"]
    se = next((h["val_kl_se"] for h in evaluated if h.get("val_kl") == run["val_kl"]), float("nan"))
    best_at = run["best_epoch"]
    best_at_s = f"{best_at:.2f}" if best_at < 200 else f"online step {best_at - 200:.0f}"
    if run.get("extrapolation"):
        alpha = next((x["alpha"] for x in run["extrapolation"] if x["val_kl"] == run["val_kl"]), 1.0)
        best_at_s += f", α = {alpha:g}"
    gain = paired_gain(run)
    gain_s = f"{gain:.3f}" if gain else "–"
    s, s_se = run["satisfaction"], run["satisfaction_se"]
    print(
        f"| {variant(a)} | {a['epochs']:g} | {best_at_s} | {run['val_kl']:.3f} ± {se:.3f} | {gain_s} | "
        f"{s:.3f} ± {s_se:.3f} | {-math.log(s):.2f} ± {s_se / s:.2f} | "
        f"{run['val_kl'] + math.log(s):.2f} ± {math.hypot(se, s_se / s):.2f} | "
        f"{run['kl_pi_a']:.3f} ± {run['kl_pi_a_se']:.3f} | {run['frontier_excess']:.2f} | {run['cpu']:.0f} |"
    )
