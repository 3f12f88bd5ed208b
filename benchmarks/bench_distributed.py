"""Time of one training step (sample 256 x 20 tokens from q = a -> score -> loss -> backward ->
AdamW) on one process or several (accelerate launch), same global batch. Prints the median of
--steps timed steps after one warm-up step, as measured by the main process between barriers.

  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distributed.py --threads 1 --steps 5
  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_distributed.py --threads 2 --steps 3
  OMP_NUM_THREADS=1 .venv/bin/accelerate launch --multi_gpu --num_processes 2 \
      benchmarks/bench_distributed.py --threads 1 --steps 5

(``--cpu`` alone starts one process in accelerate 1.15; ``--multi_gpu`` goes through torchrun
and, without a GPU, a gloo group.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from bayesalign.config import parse_config
from bayesalign.config.build import build_models, build_target, build_trainer
from bayesalign.training.distributed import Distributed

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()
torch.set_num_threads(args.threads)
words = [f"w{i}" for i in range(200)]
config = parse_config(
    {
        "model": {
            "name": "toy",
            "toy": {"words": words, "seed": 0, "n_embd": 128, "n_layer": 4, "init_std": 0.05},
        },
        "sampling": {"max_new_tokens": 20},
        "target": {"constraints": [{"type": "word", "words": words[:20]}]},
        "training": {
            "method": "gdc++",
            "batch_size": 256,
            "minibatch_size": 64,
            "lr": 1e-3,
            "proposal": {"update": "fixed"},
        },
    }
)
dist = Distributed(config.training.sample_shards)
policy, prior = build_models(config.model, config.prompt, config.training.seed)
target = build_target(config.target, prior)
trainer = build_trainer(config, policy, target, distributed=dist)
times, cpu = [], []
for step in range(args.steps + 1):
    dist.accelerator.wait_for_everyone()
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer.train_step()
    dist.accelerator.wait_for_everyone()
    if step:
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
if dist.is_main:
    params = sum(p.numel() for p in policy.module.parameters())
    print(
        f"processes={dist.world} threads/process={args.threads} params={params} "
        f"median step {statistics.median(times):.3f} s (steps: {', '.join(f'{t:.2f}' for t in times)}; "
        f"main-process CPU {statistics.median(cpu):.2f} s) load={os.getloadavg()[0]:.1f}"
    )
dist.close()
