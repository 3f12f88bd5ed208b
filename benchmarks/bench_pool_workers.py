"""Drawing a posterior pool's prior samples: one process with 2 threads against 2 one-thread
processes (`eval.pool.workers: 2`), alternated, on the demo's prior (SmolLM2-135M-Instruct, its
prompt, 24 tokens). Prints wall and CPU seconds of each draw (the workers' CPU is counted once
they exit) and how many samples the two ways share (they differ only where one thread's rounding
differs from two threads').

    .venv/bin/python benchmarks/bench_pool_workers.py --samples 512 --repeats 2
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from bayesalign.config import load_config
from bayesalign.config.build import build_models
from bayesalign.prior_draws import draw_prior


def cpu_seconds() -> float:
    """This process's CPU seconds and those of its children that have exited."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    """Spawned workers import this file: the work runs only as __main__."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512, help="a multiple of 256 (the chunk)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7, help="the pool's seed (no cache is used)")
    args = parser.parse_args()
    config = load_config("src/bayesalign/configs/demo.yaml")
    _, prior = build_models(config.model, config.prompt, 0)
    params = config.sampling.params()
    texts: dict[int, list[str]] = {}
    for rep in range(args.repeats):
        for workers in (0, 2):
            torch.set_num_threads(2)
            cpu, wall = cpu_seconds(), time.perf_counter()
            draws, _ = draw_prior(prior, args.samples, params, seed=args.seed, batch_size=64, workers=workers)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            tokens = args.samples * params.max_new_tokens
            way = "2 one-thread processes" if workers else "1 process, 2 threads"
            print(
                f"repeat {rep}, {way}: {wall:.1f} s wall, {cpu:.1f} CPU s, {tokens / wall:.0f} tokens/s",
                flush=True,
            )
            texts.setdefault(workers, draws.samples.texts)
    same = sum(a == b for a, b in zip(texts[0], texts[2], strict=True))
    print(f"samples identical between the two ways: {same} of {args.samples}")


if __name__ == "__main__":
    main()
