"""Speed candidates for the on-policy step, each timed against the library's way (issue 20).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_step_candidates.py PROBE
        [--model toy|5M] [--repeats 5]     # PROBE: deferred, attention, logsoftmax, sampler, gelu, compaction

Each probe times the library's way against the candidate in one process, alternated, CPU
seconds (process_time), 1 thread, and checks that the candidate computes the same thing:

- ``deferred``: the sampling pass (``decoding.decode(differentiable=True)``) plus the backward of
  Σ log π, against a pass whose embedding lookups and tied output layer hand their weight
  gradient to one node that forms it once at the end of the backward (one ``index_add_`` and
  one ``addmm_``) instead of one dense vocabulary × width gradient per decoding step; and
  against the two-pass step (sampling without a graph, then a forward and backward of π over
  the whole sequences). ``--model toy``: bench_disco's 0.41M GPT-2 (101 tokens, 256 rows);
  ``5M``: bench_step's 5M GPT-2 (8,192 tokens, 64 rows); 20 new tokens.
- ``attention``: PyTorch's SDPA against hand-written single-query attention (elementwise, and
  batched matmul) over a growing KV cache, forward and forward + backward.
- ``logsoftmax``: log_softmax + gather against a fused autograd function (logsumexp forward,
  softmax-times-gradient backward) on [64, 20, 8192] logits.
- ``sampler``: `decoding.draw_tokens` (float64 CDF) against a float32 CDF, 64 rows.
- ``gelu``: PyTorch's tanh-GELU kernel against transformers' NewGELUActivation and a sigmoid form.
- ``compaction`` (adopted): the sampling pass with rows that drew EOS leaving it, against the same
  pass keeping every row to the end (transformers' ``Cache.reorder_cache`` switched off), on
  bench_disco's prior (EOS-terminated samples, mean length ≈ 15 of 20), without and with the graph
  and its backward.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def alternate(candidates: dict[str, Callable[[], object]], repeats: int, rounds: int = 3) -> None:
    for r in range(rounds):
        order = list(candidates.items()) if r % 2 == 0 else list(reversed(candidates.items()))
        for name, fn in order:
            print(f"  round {r}  {name:24s} {cpu_seconds(fn, repeats) * 1e3:9.2f} ms")


# -- deferred weight gradients in the sampling pass ------------------------------------------------
class _Gradients:
    """What the per-step nodes hand over: embedding rows looked up and their gradients; the
    output layer's inputs and their logits' gradients."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.head: list[tuple[torch.Tensor, torch.Tensor]] = []


class _Anchor(torch.autograd.Function):
    """A scalar every per-step node depends on: its backward runs after all of theirs and
    forms the weight's gradient once."""

    @staticmethod
    def forward(ctx, weight, store):
        ctx.store = store
        return weight.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        store = ctx.store
        grad = torch.zeros_like(store.weight)
        for ids, rows in store.rows:
            grad.index_add_(0, ids, rows)
        for h, g in store.head:
            grad.addmm_(g.t(), h)
        store.rows.clear()
        store.head.clear()
        return grad, None


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, weight, ids, store):
        ctx.store, ctx.ids = store, ids
        return weight[ids]

    @staticmethod
    def backward(ctx, g):
        ctx.store.rows.append((ctx.ids.reshape(-1), g.reshape(-1, g.shape[-1])))
        return g.new_zeros(()), None, None, None


class _Head(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, h, weight, store):
        ctx.save_for_backward(h)
        ctx.weight, ctx.store = weight, store
        return h @ weight.t()

    @staticmethod
    def backward(ctx, g):
        (h,) = ctx.saved_tensors
        ctx.store.head.append((h.reshape(-1, h.shape[-1]), g.reshape(-1, g.shape[-1])))
        return g.new_zeros(()), g @ ctx.weight, None, None


def decode_deferred(module, prompt: torch.Tensor, steps: int, generator: torch.Generator):
    """Ancestral sampling with the graph kept, GPT-2 with tied embeddings, no EOS stop."""
    from bayesalign.decoding import draw_tokens, uniforms

    weight = module.get_input_embeddings().weight
    assert module.get_output_embeddings().weight is weight, "the probe covers tied embeddings"
    store = _Gradients(weight)
    anchor, frozen = _Anchor.apply(weight, store), weight.detach()
    n, inputs, cache = len(prompt), prompt, None
    attention = torch.ones(n, prompt.shape[1], dtype=torch.long)
    positions = attention.cumsum(-1) - 1
    ids, log_pi = [], []
    for _ in range(steps):
        out = module.base_model(
            inputs_embeds=_Lookup.apply(anchor, frozen, inputs, store),
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        log_probs = torch.log_softmax(_Head.apply(anchor, out.last_hidden_state[:, -1], frozen, store), -1)
        token = draw_tokens(log_probs.detach(), uniforms(n, generator, log_probs.device))
        ids.append(token)
        log_pi.append(log_probs.gather(1, token[:, None])[:, 0])
        inputs = token[:, None]
        attention = torch.cat([attention, attention.new_ones(n, 1)], 1)
        positions = positions[:, -1:] + 1
    return torch.stack(ids, 1), torch.stack(log_pi, 1)


def probe_deferred(model: str, repeats: int) -> None:
    from bayesalign.decoding import decode
    from bayesalign.samples import SamplingParams

    if model == "5M":
        from bench_step import MEDIUM, build_prior

        module, n = build_prior(MEDIUM).module.eval(), 64
    else:
        from bench_disco import WORDS

        from bayesalign.toy import toy_model

        prior = toy_model(WORDS, seed=0, n_embd=128, n_layer=2, n_head=4, n_positions=32, init_std=0.1)
        module, n = prior.module.eval(), 256
    prompt, prompt_mask = torch.ones(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.bool)
    params, generator = SamplingParams(max_new_tokens=20), torch.Generator()

    def library():  # the sampling pass as π's forward (training/sampling_pass.py)
        generator.manual_seed(0)
        module.zero_grad(set_to_none=True)
        ids, _, log_pi = decode(
            module, prompt, prompt_mask, params, eos=-1, generator=generator, differentiable=True
        )
        log_pi.sum().backward()
        return ids, log_pi

    def deferred():
        generator.manual_seed(0)
        module.zero_grad(set_to_none=True)
        ids, log_pi = decode_deferred(module, prompt, 20, generator)
        log_pi.sum().backward()
        return ids, log_pi

    def two_pass():
        generator.manual_seed(0)
        module.zero_grad(set_to_none=True)
        ids, _, _ = decode(module, prompt, prompt_mask, params, eos=-1, generator=generator)
        full = torch.cat([prompt, ids], 1)
        logits = module(input_ids=full).logits[:, :-1]
        torch.log_softmax(logits, -1).gather(2, full[:, 1:, None]).sum().backward()

    ids_a, log_a = library()
    grads = [p.grad.clone() for p in module.parameters()]
    ids_b, log_b = deferred()
    gap = max(
        ((g - p.grad).norm() / g.norm()).item() for g, p in zip(grads, module.parameters(), strict=True)
    )
    print(
        f"same tokens: {torch.equal(ids_a, ids_b)}, max |Δ log π| {(log_a - log_b).abs().max().item():.1e}, "
        f"largest relative gradient gap {gap:.1e}"
    )
    alternate(
        {"library (sampling pass)": library, "deferred weight grads": deferred, "two-pass": two_pass}, repeats
    )


# -- the other candidates ----------------------------------------------------------------------------
def probe_attention(repeats: int) -> None:
    cache = [(torch.randn(256, 4, t, 32), torch.randn(256, 4, t, 32)) for t in range(1, 21)]
    query = torch.randn(256, 4, 1, 32)
    scale = 32**-0.5

    def elementwise(q, k, v):
        return ((q * k).sum(-1, keepdim=True) * scale).softmax(2).mul(v).sum(2, keepdim=True)

    def matmul(q, k, v):
        return (q @ k.transpose(-1, -2) * scale).softmax(-1) @ v

    k, v = cache[-1]
    for name, fn in (("elementwise", elementwise), ("matmul", matmul)):
        gap = (F.scaled_dot_product_attention(query, k, v) - fn(query, k, v)).abs().max().item()
        print(f"max |sdpa - {name}| {gap:.1e}")
    for grad in (False, True):

        def decode_layer(fn, grad=grad):
            q = query.clone().requires_grad_(grad)
            for k, v in cache:
                out = fn(q, k.requires_grad_(grad), v.requires_grad_(grad))
                if grad:
                    out.sum().backward()

        print("forward + backward" if grad else "forward", "over 20 decoding steps of one layer:")
        alternate(
            {
                n: (lambda f=f: decode_layer(f))
                for n, f in (
                    ("sdpa", F.scaled_dot_product_attention),
                    ("elementwise", elementwise),
                    ("matmul", matmul),
                )
            },
            repeats,
        )


class _LogSoftmaxGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        lse = torch.logsumexp(logits, -1)
        ctx.save_for_backward(logits, lse, targets)
        return logits.gather(-1, targets[..., None]).squeeze(-1) - lse

    @staticmethod
    def backward(ctx, g):
        logits, lse, targets = ctx.saved_tensors
        grad = torch.exp(logits - lse[..., None]).mul_(-g[..., None])
        return grad.scatter_add_(-1, targets[..., None], g[..., None]), None


def probe_logsoftmax(repeats: int) -> None:
    logits, targets, g = torch.randn(64, 20, 8192), torch.randint(0, 8192, (64, 20)), torch.randn(64, 20)

    def run(fused: bool):
        x = logits.clone().requires_grad_()
        out = (
            _LogSoftmaxGather.apply(x, targets)
            if fused
            else torch.log_softmax(x, -1).gather(-1, targets[..., None])[..., 0]
        )
        out.backward(g)
        return out, x.grad

    (a, ga), (b, gb) = run(False), run(True)
    print(f"max |Δ| value {(a - b).abs().max().item():.1e}, gradient {(ga - gb).abs().max().item():.1e}")
    alternate({"log_softmax + gather": lambda: run(False), "fused function": lambda: run(True)}, repeats)


def probe_sampler(repeats: int) -> None:
    from bayesalign.decoding import draw_tokens, uniforms

    generator = torch.Generator().manual_seed(0)

    def draws(n: int) -> torch.Tensor:
        return uniforms(n, generator, torch.device("cpu"))

    for vocab in (8192, 49152):
        log_probs = torch.randn(64, vocab).log_softmax(-1)
        print(f"vocabulary {vocab}, 64 rows:")
        alternate(
            {
                "draw_tokens (float64 CDF)": lambda lp=log_probs: draw_tokens(lp, draws(64)),
                "float32 CDF": lambda lp=log_probs: lp.exp().cumsum(-1),
            },
            repeats * 10,
        )


def probe_gelu(repeats: int) -> None:
    from transformers.activations import NewGELUActivation

    c = math.sqrt(2 / math.pi)
    forms = {
        "torch tanh-GELU": lambda x: F.gelu(x, approximate="tanh"),
        "transformers gelu_new": NewGELUActivation(),
        "x·sigmoid(2z)": lambda x: x * torch.sigmoid((2 * c) * (x + 0.044715 * x.pow(3))),
    }
    x, g = torch.randn(256, 21, 512), torch.randn(256, 21, 512)
    for name, fn in forms.items():
        gap = (fn(x.double()) - F.gelu(x.double(), approximate="tanh")).abs().max().item()
        print(f"max |{name} - tanh-GELU| in float64: {gap:.1e}")

    def step(fn):
        y = fn(x.requires_grad_())
        y.backward(g)

    alternate({name: (lambda f=fn: step(f)) for name, fn in forms.items()}, repeats)


def probe_compaction(repeats: int) -> None:
    from bench_disco import WORDS
    from transformers import cache_utils

    from bayesalign.decoding import decode
    from bayesalign.samples import SamplingParams
    from bayesalign.toy import toy_model

    module = toy_model(
        WORDS, seed=0, n_embd=128, n_layer=2, n_head=4, n_positions=32, init_std=0.1
    ).module.eval()
    eos, reorder = module.config.eos_token_id, cache_utils.Cache.reorder_cache
    prompt, prompt_mask = torch.full((256, 1), eos), torch.ones(256, 1, dtype=torch.bool)

    def run(compact: bool, graph: bool):
        cache_utils.Cache.reorder_cache = reorder if compact else None
        generator = torch.Generator().manual_seed(0)
        module.zero_grad(set_to_none=True)
        _, mask, log_q = decode(
            module,
            prompt,
            prompt_mask,
            SamplingParams(20),
            eos=eos,
            generator=generator,
            differentiable=graph,
        )
        if graph:
            log_q.sum().backward()
        return mask

    try:
        print(f"mean length {run(True, False).sum(-1).float().mean().item():.1f} of 20, 256 rows")
        for graph in (False, True):
            print("with the graph and its backward:" if graph else "without a graph:")
            alternate(
                {
                    "rows leave the pass": lambda g=graph: run(True, g),
                    "every row to the end": lambda g=graph: run(False, g),
                },
                repeats,
            )
    finally:
        cache_utils.Cache.reorder_cache = reorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "probe", choices=["deferred", "attention", "logsoftmax", "sampler", "gelu", "compaction"]
    )
    parser.add_argument("--model", choices=["toy", "5M"], default="5M", help="for deferred")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.probe == "deferred":
        probe_deferred(args.model, args.repeats)
    else:
        {
            "attention": probe_attention,
            "logsoftmax": probe_logsoftmax,
            "sampler": probe_sampler,
            "gelu": probe_gelu,
            "compaction": probe_compaction,
        }[args.probe](args.repeats)


if __name__ == "__main__":
    main()
