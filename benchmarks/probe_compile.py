"""Does torch.compile speed up the on-policy step of bench_disco.py's workload on this CPU?

    OMP_NUM_THREADS=1 python benchmarks/probe_compile.py [--rounds 3] [--reps 20]

The workload's prior (GPT-2, 2 layers × 128, 0.41M parameters, 101 words) on the step's two
model passes: the training pass (forward and backward of log π on 256 sequences × 21 tokens,
a fixed shape, the compiler's easiest case) and the sampling pass (20 decoding steps of 256
sequences with the key-value cache, compiled with dynamic shapes). Eager and compiled runs
alternate ``--rounds`` times so that both see the same background load; CPU seconds per call
(process_time) are printed with the compile time, which a run pays once per process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_disco import WORDS  # noqa: E402

from bayesalign.toy import toy_model  # noqa: E402


def train_pass(model, ids: torch.Tensor) -> None:
    logits = model(ids).logits[:, :-1]
    torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).sum().backward()


@torch.no_grad()
def sample_pass(model, start: torch.Tensor, steps: int = 20) -> torch.Tensor:
    out = model(start, use_cache=True)
    cache, tokens = out.past_key_values, [start]
    for _ in range(steps):
        nxt = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
        tokens.append(nxt)
        out = model(nxt, past_key_values=cache, use_cache=True)
    return torch.cat(tokens, 1)


def cpu_per_call(fn, reps: int) -> float:
    fn()  # warm
    started = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - started) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    eager = toy_model(WORDS, seed=0, n_embd=128, n_layer=2, n_head=4, n_positions=32, init_std=0.1).module
    compiled = torch.compile(eager)
    decode = torch.compile(eager, dynamic=True)
    ids = torch.randint(1, len(WORDS) + 1, (256, 21))
    start = torch.zeros(256, 1, dtype=torch.long)
    for name, fn in (
        ("training pass", lambda: train_pass(compiled, ids)),
        ("sampling pass", lambda: sample_pass(decode, start)),
    ):
        began = time.perf_counter()
        fn()
        print(f"compile, {name}: {time.perf_counter() - began:.1f} s wall", flush=True)
    for r in range(args.rounds):
        for name, e, c in (
            ("training pass", lambda: train_pass(eager, ids), lambda: train_pass(compiled, ids)),
            ("sampling pass", lambda: sample_pass(eager, start), lambda: sample_pass(decode, start)),
        ):
            te, tc = cpu_per_call(e, args.reps), cpu_per_call(c, args.reps)
            print(
                f"round {r}, {name}: eager {te:.4f}, compiled {tc:.4f} CPU s/call, ratio {tc / te:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
