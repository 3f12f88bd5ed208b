"""FLOPs, FLOP efficiency, throughput and peak memory of one DPG step of the real Trainer.

    .venv/bin/python benchmarks/bench_flops.py [--threads 1] [--repeats 5] [--warmup 2]
        [--models gpt2-5m,smollm2] [--memory-steps 3] [--skip-memory]

Models: the ≈5M-parameter GPT-2 of benchmarks/bench_step.py (random weights, batch 64 × 20 new
tokens) and SmolLM2-135M-Instruct (``builtin:smollm2-135m-instruct``, full fine-tuning, batch 16
× 32 new tokens after a 10-token prompt). The step is ``Trainer.train_step()`` with
``training.method: dpg`` and the proposal fixed at q = a, the demo's recipe (DESIGN.md §4): sample
from a with the KV cache (log q = log a from that pass), score, forward π with grad on the
generated positions, backward, clip, AdamW.

FLOPs are counted analytically from the shapes each step actually processed (``Samples``: rows,
prompt width P, generated width T), multiply-adds counted as 2 FLOPs:

- body: 2·N_body per token position fed to the model, N_body = weights of every Linear/Conv1D
  except the output head (embedding look-ups are free);
- output head: 2·V·d per position whose logits are computed (1 per row per sampling step; the T
  generated positions in the training forward, which uses ``logits_to_keep``);
- attention: 4·d_attn·L per query per layer over the L keys it attends to (QKᵀ and AV), causal:
  the prefill sums L = 1..P, the cached step t has L = P + t, the training forward 1..P+T−1;
- backward: 2× the forward of the pass with grad (gradients of inputs and of weights);
- not counted: softmax/log-softmax, norms, sampling arithmetic, AdamW (elementwise, O(N) per
  step). Their time is in the step, so the ratio is a conservative model-FLOP utilisation.

Efficiency = counted FLOPs / step seconds, against ``torch.mm`` of two 2048×2048 fp32 matrices
(2·2048³ FLOPs, median of 3 calls) timed in the same process and thread count just before and
just after each step (their mean is the step's reference), so both see the same background
load; every figure is a median over ``--repeats``. The same ratio per CPU second of this process
is printed too: it is less sensitive to time-slicing when other jobs share the CPU.

Peak memory per component comes from fresh subprocesses (one per model and variant): each phase
resets the kernel's RSS high-water mark (``/proc/self/clear_refs`` ← 5) on entry and reads
``VmHWM`` on exit; glibc is told to serve allocations ≥ 256 KiB with mmap
(``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave RSS at once and a phase's peak is not
inflated by memory an earlier phase freed. Phases: sample, score, log π (forward with graph),
backward, optimizer; the figure is the max over steps 2..``--memory-steps`` (step 1 allocates
AdamW's state), and a step's peak is the largest of its phases' (``ru_maxrss`` cannot be used:
a child inherits its parent's). The same child, with ``--lora``, gives the LoRA saving (r 16 on
q, k, v, o; the prior a is the base with adapters disabled: one copy of the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from bench_step import MEDIUM, PhaseClock, build_prior, constraint_words
from transformers.pytorch_utils import Conv1D
from transformers.utils import logging as hf_logging

from bayesalign.config import build as config_build
from bayesalign.config import parse_config
from bayesalign.config.build import build_models, build_target
from bayesalign.models import LanguageModel, make_policy
from bayesalign.samples import Samples
from bayesalign.training.trainer import Trainer

MATMUL_SIZE = 2048
SMOLLM2_PROMPT = "I just got back from the restaurant downtown, and"
# almost every 32-token English continuation contains one: Z stays > 0 at batch 16
COMMON_WORDS = ("the", "a", "and", "to", "of", "I", "it", "was", "is", "in", "my", "we", "you")
PHASES = ("sample", "score", "log pi", "bwd+opt")
MEMORY_PHASES = ("sample", "score", "log pi", "backward", "optimizer")


@dataclass(frozen=True)
class Case:
    label: str
    batch: int
    max_new_tokens: int
    prompt: str
    words: tuple[str, ...]


CASES = {
    "gpt2-5m": Case("gpt2-5m", MEDIUM.batch, 20, "", constraint_words(MEDIUM)),
    "smollm2": Case("smollm2", 16, 32, SMOLLM2_PROMPT, COMMON_WORDS),
}
LORA = {"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def build_trainer(case: Case, threads: int, lora: bool = False) -> Trainer:
    """The library's own path: config → models, target, objective → Trainer."""
    name = "builtin:smollm2-135m-instruct" if case.label == "smollm2" else f"bench-{case.label}"
    model: dict = {"name": name}
    if lora:
        model["lora"] = LORA
    config = parse_config(
        {
            "model": model,
            "prompt": case.prompt,
            "sampling": {"max_new_tokens": case.max_new_tokens},
            "target": {"constraints": [{"type": "word", "words": list(case.words)}]},
            "training": {
                "method": "dpg",
                "batch_size": case.batch,
                "lr": 1e-5,
                "threads": threads,
                "proposal": {"update": "fixed"},
            },
        }
    )
    if case.label == "smollm2":
        policy, prior = build_models(config.model, config.prompt, config.training.seed)
    else:  # a random GPT-2 of a size the config's toy section does not describe
        if lora:
            raise ValueError("--lora is for smollm2 only")
        prior = build_prior(MEDIUM)
        policy = make_policy(prior)
    target = build_target(config.target, prior, config.sampling)
    return config_build.build_trainer(config, policy, target)


# -- analytic FLOPs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """What the FLOP formulas need from a causal LM."""

    body: int  # weights of the matmuls in the blocks (every Linear/Conv1D but the head)
    head: int  # V·d, the output projection
    layers: int
    d_attn: int  # heads × head dim of the queries

    @classmethod
    def of(cls, model: LanguageModel) -> Shape:
        module = model.module
        head = module.get_output_embeddings()
        body = sum(
            m.weight.numel()
            for m in module.modules()
            if isinstance(m, torch.nn.Linear | Conv1D) and m is not head
        )
        cfg = module.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(body, head.weight.numel(), cfg.num_hidden_layers, cfg.num_attention_heads * head_dim)

    def attention(self, keys_per_query: int) -> float:
        """QKᵀ and AV over ``keys_per_query`` keys summed over queries, every layer."""
        return 4.0 * self.d_attn * self.layers * keys_per_query

    def sampling(self, rows: int, prompt: int, steps: int) -> float:
        """Cached sampling: a prefill of the prompt, then one position per further step; logits
        at one position per step."""
        positions = prompt + steps - 1
        keys = prompt * (prompt + 1) // 2 + sum(prompt + t for t in range(1, steps))
        return rows * (2.0 * self.body * positions + 2.0 * self.head * steps + self.attention(keys))

    def scoring_forward(self, rows: int, prompt: int, generated: int) -> float:
        """One forward over prompt + generated[:-1], logits at the generated positions only."""
        width = prompt + generated - 1
        keys = width * (width + 1) // 2
        return rows * (2.0 * self.body * width + 2.0 * self.head * generated + self.attention(keys))


@dataclass
class StepFlops:
    """FLOPs of one step by phase, filled by wrappers around the methods the trainer calls."""

    shape: Shape
    by_phase: dict[str, float] = field(default_factory=dict)
    generated_tokens: int = 0

    def add(self, phase: str, flops: float) -> None:
        self.by_phase[phase] = self.by_phase.get(phase, 0.0) + flops

    def on_sample(self, samples: Samples) -> None:
        rows, prompt, steps = len(samples), samples.prompt_ids.shape[1], samples.ids.shape[1]
        self.add("sample", self.shape.sampling(rows, prompt, steps))
        self.generated_tokens += int(samples.mask.sum())

    def on_forward(self, samples: Samples) -> None:
        forward = self.shape.scoring_forward(len(samples), samples.prompt_ids.shape[1], samples.ids.shape[1])
        self.add("log pi", forward)
        if torch.is_grad_enabled():
            self.add("bwd+opt", 2.0 * forward)


def watch(obj: object, attr: str, before: Callable[..., None]) -> None:
    """Call ``before(*args)`` ahead of every call of ``obj.attr``."""
    original = getattr(obj, attr)

    def watched(*args, **kwargs):
        before(*args)
        return original(*args, **kwargs)

    setattr(obj, attr, watched)


def matmul_flops_per_second(size: int = MATMUL_SIZE, calls: int = 3) -> tuple[float, float]:
    """Best-case dense fp32 throughput of this CPU at the current thread count, per wall second
    and per CPU second of this process (medians of ``calls``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    wall, cpu = [], []
    for _ in range(calls):
        start, start_cpu = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    flops = 2.0 * size**3
    return flops / statistics.median(wall), flops / statistics.median(cpu)


@dataclass
class TimedStep:
    seconds: dict[str, float]
    flops: dict[str, float]
    generated_tokens: int
    matmul: float  # FLOP/s of the matmul benchmark, mean of the runs just before and just after
    cpu_seconds: float  # process CPU time of the step
    matmul_cpu: float  # the matmul's FLOP per CPU second, same runs


def time_steps(case: Case, threads: int, warmup: int, repeats: int) -> tuple[Trainer, list[TimedStep]]:
    trainer = build_trainer(case, threads)
    shape = Shape.of(trainer.policy)
    clock = PhaseClock()
    counter = StepFlops(shape)
    clock.wrap(trainer.proposal, "sample", "sample", counter.on_sample)
    clock.wrap(trainer.target, "evidence", "score")
    clock.wrap(trainer.policy, "forward_generated", "log pi")
    watch(trainer.policy, "forward_generated", counter.on_forward)
    steps = []
    matmul_before = matmul_flops_per_second()
    for i in range(warmup + repeats):
        clock.reset()
        counter.by_phase, counter.generated_tokens = {}, 0
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.train_step()
        total, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        seconds = {p: clock.seconds.get(p, 0.0) for p in PHASES[:-1]}
        seconds["bwd+opt"] = total - sum(seconds.values())
        seconds["total"] = total
        flops = dict(counter.by_phase)
        flops["total"] = sum(flops.values())
        matmul_after = matmul_flops_per_second()  # the step is bracketed: both see the same load
        if i >= warmup:
            matmul, matmul_cpu = ((b + a) / 2 for b, a in zip(matmul_before, matmul_after, strict=True))
            steps.append(TimedStep(seconds, flops, counter.generated_tokens, matmul, cpu, matmul_cpu))
        matmul_before = matmul_after
        print(f"  {case.label} step {i + 1}/{warmup + repeats}: {total:.2f} s", file=sys.stderr, flush=True)
    return trainer, steps


# -- memory (run in a fresh subprocess) ------------------------------------------------------------
def _status_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


class PeakMemory:
    """Per phase: RSS at entry and the RSS high-water mark during it (KiB), max over steps."""

    def __init__(self) -> None:
        self.peak: dict[str, int] = {}
        self.start: dict[str, int] = {}
        self.recording = False

    def wrap(self, obj: object, attr: str, phase: str) -> None:
        original = getattr(obj, attr)

        def measured(*args, **kwargs):
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            at_entry = _status_kib("VmRSS")
            result = original(*args, **kwargs)
            if self.recording:
                peak = _status_kib("VmHWM")
                if peak > self.peak.get(phase, 0):
                    self.peak[phase], self.start[phase] = peak, at_entry
            return result

        setattr(obj, attr, measured)


def memory_child(case: Case, threads: int, steps: int, lora: bool) -> dict:
    """Peak RSS of each phase of a training step, in this (fresh) process."""
    Path("/proc/self/clear_refs").write_text("5")  # ru_maxrss would include the parent's peak (fork)
    trainer = build_trainer(case, threads, lora=lora)
    loaded, loading_peak = _status_kib("VmRSS"), _status_kib("VmHWM")
    meter = PeakMemory()
    meter.wrap(trainer.proposal, "sample", "sample")
    meter.wrap(trainer.target, "evidence", "score")
    meter.wrap(trainer.policy, "forward_generated", "log pi")
    meter.wrap(torch.Tensor, "backward", "backward")
    meter.wrap(trainer.optimizer, "step", "optimizer")
    for i in range(steps):
        meter.recording = i > 0
        trainer.train_step()
    trainable = sum(p.numel() for p in trainer.params)
    return {
        "loaded_mib": loaded / 1024,
        "peak_mib": {p: meter.peak[p] / 1024 for p in MEMORY_PHASES},
        "entry_mib": {p: meter.start[p] / 1024 for p in MEMORY_PHASES},
        "loading_peak_mib": loading_peak / 1024,
        "step_peak_mib": max(meter.peak.values()) / 1024,
        "trainable": trainable,
    }


def run_memory_child(label: str, threads: int, steps: int, lora: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MALLOC_MMAP_THRESHOLD_=str(256 * 1024))
    cmd = [sys.executable, __file__, "--memory-child", label, "--threads", str(threads)]
    cmd += ["--memory-steps", str(steps)] + (["--lora"] if lora else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory child {label} (lora={lora}) failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------------------
def median(values) -> float:
    return statistics.median(list(values))


def report_speed(case: Case, trainer: Trainer, steps: list[TimedStep]) -> None:
    shape = Shape.of(trainer.policy)
    n_params = sum(p.numel() for p in trainer.policy.module.parameters())
    print(
        f"\n{case.label}: {n_params:,} parameters (body matmuls {shape.body:,}, head {shape.head:,}, "
        f"{shape.layers} layers, d_attn {shape.d_attn}); batch {case.batch} x {case.max_new_tokens} "
        f"new tokens; full fine-tuning"
    )
    matmul = median(s.matmul for s in steps)
    print(f"  torch.mm {MATMUL_SIZE}x{MATMUL_SIZE} fp32: {matmul / 1e9:.1f} GFLOP/s (median)")
    head = f"  {'phase':>8} | {'s':>7} | {'GFLOP':>8} | {'GFLOP/s':>8} | {'of mm':>6}"
    print(head)
    for phase in (*PHASES, "total"):
        secs = median(s.seconds[phase] for s in steps)
        gflop = median(s.flops.get(phase, 0.0) for s in steps) / 1e9
        rate = median(s.flops.get(phase, 0.0) / s.seconds[phase] for s in steps)
        share = median(s.flops.get(phase, 0.0) / s.seconds[phase] / s.matmul for s in steps)
        print(f"  {phase:>8} | {secs:7.3f} | {gflop:8.2f} | {rate / 1e9:8.2f} | {share:6.1%}")
    by_cpu = median(s.flops["total"] / s.cpu_seconds / s.matmul_cpu for s in steps)
    cpu = median(s.cpu_seconds for s in steps)
    print(
        f"  per CPU second (less sensitive to time-slicing): step {cpu:.3f} CPU s, "
        f"matmul {median(s.matmul_cpu for s in steps) / 1e9:.1f} GFLOP/CPU s, step {by_cpu:.1%} of it"
    )
    total = median(s.seconds["total"] for s in steps)
    tokens = median(s.generated_tokens / s.seconds["total"] for s in steps)
    mean_len = statistics.fmean(s.generated_tokens for s in steps) / case.batch
    print(
        f"  step {total:.3f} s; {case.batch / total:.1f} samples/s; {tokens:.0f} generated tokens/s "
        f"(mean length {mean_len:.1f})"
    )


def report_memory(label: str, full: dict, lora: dict | None) -> None:
    variants = [("full", full)] + ([("lora", lora)] if lora else [])
    for name, m in variants:
        print(
            f"\n{label} {name} fine-tuning ({m['trainable']:,} trainable): RSS after loading "
            f"{m['loaded_mib']:.0f} MiB (peak while loading {m['loading_peak_mib']:.0f} MiB); "
            f"peak during a step {m['step_peak_mib']:.0f} MiB"
        )
        print(f"  {'phase':>9} | {'peak MiB':>9} | {'+ over entry':>12}")
        for p in MEMORY_PHASES:
            print(f"  {p:>9} | {m['peak_mib'][p]:9.0f} | {m['peak_mib'][p] - m['entry_mib'][p]:12.0f}")
    if lora:
        ratio = full["step_peak_mib"] / lora["step_peak_mib"]
        print(
            f"\n{label} LoRA saving: peak RSS during a step {full['step_peak_mib']:.0f} MiB (full) vs "
            f"{lora['step_peak_mib']:.0f} MiB (LoRA): {ratio:.2f}x less"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--models", default="gpt2-5m,smollm2", help=f"any of {', '.join(CASES)}")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps per memory subprocess (>= 2)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    labels = args.models.split(",")
    unknown = [m for m in labels if m not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; valid: {', '.join(CASES)}")
    if args.memory_steps < 2:
        parser.error("--memory-steps must be >= 2 (step 1 is not recorded)")

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    if args.memory_child:
        print(json.dumps(memory_child(CASES[args.memory_child], args.threads, args.memory_steps, args.lora)))
        return

    print(
        f"torch {torch.__version__}, threads = {torch.get_num_threads()} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start); median of "
        f"{args.repeats} steps after {args.warmup} warm-up; DPG step, proposal fixed at q = a"
    )
    started = time.perf_counter()
    for label in labels:
        case = CASES[label]
        trainer, steps = time_steps(case, args.threads, args.warmup, args.repeats)
        report_speed(case, trainer, steps)
        del trainer
    if not args.skip_memory:
        for label in labels:
            full = run_memory_child(label, args.threads, args.memory_steps, lora=False)
            lora = None
            if label == "smollm2":
                lora = run_memory_child(label, args.threads, args.memory_steps, lora=True)
            report_memory(label, full, lora)
    print(
        f"\nbenchmark wall time {time.perf_counter() - started:.0f} s; load average "
        f"{os.getloadavg()[0]:.2f} at end (above {args.threads} means other jobs shared the CPU)"
    )


if __name__ == "__main__":
    main()
