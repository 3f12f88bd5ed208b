"""Probe for the demo recipe (issue 15): how far does DPG with q = a get when its samples are a
posterior pool's training split, reused for several epochs, with early stopping on the held-out
split's KL(p‖π)?  With q = a and a constraint b, DPG's weight P/(Z q) is b/Z: the gradient is
maximum likelihood on the accepted (exact p-) samples, so this is DPG with full sample reuse.

Prints, per half-epoch: wall/CPU seconds, validation KL(p‖π) ± s.e. (pool estimate on prior
draws not used for training); at the end satisfaction and KL(π‖a) on fresh samples of π and the
frontier excess. Run: nice .venv/bin/python experiments/demo_recipe/probe.py --pool 1536 ...
"""

from __future__ import annotations

import contextlib
import math
import time

import probe_args
import torch
from demo_split import append_record
from probe_objectives import cv_loss, value_loss

from bayesalign import estimators as est
from bayesalign.builtin_models import cache_root
from bayesalign.config import load_config
from bayesalign.config.build import build_models, build_target
from bayesalign.objectives import policy_output
from bayesalign.pools import PosteriorPool
from bayesalign.prior_draws import PoolCache, draw_prior
from bayesalign.proposals import propose
from bayesalign.training.averaging import WeightAverage

args = probe_args.parse()
torch.set_num_threads(args.threads)
t0, c0 = time.perf_counter(), time.process_time()


def clock() -> str:
    return f"[{time.perf_counter() - t0:6.0f}s wall {time.process_time() - c0:6.0f}s cpu]"


config = load_config("src/bayesalign/configs/demo.yaml")
lora = {"r": args.r, "alpha": 2 * args.r, "target_modules": args.modules.split(","), "dropout": args.dropout}
model = config.model.model_copy(
    update={"lora": config.model.lora.model_copy(update=lora) if args.r else None}
)
if args.layers:
    n_layers = 30
    keep = range(n_layers - args.layers, n_layers)
    lora["target_modules"] = [
        f"model.layers.{i}.self_attn.{m}" for i in keep for m in args.modules.split(",")
    ]
    model = config.model.model_copy(update={"lora": config.model.lora.model_copy(update=lora)})
policy, prior = build_models(model, config.prompt, args.seed)
target = build_target(config.target, prior, config.sampling)
params = config.sampling.params()
print(clock(), "models loaded", flush=True)
draws, seconds = draw_prior(
    prior,
    args.pool,
    params,
    seed=0,
    batch_size=args.batch,
    cache=PoolCache(cache_root() / "pools"),
    status=lambda m: print(clock(), m, flush=True),
)
print(clock(), f"pool of {len(draws)} ready ({seconds:.0f}s drawing)", flush=True)
n_val = int(len(draws) * args.val)
g = torch.Generator().manual_seed(args.seed)
order = torch.randperm(len(draws), generator=g)
train_rows, val_rows = order[n_val:], order[:n_val]
from bayesalign.prior_draws import PriorDraws  # noqa: E402


def subset(rows):
    return PriorDraws(draws.samples.select(rows), draws.uniform[rows])


full = PosteriorPool(target, draws)
val = PosteriorPool(target, subset(val_rows))
train_pool = PosteriorPool(target, subset(train_rows))
on_accepted = args.objective in ("mle", "gdc-post")


train = train_pool.p_samples() if on_accepted else train_pool.draws.samples
train_b = torch.ones(len(train)) if on_accepted else train_pool.evidence.satisfied.double()
train_log_a = train.token_log_q.sum(-1).double()
z_train = float(train_pool.log_z().value)
print(
    clock(),
    f"log Z = {full.log_z():.4f}; train p-samples {len(train)}, val p-samples {val.n_accepted}",
    flush=True,
)

val_samples = val.p_samples()


val_log_pi: dict[float, list[float]] = {}  # per evaluation: log π on the held-out p-samples


def val_kl(epoch: float = 0.0):
    lp = policy.log_prob_frozen(val_samples, batch_size=32).double()
    val_log_pi[round(epoch, 2)] = lp.tolist()
    return val.kl_p_model(lp)


params_trainable = [p for p in policy.module.parameters() if p.requires_grad]
if args.optimizer == "sgd":
    opt = torch.optim.SGD(params_trainable, lr=args.lr, momentum=args.momentum)
else:
    opt = torch.optim.AdamW(params_trainable, lr=args.lr, weight_decay=0.0)
grad_norms: list[float] = []
best = (
    val_kl().value,
    0.0,
    {n: p.detach().clone() for n, p in policy.module.named_parameters() if p.requires_grad},
)
print(clock(), f"epoch 0.0 val KL(p‖π) {best[0]:.4f}", flush=True)
history = [{"epoch": 0.0, "val_kl": best[0], "seconds": time.perf_counter() - t0}]
steps_per_epoch = len(train) // args.minibatch
total = int(args.epochs * steps_per_epoch)
half = max(steps_per_epoch // 2, 1)
perm = torch.randperm(len(train), generator=g)
pos = 0
average = WeightAverage(params_trainable, args.average) if args.average else None
schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / total) if args.decay else None


policy.module.train()
for step in range(1, total + 1):
    if pos + args.minibatch > len(train):
        perm, pos = torch.randperm(len(train), generator=g), 0
    idx = perm[pos : pos + args.minibatch]
    mb = train.select(idx)
    pos += args.minibatch
    if args.objective == "cv":
        with torch.no_grad():
            logits_a = prior.generated_logits(mb)[0]
        per_row = cv_loss(
            policy.generated_logits(mb)[0],
            logits_a,
            mb.ids,
            mb.mask,
            mb.token_log_q,
            train_b[idx],
            z_train,
            args.cv_baseline == "prefix",
        )
        log_pi, reg = None, per_row.sum() / args.minibatch
    elif args.prior_ce > 0:
        lsm = torch.log_softmax(policy.generated_logits(mb)[0].float(), dim=-1)
        with torch.no_grad():
            log_a_full = torch.log_softmax(prior.generated_logits(mb)[0].float(), dim=-1)
        token_kl = (log_a_full.exp() * (log_a_full - lsm)).sum(-1) * mb.mask
        token_lp = lsm.gather(-1, mb.ids[..., None]).squeeze(-1) * mb.mask
        log_pi = token_lp.sum(-1)
        reg = args.prior_ce * token_kl.sum(-1).sum() / args.minibatch
    else:
        out = policy_output(policy, mb)
        log_pi = (out.token_log_probs * out.mask).sum(-1)
        reg = 0.0
    if args.objective == "cv":
        loss = 0.0
    elif args.objective == "mle":
        loss = -log_pi.sum() / args.minibatch
    elif args.objective == "gdc-post":  # q = p = a/Z on accepted samples: advantage 1 − π·Z/a
        ratio = torch.exp(log_pi.detach().double() - train_log_a[idx] + z_train)
        loss = -((1 - ratio).float() * log_pi).sum() / args.minibatch
    elif args.objective == "value":
        terminal = args.value_prefixes == "terminal"
        token_log_pi, token_log_a = out.token_log_probs.double(), mb.token_log_q.double()
        per_row = value_loss(token_log_pi, token_log_a, mb.mask.double(), train_b[idx], z_train, terminal)
        loss = per_row.sum().float() / args.minibatch
    else:  # GDC++ with q = a: advantage b/Z − π/a, π/a detached
        ratio = torch.exp(log_pi.detach().double() - train_log_a[idx])
        advantage = (train_b[idx] * math.exp(-z_train) - ratio).float()
        loss = -(advantage * log_pi).sum() / args.minibatch
    loss = loss + reg
    opt.zero_grad()
    loss.backward()
    grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params_trainable, 1.0)))
    opt.step()
    if schedule is not None:
        schedule.step()
    if average is not None:
        average.update()
    if step % half == 0 or step == total:
        policy.module.eval()
        with average.swapped_in() if average is not None else contextlib.nullcontext():
            kl = val_kl(step / steps_per_epoch)
            snapshot = {n: p.detach().clone() for n, p in policy.module.named_parameters() if p.requires_grad}
        policy.module.train()
        ep = step / steps_per_epoch
        history.append(
            {"epoch": ep, "val_kl": kl.value, "val_kl_se": kl.stderr, "seconds": time.perf_counter() - t0}
        )
        norm = sum(grad_norms[-half:]) / len(grad_norms[-half:])
        print(clock(), f"epoch {ep:.2f} val KL(p‖π) {kl:.4f}  mean grad norm {norm:.2f}", flush=True)
        if kl.value < best[0]:
            best = (kl.value, ep, snapshot)
policy.module.eval()
with torch.no_grad():
    named = dict(policy.module.named_parameters())
    for n, v in best[2].items():
        named[n].copy_(v)
online = []
pool_best_epoch = best[1]  # the pool phase's best, before any on-policy step
if args.online:
    for group in opt.param_groups:
        group["lr"] = args.online_lr or args.lr
    gen_online = torch.Generator().manual_seed(args.seed + 99)
    for k in range(1, args.online + 1):
        d = propose(target, policy, args.online_batch, params, generator=gen_online, batch_size=args.batch)
        log_w = torch.where(
            d.evidence.satisfied.bool(), d.log_a - z_train - d.log_q, torch.full_like(d.log_q, -math.inf)
        )
        w = torch.exp(log_w)
        ess = float(w.sum() ** 2 / (w**2).sum()) if w.sum() > 0 else 0.0
        reward = args.online_lambda * d.evidence.satisfied.double() - (d.log_q - d.log_a).double()
        n_online = len(reward)
        kl_advantage = reward - (reward.sum() - reward) / (n_online - 1)  # leave-one-out baseline
        policy.module.train()
        for mb_rows in torch.randperm(len(d.samples), generator=g).split(args.minibatch):
            mb = d.samples.select(mb_rows)
            out = policy_output(policy, mb)
            log_pi = (out.token_log_probs * out.mask).sum(-1)
            if args.online_objective == "kl":
                adv = kl_advantage[mb_rows]
            else:
                ratio = torch.exp(log_pi.detach().double() - d.log_q[mb_rows])  # π/q: 1 before an update
                adv = w[mb_rows] - ratio
            loss = -(adv.float() * log_pi).sum() / len(mb_rows)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params_trainable, 1.0)
            opt.step()
        policy.module.eval()
        row = {
            "step": k,
            "satisfied": float(d.evidence.satisfied.double().mean()),
            "ess": ess,
            "kl_pi_a": float((d.log_q - d.log_a).double().mean()),
            "cpu": time.process_time() - c0,
        }
        if k % args.online_eval == 0 or k == args.online:
            kl = val_kl(200 + k)
            row |= {"val_kl": kl.value, "val_kl_se": kl.stderr}
            if kl.value < best[0]:
                best = (
                    kl.value,
                    200 + k,
                    {n: p.detach().clone() for n, p in policy.module.named_parameters() if p.requires_grad},
                )
        online.append(row)
        print(clock(), "online", row, flush=True)
    with torch.no_grad():
        for n, v in best[2].items():
            named[n].copy_(v)
extrapolation = []
if args.extrapolate:
    lora_b = {n: v.clone() for n, v in best[2].items() if "lora_B" in n}
    best_alpha, best_alpha_kl = 1.0, best[0]
    for alpha in [float(x) for x in args.extrapolate.split(",")]:
        with torch.no_grad():
            for n, v in lora_b.items():
                named[n].copy_(alpha * v)
        kl = val_kl(100 + alpha)
        extrapolation.append({"alpha": alpha, "val_kl": kl.value, "val_kl_se": kl.stderr})
        print(clock(), f"α = {alpha:g}: val KL(p‖π) {kl:.4f}", flush=True)
        if kl.value < best_alpha_kl:
            best_alpha, best_alpha_kl = alpha, kl.value
    with torch.no_grad():
        for n, v in lora_b.items():
            named[n].copy_(best_alpha * v)
    if best_alpha != 1.0:
        val_log_pi[round(best[1], 2)] = val_log_pi[round(100 + best_alpha, 2)]
        best = (best_alpha_kl, best[1], best[2])
    print(clock(), f"kept α = {best_alpha:g}", flush=True)
print(clock(), f"best epoch {best[1]:.2f} val KL {best[0]:.4f}; sampling {args.eval} from π", flush=True)
gen = torch.Generator().manual_seed(1234)
d = propose(target, policy, args.eval, params, generator=gen, batch_size=args.batch)
sat = est.mean(d.evidence.satisfied)
kl_pi_a = est.kl_on_samples(d.log_q, d.log_a)
frontier = full.frontier()
excess = frontier.excess(sat.value, kl_pi_a.value)
full_kl = full.kl_p_model(policy.log_prob_frozen(full.p_samples(), batch_size=32).double())


def position_gains(samples) -> list[float]:
    """Mean over the samples of log π(x_t|x<t) − log a(x_t|x<t) at each position t."""
    total, count = 0.0, 0.0
    with torch.no_grad():
        for rows in torch.arange(len(samples)).split(32):
            mb = samples.select(rows)
            out = policy_output(policy, mb)
            total = total + ((out.token_log_probs.double() - mb.token_log_q.double()) * mb.mask).sum(0)
            count = count + mb.mask.double().sum(0)
    return (total / count.clamp(min=1)).tolist()


positions = {}
if args.positions:
    positions = {"train": position_gains(train_pool.p_samples()), "val": position_gains(val_samples)}
    for split, gains in positions.items():
        print(clock(), f"gain per position, {split}:", " ".join(f"{x:+.3f}" for x in gains), flush=True)
summary = {
    "args": vars(args),
    "positions": positions,
    "log_z": full.log_z().value,
    "satisfaction": sat.value,
    "satisfaction_se": sat.stderr,
    "kl_pi_a": kl_pi_a.value,
    "kl_pi_a_se": kl_pi_a.stderr,
    "frontier_kl": frontier.kl(sat.value),
    "frontier_excess": excess,
    "val_kl": best[0],
    "best_epoch": best[1],
    "history": history,
    "extrapolation": extrapolation,
    "online": online,
    "val_log_pi": {
        "0.0": val_log_pi[0.0],
        "best": val_log_pi[round(best[1], 2)],
        "pool_best": val_log_pi[round(pool_best_epoch, 2)],
    },
    "fresh_texts": d.samples.texts,  # the kept π's samples, for diagnostics of what it learned
    "wall": time.perf_counter() - t0,
    "cpu": time.process_time() - c0,
}
print(
    clock(),
    f"satisfaction {sat:.3f}  KL(π‖a) {kl_pi_a:.3f}  frontier KL* {frontier.kl(sat.value):.3f}  "
    f"excess {excess:.2f}  val KL(p‖π) {best[0]:.3f} (full-pool, train included: {full_kl:.3f})",
    flush=True,
)
for t in d.samples.texts[:5]:
    print("  ", repr(t))
append_record(args.out, summary)
