"""probe.py's options (experiments/demo_recipe/probe.py has the why of each variant)."""

from __future__ import annotations

import argparse


def parse() -> argparse.Namespace:
    """The parsed options, checked for combinations the probe cannot run."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=1536)
    parser.add_argument("--val", type=float, default=0.33, help="share of the pool's rows held out")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--minibatch", type=int, default=16)
    parser.add_argument("--r", type=int, default=16, help="LoRA rank; 0: full fine-tuning")
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    parser.add_argument("--momentum", type=float, default=0.9, help="sgd's momentum")
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="LoRA dropout on the adapters' inputs while training (a regulariser against memorising the "
        "training p-samples' late tokens, where --positions shows the over-fitting)",
    )
    parser.add_argument("--modules", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument(
        "--layers", type=int, default=0, help="LoRA only on the last this many layers (0: all)"
    )
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64, help="sampling batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--positions",
        action="store_true",
        help="at the end, the kept π's gain E[log π(x_t|x<t) − log a(x_t|x<t)] per token position t, "
        "on the training and the held-out p-samples (where in the sequence π learned or over-fitted)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--prior-ce",
        type=float,
        default=0.0,
        help="λ: add λ·Σ_t KL(a(·|x<t) ‖ π(·|x<t)) over the full vocabulary at every position of the "
        "training samples (distillation towards the prior: the per-token target becomes "
        "(one-hot + λ·a)/(1 + λ)), to hold π to a wherever the samples carry no signal",
    )
    parser.add_argument(
        "--extrapolate",
        default="",
        help="comma-separated α (e.g. 1.5,2,3): after training, scale the best adapter's update by α "
        "(lora_B ← α·lora_B, i.e. θ = θ_a + α·Δθ) and keep the α with the lowest held-out KL(p‖π)",
    )
    parser.add_argument(
        "--online",
        type=int,
        default=0,
        help="after the pool phase (from its best π): this many on-policy steps on fresh samples of π, "
        "GDC++ (advantage p/π − 1, Z from the training split), keeping the π with the lowest held-out KL",
    )
    parser.add_argument("--online-batch", type=int, default=32)
    parser.add_argument(
        "--online-objective",
        default="gdc",
        choices=["gdc", "kl"],
        help="gdc: GDC++ (advantage p/π − 1); kl: KL-regularised REINFORCE with reward λ·b − log π/a "
        "(k1 in the reward, leave-one-out baseline), whose optimum is the tilt a·e^{λb}: on the KL "
        "frontier, with KL(p‖tilt) = −log s. No importance weights, so no ESS to lose.",
    )
    parser.add_argument("--online-lambda", type=float, default=3.0, help="kl: the reward's scale λ (β = 1/λ)")
    parser.add_argument("--online-lr", type=float, default=None, help="default: --lr")
    parser.add_argument(
        "--online-eval", type=int, default=4, help="on-policy steps between held-out evaluations"
    )
    parser.add_argument(
        "--decay",
        action="store_true",
        help="the pool phase's lr falls linearly to 0 over its --epochs "
        "(SGD's noise floor shrinks with the lr)",
    )
    parser.add_argument(
        "--average",
        type=float,
        default=0.0,
        help="weight average θ̄ ← d·θ̄ + (1 − d)·θ after every step (0: off)",
    )
    parser.add_argument(
        "--objective",
        default="mle",
        choices=["mle", "gdc", "gdc-post", "value", "cv"],
        help="mle: DPG with q = p on the accepted samples; gdc: GDC++ with q = a on every training row; "
        "gdc-post: GDC++ with q = p on the accepted samples (advantage 1 − π/p: a sample that π already "
        "gives more than p(x) is pushed down); value: every training row, the prior's probability of b "
        "after each prefix, V(x≤t) = Z·π(x≤t)/a(x≤t), fitted to b(x) by cross-entropy (see value_loss); "
        "cv: maximum likelihood's gradient with a per-token control variate, on every training row "
        "(see cv_loss)",
    )
    parser.add_argument(
        "--cv-baseline",
        default="prefix",
        choices=["prefix", "one"],
        help="cv: the baseline c_t; prefix: π(x<t)/a(x<t) (detached, at most 1/Z: V(x<t)/Z "
        "when π = p); one: 1",
    )
    parser.add_argument(
        "--value-prefixes",
        default="all",
        choices=["all", "terminal"],
        help="value: cross-entropy at every prefix (all) or at the whole sequence only (terminal)",
    )
    args = parser.parse_args()
    if args.r == 0 and (args.layers or args.dropout or args.extrapolate):
        parser.error("--r 0 fine-tunes the whole model: --layers, --dropout and --extrapolate need LoRA")
    if args.objective == "value" and args.prior_ce:
        parser.error("--objective value reads π's sampled tokens only; it does not take --prior-ce")
    return args
