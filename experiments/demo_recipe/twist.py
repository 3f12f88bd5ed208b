"""Probe for the demo (issue 15): a learned twist π ∝ a·σ(u_θ) (src/bayesalign/twisted.py) fitted
by binary cross-entropy on the demo pool's training split (every sample of a, b = 0 or 1, labels
each of its prefixes), instead of DPG on its p-samples.

Same pool, split and estimators as probe.py and logit_bias.py (--pool, --val, --seed): after
every ``--check`` updates the held-out KL(p‖π) on the validation split's exact p-samples; the
best is kept; then satisfaction, KL(π‖a) and the frontier excess on fresh samples of π.

    nice .venv/bin/python experiments/demo_recipe/twist.py --pool 2560 --epochs 3 --out twist.jsonl
"""

from __future__ import annotations

import argparse

import torch
from demo_split import Clock, append_record, fresh_metrics, load_demo, split_arguments

from bayesalign import estimators as est
from bayesalign.proposals import propose
from bayesalign.twist_fit import TwistFitSettings, TwistFitter

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
split_arguments(parser, eval_samples=128)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--minibatch", type=int, default=32)
parser.add_argument("--check", type=int, default=27, help="updates between held-out checks")
parser.add_argument("--head", default="embedding")
parser.add_argument("--lora-r", type=int, default=16)
parser.add_argument(
    "--trunk", default="copy", help="copy (LoRA on a copy of a's trunk) or prior (the head on a's own states)"
)
args = parser.parse_args()
clock = Clock()
demo = load_demo(args, lora=False)  # the prior stays plain; LoRA goes on the twist's copy
prior, target, params, split = demo.prior, demo.target, demo.params, demo.split
draws, train_rows, full, val = split.draws, split.train_rows, split.full, split.val
held_out = val.p_samples()
lora = {
    "r": args.lora_r,
    "lora_alpha": 2 * args.lora_r,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
lora = lora if args.trunk == "copy" else None  # on a's own trunk only the head trains
settings = TwistFitSettings(
    lr=args.lr, batch_size=args.minibatch, seed=args.seed, head=args.head, lora=lora, trunk=args.trunk
)
fitter = TwistFitter(target, params, settings)
fitter.add(draws.samples.select(train_rows))
print(
    clock(),
    f"pool {len(draws)}: train {len(train_rows)} samples of a ({fitter.labels.mean():.3f} with b = 1), "
    f"held-out p-samples {len(held_out)}",
    flush=True,
)
log_a_val = prior.log_prob_frozen(held_out, batch_size=32).double()
prior_kl = val.kl_p_model(log_a_val)
print(clock(), f"the prior: held-out KL(p‖π) {prior_kl:.4f}", flush=True)
trainable = [p for p in fitter.model.module.parameters() if p.requires_grad]
rows, best = [], (prior_kl.value, 0, [p.detach().clone() for p in trainable], log_a_val)
updates = 0
for epoch in range(args.epochs):
    perm = torch.randperm(len(fitter.labels), generator=fitter.generator)
    losses = []
    for i in range(0, len(perm), args.minibatch):
        losses.append(fitter.update(perm[i : i + args.minibatch]))
        updates += 1
        if updates % 10 == 0:
            print(
                clock(),
                f"epoch {epoch + 1} row {i}/{len(perm)} loss {sum(losses) / len(losses):.4f}",
                flush=True,
            )
        last = i + args.minibatch >= len(perm)
        if updates % args.check and not last:
            continue
        val_lp = fitter.model.log_prob_frozen(held_out, batch_size=32).double()
        kl = val.kl_p_model(val_lp)
        print(clock(), f"after {updates} updates: held-out KL(p‖π) {kl:.4f}", flush=True)
        rows.append({"updates": updates, "val_kl": kl.value, "val_kl_se": kl.stderr, "cpu": clock.cpu()})
        if kl.value < best[0]:
            best = (kl.value, updates, [p.detach().clone() for p in trainable], val_lp)
best_kl, best_updates, state, best_val_lp = best
with torch.no_grad():
    for p, kept in zip(trainable, state, strict=True):
        p.copy_(kept)
paired = est.mean(best_val_lp - log_a_val)  # KL(p‖a) − KL(p‖π), on the same held-out p-samples
print(
    clock(),
    f"best after {best_updates} updates; paired gain over the prior {paired:.4f}; sampling {args.eval}",
    flush=True,
)
d = propose(
    target,
    fitter.model,
    args.eval,
    params,
    generator=torch.Generator().manual_seed(1234),
    batch_size=args.batch,
)
log_a = prior.log_prob_frozen(d.samples, batch_size=32).double()
fresh = fresh_metrics(d, log_a, full)
print(
    clock(),
    f"{fresh.line()}  held-out KL(p‖π) {best_kl:.3f}  (−log Z {-full.log_z().value:.3f})",
    flush=True,
)
for t in d.samples.texts[:5]:
    print("  ", repr(t))
summary = {
    "args": vars(args),
    "log_z": full.log_z().value,
    "prior_val_kl": prior_kl.value,
    "checks": rows,
    "best_updates": best_updates,
    "val_kl": best_kl,
    "paired_gain": paired.value,
    "paired_gain_se": paired.stderr,
    **fresh.record(),
    "wall": clock.wall(),
    "cpu": clock.cpu(),
}
append_record(args.out, summary)
