"""Probe for the demo (issue 15): how close to p gets the prior steered by one vector added to its
residual stream, π_v(x) = a with h_L ← h_L + v after decoder layer L?

Why this family: every LoRA variant in docs/demo-recipe.md ends with the same held-out gain
(≈ 0.3 of the 1.14 nats between a and p) while memorising the training p-samples' late tokens,
and a bias per vocabulary token (logit_bias.py) is too weak because sentiment is decided by words
in context. A residual-stream direction is in between: 576 numbers cannot memorise 511 samples,
and sentiment is known to be close to linear in LM activations (activation addition,
Turner et al. 2023). Two ways to get v:
- contrastive: v = α·(mean h_L over the training rows with b = 1 − mean over b = 0), α on a grid;
- fitted (``--fit-steps``): v at the best layer trained by maximum likelihood on the training
  p-samples (DPG with q = p restricted to this family), from the best contrastive v.
The layer, α and the fitted step are chosen by the held-out KL(p‖π), as the probe's keep-best.

    nice .venv/bin/python experiments/demo_recipe/steering.py --pool 2560 --out steering.jsonl
"""

from __future__ import annotations

import argparse

import torch
from demo_split import Clock, append_record, fresh_metrics, load_demo, split_arguments

from bayesalign import estimators as est
from bayesalign.proposals import propose
from bayesalign.samples import Samples

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
split_arguments(parser, eval_samples=256)
parser.add_argument("--layers", default="8,15,22", help="decoder layers to try (SmolLM2 has 30)")
parser.add_argument("--alphas", default="1,2,4,8", help="scales of the contrastive vector to try")
parser.add_argument("--rows", type=int, default=768, help="training rows for the contrastive means")
parser.add_argument("--fit-steps", type=int, default=0, help="maximum-likelihood steps on v (0: none)")
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--minibatch", type=int, default=16)
parser.add_argument("--check", type=int, default=16, help="fit steps between held-out evaluations")
args = parser.parse_args()
clock = Clock()
demo = load_demo(args)
policy, prior, target, params, split = demo.policy, demo.prior, demo.target, demo.params, demo.split
full, val, train_pool = split.full, split.val, split.train_pool(target)
held_out, train = val.p_samples(), train_pool.p_samples()
print(clock(), f"train p-samples {len(train)}, held-out p-samples {len(held_out)}", flush=True)
# π and a share the base weights (LoRA adapters, disabled for a): a hook on a decoder layer acts on
# both, so log a always comes from the pool's draws (token_log_q) or is scored with no hook on.
decoder = dict(enumerate(next(m for n, m in prior.module.named_modules() if n.endswith("model.layers"))))


def add_to_output(vector: torch.Tensor):
    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return (output[0] + vector.to(output[0].dtype), *output[1:])
        return output + vector.to(output.dtype)

    return hook


@torch.no_grad()
def contrastive(layers: list[int]) -> dict[int, torch.Tensor]:
    """Per layer: mean hidden state after it over the generated positions of the training rows
    with b = 1, minus the same over b = 0."""
    rows = split.train_rows[: args.rows]
    draws = split.rows(rows)
    b = train_pool.evidence.satisfied[: args.rows].bool()
    captured: dict[int, torch.Tensor] = {}

    def capture(layer):
        def hook(module, inputs, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [decoder[i].register_forward_hook(capture(i)) for i in layers]
    sums = {i: torch.zeros(2, decoder[i].self_attn.o_proj.out_features, dtype=torch.float64) for i in layers}
    for start in range(0, len(rows), 32):
        chunk = draws.samples.select(range(start, min(start + 32, len(rows))))
        prior.generated_logits(chunk)
        n_gen = chunk.ids.shape[1]
        for i in layers:
            h = captured[i][:, -n_gen:].double()  # the positions that predict the generated tokens
            per_row = (h * chunk.mask[..., None]).sum(1) / chunk.mask.sum(1, keepdim=True)
            label = b[start : start + len(chunk)]
            sums[i][1] += per_row[label].sum(0)
            sums[i][0] += per_row[~label].sum(0)
    for handle in handles:
        handle.remove()
    n_pos, n_neg = int(b.sum()), int((~b).sum())
    return {i: (sums[i][1] / n_pos - sums[i][0] / n_neg).float() for i in layers}


def held_out_log_pi(layer: int, vector: torch.Tensor) -> torch.Tensor:
    handle = decoder[layer].register_forward_hook(add_to_output(vector))
    try:
        return prior.log_prob_frozen(held_out, batch_size=32).double()
    finally:
        handle.remove()


log_a_held_out = held_out.token_log_q.sum(-1).double()
prior_kl = val.kl_p_model(log_a_held_out)
print(clock(), f"the prior: held-out KL(p‖π) {prior_kl:.4f}", flush=True)
layers = [int(x) for x in args.layers.split(",")]
directions = contrastive(layers)
print(clock(), "contrastive vectors, norms:", {i: round(float(v.norm()), 2) for i, v in directions.items()})
grid, best = [], (prior_kl.value, None, None, log_a_held_out)
for layer in layers:
    for alpha in [float(x) for x in args.alphas.split(",")]:
        lp = held_out_log_pi(layer, alpha * directions[layer])
        kl = val.kl_p_model(lp)
        grid.append({"layer": layer, "alpha": alpha, "val_kl": kl.value, "val_kl_se": kl.stderr})
        print(clock(), f"layer {layer} α {alpha:g}: held-out KL(p‖π) {kl:.4f}", flush=True)
        if kl.value < best[0]:
            best = (kl.value, layer, alpha * directions[layer], lp)

fit_history = []
if args.fit_steps and best[1] is not None:
    layer = best[1]
    vector = best[2].clone().requires_grad_(True)
    opt = torch.optim.Adam([vector], lr=args.lr)
    handle = decoder[layer].register_forward_hook(add_to_output(vector))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    for step in range(1, args.fit_steps + 1):
        rows = order[((step - 1) * args.minibatch + torch.arange(args.minibatch)) % len(train)]
        mb: Samples = train.select(rows)
        logits, _ = prior.generated_logits(mb)
        token_lp = torch.log_softmax(logits.float(), -1).gather(-1, mb.ids[..., None]).squeeze(-1)
        loss = -(token_lp * mb.mask).sum() / len(mb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.check == 0 or step == args.fit_steps:
            with torch.no_grad():
                lp = prior.log_prob_frozen(held_out, batch_size=32).double()
            kl = val.kl_p_model(lp)
            fit_history.append({"step": step, "val_kl": kl.value, "val_kl_se": kl.stderr})
            print(
                clock(),
                f"fit step {step} (epoch {step * args.minibatch / len(train):.2f}): {kl:.4f}",
                flush=True,
            )
            if kl.value < best[0]:
                best = (kl.value, layer, vector.detach().clone(), lp)
    handle.remove()

best_kl, best_layer, best_vector, best_lp = best
paired = est.mean(best_lp - log_a_held_out)  # KL(p‖a) − KL(p‖π_v) on the same p-samples
print(clock(), f"best: layer {best_layer}, held-out KL {best_kl:.4f}, paired gain {paired:.4f}", flush=True)
record = {}
if best_layer is not None:
    handle = decoder[best_layer].register_forward_hook(add_to_output(best_vector))
    d = propose(
        target,
        policy,
        args.eval,
        params,
        generator=torch.Generator().manual_seed(1234),
        batch_size=args.batch,
    )
    handle.remove()
    log_a = prior.log_prob_frozen(d.samples, batch_size=32).double()
    fresh = fresh_metrics(d, log_a, full)
    record = fresh.record()
    print(clock(), fresh.line(), flush=True)
    for text in d.samples.texts[:5]:
        print("  ", repr(text))
summary = {
    "args": vars(args),
    "log_z": full.log_z().value,
    "prior_val_kl": prior_kl.value,
    "grid": grid,
    "fit": fit_history,
    "best_layer": best_layer,
    "val_kl": best_kl,
    "paired_gain": paired.value,
    "paired_gain_se": paired.stderr,
    **record,
    "val_log_pi": best_lp.tolist(),
    "wall": clock.wall(),
    "cpu": clock.cpu(),
}
append_record(args.out, summary)
