"""The matrix products of one on-policy RLOO update of bench_trl.py's GPT-2, each timed alone:
a floor under our step's CPU time on this machine, and what issue 20's "≤ 0.4 of TRL's time"
would need of it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/matmul_floor.py [--spec 5M|0.4M] [--batch 64]
        [--repeats 20] [--trl-cpu SECONDS]

Our on-policy update back-propagates through the sampling pass (training/sampling_pass.py):
at each of the T decoding steps every linear layer multiplies a [batch, width] input (forward),
and its backward forms the input's gradient and the weight's (two more products of the same
size). The output layer is the tied embedding E [V, d]: logits = h·Eᵀ. Each product is timed
in the layout autograd runs it (GPT-2's Conv1D: x·W with W [in, out]; the output layer: x·Eᵀ,
then g·E and gᵀ·x), median of ``--repeats`` calls, CPU seconds, and multiplied by how often an
update runs it. The sum is what the update's matrix products cost at the rates this machine's
BLAS reaches on those shapes, without anything else the step does (attention, softmax, the
sampler, KV cache copies, zero fills, AdamW, Python). For comparison the same FLOPs are timed
as one product of two 2048 × 2048 matrices.

``--trl-cpu``: TRL's CPU seconds per update from bench_trl.py on the same machine; the script
then prints floor / TRL, the least ratio our step could reach without fewer FLOPs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import MEDIUM, SMALL  # noqa: E402
from bench_trl import MAX_NEW_TOKENS  # noqa: E402


def seconds(fn, repeats: int) -> float:
    """Median CPU seconds of ``fn()`` over ``repeats`` calls after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def linear_products(m: int, k: int, n: int):
    """Forward x·W, then the backward's g·Wᵀ and xᵀ·g, for x [m, k] and W [k, n]."""
    x, w, g = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
    return [("x·W", lambda: x @ w), ("g·Wᵀ", lambda: g @ w.t()), ("xᵀ·g", lambda: x.t() @ g)]


def output_products(m: int, d: int, vocab: int):
    """The tied output layer: logits h·Eᵀ, then g·E (h's gradient) and gᵀ·h (E's)."""
    h, e, g = torch.randn(m, d), torch.randn(vocab, d), torch.randn(m, vocab)
    return [("h·Eᵀ", lambda: h @ e.t()), ("g·E", lambda: g @ e), ("gᵀ·h", lambda: g.t() @ h)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=["5M", "0.4M"], default="5M")
    parser.add_argument("--batch", type=int, default=None, help="rows (default: the spec's)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--trl-cpu", type=float, default=None, help="TRL's CPU s/update, same machine")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = {"5M": MEDIUM, "0.4M": SMALL}[args.spec]
    m, d, steps = args.batch or spec.batch, spec.n_embd, MAX_NEW_TOKENS
    inner = spec.n_inner or 4 * d
    layers = [(d, 3 * d), (d, d), (d, inner), (inner, d)]  # c_attn, attn c_proj, c_fc, mlp c_proj
    groups = [(f"layer {k}×{n}", spec.n_layer, linear_products(m, k, n), 2 * m * k * n) for k, n in layers]
    groups.append((f"output {d}×{spec.vocab}", 1, output_products(m, d, spec.vocab), 2 * m * d * spec.vocab))
    total_s = total_flops = 0.0
    print(f"{args.spec} GPT-2, {m} rows × {steps} decoding steps; per update (CPU s, 1 thread):")
    for name, count, products, flops in groups:
        times = {label: seconds(fn, args.repeats) * count * steps for label, fn in products}
        group_s = sum(times.values())
        total_s += group_s
        total_flops += 3 * flops * count * steps
        rate = 3 * flops * count * steps / group_s / 1e9
        shown = ", ".join(f"{label} {t:.3f}" for label, t in times.items())
        print(f"  {name:>16} × {count}: {group_s:.3f} s ({shown}); {rate:.0f} GFLOP/s")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    big_rate = 2 * 2048**3 / seconds(lambda: a @ b, max(3, args.repeats // 4)) / 1e9
    gflop = total_flops / 1e9
    print(f"matrix products in all: {total_s:.3f} s for {gflop:.1f} GFLOP ({gflop / total_s:.0f} GFLOP/s)")
    print(f"the same FLOPs at the 2048² product's {big_rate:.0f} GFLOP/s: {gflop / big_rate:.3f} s")
    if args.trl_cpu:
        trl = args.trl_cpu
        print(f"floor / TRL's {trl:.3f} s: {total_s / trl:.2f}; 0.4 of TRL is {0.4 * trl:.3f} s")


if __name__ == "__main__":
    main()
