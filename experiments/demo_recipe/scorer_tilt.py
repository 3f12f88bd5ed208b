"""Probe for the demo (issue 15): the prior tilted token by token by what the scorer says about
each candidate next token, π_w(v | x<t) ∝ a(v | x<t)·exp(w·φ(x<t, v)), with a handful of
weights w fitted by maximum likelihood on the training split's exact p-samples.

Why: LoRA's maximum likelihood on a few hundred p-samples stops at a held-out gain of ≈ 0.3
nats (docs/demo-recipe.md), and two weights on the scorer's verdict of each token's text alone
(logit_bias.py --features scorer) reach the same. The scorer can also be asked about the token in
its context: φ holds
- s(v)⁺, s(v)⁻: the scorer (its threshold removed) on the token's text alone, for every v;
- Δ⁺, Δ⁻ with Δ = s(x<t ⊕ v) − s(x<t): how much appending v changes the score of the text so
  far, for the ``--top`` likeliest tokens under a at that position (0 for the others); this sees
  negations, "but" and intensifiers, which a context-free bias cannot;
- up, down: whether appending v turns the constraint's verdict on the text so far from 0 to 1
  (or from 1 to 0), for the same candidates.
Three nested families are fitted (token; token + Δ; all six) and the one with the lowest held-out
KL(p‖π) is sampled.
log π_w is concave in w, so L-BFGS finds the one optimum; no learning rate, seed or pass count
decides where it ends. Exact log π_w for KL(p‖π) on the held-out p-samples; fresh samples of π_w
drawn token by token with the same features for satisfaction and KL(π‖a).

    nice .venv/bin/python experiments/demo_recipe/scorer_tilt.py --pool 2560 --top 32 --out tilt.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
from types import SimpleNamespace

import torch
from demo_split import (
    Clock,
    append_record,
    fresh_metrics,
    load_demo,
    paired_against,
    split_arguments,
    token_scores,
)

from bayesalign import estimators as est
from bayesalign.decoding import draw_tokens, uniforms
from bayesalign.samples import Samples

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
split_arguments(parser, eval_samples=256)
parser.add_argument("--top", type=int, default=32, help="candidates per position that get Δ (0: none)")
parser.add_argument("--iters", type=int, default=40, help="L-BFGS iterations")
parser.add_argument("--against", default=None, help="probe.py's jsonl: paired differences")
args = parser.parse_args()
clock = Clock()
demo = load_demo(args, lora=False)
prior, target, params, split = demo.prior, demo.target, demo.params, demo.split
full, val, train_pool = split.full, split.val, split.train_pool(target)
vocab = prior.module.get_output_embeddings().weight.shape[0]
scores = token_scores(prior, target, vocab)
scorer, threshold, token_text, free = scores.scorer, scores.threshold, scores.texts, scores.features
print(clock(), f"scorer on {vocab:,} token texts", flush=True)


N_WEIGHTS = 6  # s(v)⁺, s(v)⁻ for every token; Δ⁺, Δ⁻, up, down for the top candidates


@dataclasses.dataclass
class Positions:
    """What log π_w needs at each generated position: log a(·|x<t) [P, V], the token drawn [P],
    its row [P], and the context features: the top candidates' ids [P, k] and their features
    [P, k, 4] (Δ⁺, Δ⁻, the verdict crossing the threshold upwards, and downwards)."""

    log_a: torch.Tensor
    token: torch.Tensor
    row: torch.Tensor
    top: torch.Tensor
    delta: torch.Tensor


def context_features(log_a: torch.Tensor, prefixes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``--top`` likeliest next tokens under a at each position and, per candidate v, with
    Δ = s(prefix ⊕ v) − s(prefix): Δ⁺, Δ⁻, and whether appending v makes the constraint's verdict
    b on the text so far turn from 0 to 1 (or from 1 to 0)."""
    top = (
        log_a.topk(args.top, dim=-1).indices if args.top else torch.zeros(len(prefixes), 0, dtype=torch.long)
    )
    texts = [p + token_text[v] for p, ids in zip(prefixes, top.tolist(), strict=True) for v in ids]
    after = scorer(texts).float().view(len(prefixes), args.top) if args.top else torch.zeros(len(prefixes), 0)
    before = scorer(prefixes).float()[:, None]
    delta = after - before
    b_after, b_before = after > threshold, before > threshold
    up, down = (b_after & ~b_before).float(), (~b_after & b_before).float()
    return top, torch.stack([delta.clamp(min=0), delta.clamp(max=0), up, down], dim=-1)


@torch.no_grad()
def positions_of(samples: Samples) -> Positions:
    logs, tokens, rows, tops, deltas = [], [], [], [], []
    for start in range(0, len(samples), 16):
        chunk = samples.select(range(start, min(start + 16, len(samples))))
        log_a = torch.log_softmax(prior.generated_logits(chunk)[0].float(), dim=-1)
        for r in range(len(chunk)):
            n = int(chunk.mask[r].sum())
            ids = chunk.ids[r, :n].tolist()
            prefixes = [prior.tokenizer.decode(ids[:t]) for t in range(n)]
            top, delta = context_features(log_a[r, :n], prefixes)
            logs.append(log_a[r, :n])
            tokens.append(chunk.ids[r, :n])
            rows.append(torch.full((n,), start + r))
            tops.append(top)
            deltas.append(delta)
    return Positions(*(torch.cat(x) for x in (logs, tokens, rows, tops, deltas)))


def tilted(log_a: torch.Tensor, top: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log π_w(·|x<t) [N, V] from the prior's log-probabilities and the features."""
    z = log_a + free @ w[:2]
    ctx = delta @ w[2:]
    z = z.scatter_add(1, top, ctx)
    return torch.log_softmax(z, dim=-1)


def log_pi(pos: Positions, w: torch.Tensor, n_rows: int) -> torch.Tensor:
    """log π_w(x) per row (differentiable in w)."""
    out = torch.zeros(n_rows, dtype=torch.float64)
    for s in range(0, len(pos.token), 2048):
        sl = slice(s, s + 2048)
        lp = tilted(pos.log_a[sl], pos.top[sl], pos.delta[sl], w)
        out = out.index_add(0, pos.row[sl], lp.gather(1, pos.token[sl, None])[:, 0].double())
    return out


def fit(pos: Positions, n_rows: int, keep: list[int]) -> torch.Tensor:
    """Maximum likelihood of w on the training p-samples, by L-BFGS (log π_w is concave in w);
    the weights not in ``keep`` stay 0."""
    mask = torch.zeros(N_WEIGHTS)
    mask[keep] = 1
    w = torch.zeros(N_WEIGHTS, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=args.iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -log_pi(pos, w * mask, n_rows).sum() / n_rows
        loss.backward()
        return loss

    opt.step(closure)
    return (w * mask).detach()


@torch.no_grad()
def sample_batch(w: torch.Tensor, b: int, generator: torch.Generator) -> Samples:
    """b fresh samples of π_w, token by token on the prior's KV cache, the features at each step;
    log q = log π_w per token (EOS included, 0 after it)."""
    eos = prior.tokenizer.eos_token_id
    prompt_ids, prompt_mask = prior.encode_prompts([prior.prompt] * b)
    attention = prompt_mask.long()
    out = prior.module(input_ids=prompt_ids, attention_mask=attention, use_cache=True)
    ids, masks, log_q = [], [], []
    alive = torch.ones(b, dtype=torch.bool)
    for _ in range(params.max_new_tokens):
        log_a = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        done = torch.stack(ids, 1).tolist() if ids else [[] for _ in range(b)]
        top, delta = context_features(log_a, [prior.tokenizer.decode(r) for r in done])
        lp = tilted(log_a, top, delta, w)
        tok = draw_tokens(lp, uniforms(b, generator, lp.device))
        tok = torch.where(alive, tok, torch.full_like(tok, eos))
        ids.append(tok)
        masks.append(alive.clone())
        log_q.append(torch.where(alive, lp.gather(1, tok[:, None])[:, 0], torch.zeros(b)))
        alive = alive & (tok != eos)
        if not alive.any():
            break
        attention = torch.cat([attention, torch.ones(b, 1, dtype=torch.long)], 1)
        out = prior.module(
            input_ids=tok[:, None],
            attention_mask=attention,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    ids_t, mask_t = torch.stack(ids, 1), torch.stack(masks, 1)
    texts = prior.decode(ids_t, mask_t)
    return Samples(prompt_ids, prompt_mask, ids_t, mask_t, torch.stack(log_q, 1), texts)


train, held_out = train_pool.p_samples(), val.p_samples()
train_pos, val_pos = positions_of(train), positions_of(held_out)
print(clock(), f"features at {len(train_pos.token):,} + {len(val_pos.token):,} positions", flush=True)
prior_lp = log_pi(val_pos, torch.zeros(N_WEIGHTS), len(held_out))
print(clock(), f"w = 0 (the prior): held-out KL(p‖π) {val.kl_p_model(prior_lp):.4f}", flush=True)
families = {"token": [0, 1], "token + context": [0, 1, 2, 3], "token + context + crossings": list(range(6))}
if args.top == 0:
    families = {"token": [0, 1]}
fits = {}
for name, keep in families.items():
    w = fit(train_pos, len(train), keep)
    val_lp = log_pi(val_pos, w, len(held_out)).detach()
    kl, gain = val.kl_p_model(val_lp), est.mean(val_lp - prior_lp)
    train_kl = train_pool.kl_p_model(log_pi(train_pos, w, len(train)).detach())
    fits[name] = {
        "w": w.tolist(),
        "val_kl": kl.value,
        "val_kl_se": kl.stderr,
        "gain": gain.value,
        "gain_se": gain.stderr,
        "train_kl": train_kl.value,
        "val_log_pi": val_lp.tolist(),
    }
    print(
        clock(),
        f"{name}: w = {[round(x, 3) for x in w.tolist()]}  held-out KL(p‖π) {kl:.4f} "
        f"(train split {train_kl.value:.4f})  paired gain {gain:.4f}",
        flush=True,
    )
best = min(fits, key=lambda k: fits[k]["val_kl"])
w = torch.tensor(fits[best]["w"])
print(clock(), f"best: {best}; sampling {args.eval} from π_w", flush=True)
generator = torch.Generator().manual_seed(1234)
samples = Samples.concat(
    [sample_batch(w, min(args.batch, args.eval - s), generator) for s in range(0, args.eval, args.batch)]
)
log_q = samples.token_log_q.sum(-1).double()
log_a = prior.log_prob_frozen(samples, batch_size=32).double()
fresh = fresh_metrics(SimpleNamespace(evidence=target.evidence(samples), log_q=log_q), log_a, full)
print(clock(), f"{fresh.line()}  held-out KL(p‖π) {fits[best]['val_kl']:.3f}", flush=True)
for t in samples.texts[:5]:
    print("  ", repr(t))
against = paired_against(args.against, args, torch.tensor(fits[best]["val_log_pi"])) if args.against else []
summary = {
    "args": vars(args),
    "log_z": full.log_z().value,
    "fits": fits,
    "best": best,
    **fresh.record(),
    "fresh_texts": samples.texts,
    "against": against,
    "wall": clock.wall(),
    "cpu": clock.cpu(),
}
append_record(args.out, summary)
