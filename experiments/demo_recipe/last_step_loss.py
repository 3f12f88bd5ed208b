"""Probe for the demo (issue 15): what the fitted scorer tilt loses at the last position against
p's own last step, on the held-out p-samples of one split of the demo's pool.

At the last position p(v | x<T) = a(v | x<T)·b(x<T ⊕ v) / V(x<T), V(x<T) = Σ_v a(v | x<T)·b(x<T ⊕ v),
so p's own gain there over a is −log V(x<T) on every p-sample that runs to the horizon. V is
computed over a's likeliest tokens up to a mass of 1 − ``--mass`` (the rest bounds the error:
printed as max rest/V). Also: the tilt's gain per position (by tokens to go), and the gain of a
hard last step that reads only a's K likeliest tokens with weight c (the others keep the
prefix's verdict), for the K and c given, against the fitted weights.

    nice .venv/bin/python experiments/demo_recipe/last_step_loss.py --seed 0 --threads 1
"""

from __future__ import annotations

import argparse

import torch
from demo_split import Clock, load_demo, split_arguments

from bayesalign import estimators as est
from bayesalign.tilt_fit import TiltFit

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
split_arguments(parser, eval_samples=0)
parser.add_argument("--mass", type=float, default=1e-5)
parser.add_argument("--ks", default="32,128,512,2048,8192")
parser.add_argument("--cs", default="5,10,20,50")
args = parser.parse_args()
clock = Clock()
demo = load_demo(args, lora=False)
prior, split = demo.prior, demo.split
train, held = demo.p_samples()
fit = TiltFit(demo.scorer_tilt(top=32, edges=(0, 2, 8)), prior, train)
val = TiltFit(fit.tilt, prior, held)
fit.fit(l2=1e-2)
tilt, horizon, rows_n = fit.tilt, demo.params.max_new_tokens, len(held)
with torch.no_grad():
    per_row = val.log_prob(tilt.weights)
print(clock(), f"held-out KL(p‖π_w) {split.val.kl_p_model(per_row):.4f}", flush=True)

# the tilt's gain log π_w − log a at each held-out position: the compact fit on that step's positions
pos = val.pos
terms = torch.zeros(len(pos.step), dtype=torch.float64)
for t in range(horizon):
    at = pos.step == t
    rows_at = pos.row[at]
    only = TiltFit.__new__(TiltFit)
    only.__dict__.update(val.__dict__)
    only.pos = type(pos)(*(getattr(pos, f)[at] for f in pos.__dataclass_fields__))
    with torch.no_grad():
        terms[at] = only.log_prob(tilt.weights)[rows_at] - pos.log_taken[at].double()
for to_go in range(horizon):
    at = horizon - 1 - pos.step == to_go
    print(
        f"tokens to go {to_go:2d}: positions {int(at.sum()):4d}, tilt's gain per held-out row "
        f"{float(terms[at].sum()) / rows_n:.4f}"
    )

scorer, threshold, tok = tilt.scorer, tilt.threshold, prior.tokenizer
full = [r for r in range(rows_n) if int(held.mask[r].sum()) == horizon]
print(clock(), f"{len(full)} of {rows_n} held-out rows run to the horizon", flush=True)
ks, cs = [int(k) for k in args.ks.split(",")], [float(c) for c in args.cs.split(",")]
exact, worst, hard = [], 0.0, {(k, c): [] for k in ks for c in cs}
last_gain = {int(pos.row[i]): float(terms[i]) for i in (pos.step == horizon - 1).nonzero().squeeze(1)}
with torch.no_grad():
    for s in range(0, len(full), 16):
        chunk = held.select(full[s : s + 16])
        log_a = torch.log_softmax(prior.generated_logits(chunk)[0].float(), -1)[:, horizon - 1].cpu()
        for i, r in enumerate(full[s : s + 16]):
            ids, taken = held.ids[r, : horizon - 1].tolist(), int(held.ids[r, horizon - 1])
            probs, order = log_a[i].exp().double().sort(descending=True)
            keep = int((probs.cumsum(0) < 1 - args.mass).sum()) + 1
            cand = order[:keep].tolist()
            texts = tok.batch_decode([ids + [v] for v in cand], skip_special_tokens=True)
            b = (scorer(texts) > threshold).double()
            v_mass = float((probs[:keep] * b).sum())
            exact.append(-torch.log(torch.tensor(v_mass)).item())
            worst = max(worst, float(probs[keep:].sum()) / v_mass)
            before = float(scorer(tok.batch_decode([ids], skip_special_tokens=True))[0] > threshold)
            rank = cand.index(taken) if taken in cand else len(probs)
            for k in ks:
                read = torch.full_like(probs, before)
                read[: min(k, keep)] = b[:k]
                for c in cs:
                    chosen = c * (read[rank] if rank < len(probs) else before)
                    hard[(k, c)].append(float(chosen - torch.logsumexp(probs.log() + c * read, 0)))
        print(clock(), f"{s + len(chunk.ids)}/{len(full)} rows", flush=True)
exact_t = torch.tensor(exact, dtype=torch.float64)
fitted = torch.tensor([last_gain[r] for r in full], dtype=torch.float64)
loss = est.mean(exact_t - fitted)
print(
    f"p's own last step: gain {exact_t.mean():.4f} per such row, the tilt's {fitted.mean():.4f}; "
    f"the tilt loses {loss} per such row, {loss.value * len(full) / rows_n:.4f} per held-out row; "
    f"max rest/V {worst:.1e}"
)
for (k, c), gains in hard.items():
    over = torch.tensor(gains, dtype=torch.float64) - fitted
    print(
        f"K {k:5d} c {c:4g}: short of p's own step by {float((exact_t - torch.tensor(gains)).mean()):.4f}; "
        f"gain over the fitted weights per held-out row {float(over.sum()) / rows_n:.4f} "
        f"± {float(over.std()) * len(over) ** 0.5 / rows_n:.4f}"
    )
