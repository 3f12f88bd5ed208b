"""Seconds per sample of a REINFORCE-with-leave-one-out update: bayesalign against TRL's RLOO trainer.

    bash benchmarks/setup_trl_venv.sh              # once: TRL in .venv-trl, torch pinned first
    .venv/bin/python benchmarks/bench_trl.py [--spec 5M|0.4M] [--batch 64] [--warmup 2]
        [--repeats 5] [--beta 0] [--threads 1] [--trl-gradient-checkpointing]

One GPT-2 with random weights (bench_step.py's 5M or 0.4M model, word-level vocabulary) is built
in our venv and written with ``save_pretrained`` to a temporary folder; TRL, in its own venv
(.venv-trl, so its pins never touch ours), loads that folder. Both sides then run the same
problem: prompt "w1", ``--batch`` completions of at most 20 tokens sampled at temperature 1 (no
top-k/top-p), reward 1 if the completion contains one of the constraint words (≈45% do), one
AdamW update per batch (lr 1e-4, clip 1.0), no KL penalty (``--beta 0``). RLOO's advantage is
the reward minus the mean reward of the other completions of the same prompt; with every
completion sharing one prompt (``num_generations = batch``) that is exactly our ``reinforce``
objective with ``baseline: loo``, on-policy. With ``--beta B > 0`` ours runs ``kl-reinforce``
(k1 in the reward) and TRL its KL-penalised RLOO; each then also scores under the reference.
TRL's configs turn gradient checkpointing on by default (it recomputes the forward during the
backward to save memory); nobody needs that for a 5M model, so it is off here, as a TRL user would
configure it (``--trl-gradient-checkpointing`` restores TRL's default).

The two trainers live in two persistent worker processes and run in lock-step: the driver asks
one for an update, waits for its time, then asks the other (alternating which goes first), so
both see the same background load and never compete with each other. An update is timed from
the start of sampling to the end of the optimizer step: ours around ``Trainer.train_step()``,
TRL's between its ``on_step_begin`` and ``on_step_end`` callbacks (generation, reward,
log-probabilities, loss, backward, optimizer; TRL's logging, after ``on_step_end``, is not
counted), in wall seconds (perf_counter) and in the worker's CPU seconds (process_time, which
time-slicing by other jobs inflates less). Figures are medians over ``--repeats`` after
``--warmup``; the verdict is on CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worker_protocol import emit, read_record

ROOT = Path(__file__).resolve().parent.parent
MAX_NEW_TOKENS = 20
PROMPT = "w1"
LR = 1e-4


# -- our side (runs in .venv) ----------------------------------------------------------------------
def ours_worker(args: argparse.Namespace) -> None:
    import torch
    from bench_step import MEDIUM, SMALL, PhaseClock, build_prior, constraint_words
    from transformers.utils import logging as hf_logging

    from bayesalign.config import parse_config
    from bayesalign.config.build import build_target, build_trainer
    from bayesalign.models import make_policy

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    spec = {"5M": MEDIUM, "0.4M": SMALL}[args.spec]
    words = constraint_words(spec)
    prior = build_prior(spec)
    prior.module.save_pretrained(args.model_dir, safe_serialization=True)
    prior.tokenizer.save_pretrained(args.model_dir)
    (Path(args.model_dir) / "words.json").write_text(json.dumps(words))
    prior.prompt = PROMPT
    method = "kl-reinforce" if args.beta > 0 else "reinforce"
    training = {
        "method": method,
        "batch_size": args.batch,
        "lr": LR,
        "max_grad_norm": 1.0,
        "threads": args.threads,
        "proposal": {"update": "on_policy"},
        "reuse_sampling_pass": not args.two_pass,
    }
    if args.beta > 0:
        training["kl_reinforce"] = {"beta": args.beta}
    config = parse_config(
        {
            "model": {"name": f"bench-gpt2-{spec.label}"},
            "prompt": PROMPT,
            "sampling": {"max_new_tokens": MAX_NEW_TOKENS},
            "target": {"constraints": [{"type": "word", "words": list(words)}]},
            "training": training,
        }
    )
    policy = make_policy(prior)
    target = build_target(config.target, prior, config.sampling)
    trainer = build_trainer(config, policy, target)
    lengths: list[float] = []
    clock = PhaseClock()  # where our update's time goes, printed beside the total
    clock.wrap(policy, "sample", "sample", lambda s: lengths.append(s.lengths.float().mean().item()))
    clock.wrap(prior, "token_log_probs_frozen", "log a")
    clock.wrap(policy, "forward_generated", "log pi")
    n_params = sum(p.numel() for p in policy.module.parameters())
    emit("ready", params=n_params, method=method, words=len(words))
    for _ in sys.stdin:
        clock.reset()
        start, cpu = time.perf_counter(), time.process_time()
        metrics = trainer.train_step()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        phases = {p: clock.seconds.get(p, 0.0) for p in ("sample", "log a", "log pi")}
        phases["rest"] = seconds - sum(phases.values())
        reward = metrics.get("reward", float("nan"))
        emit("step", seconds=seconds, cpu=cpu, length=lengths[-1], reward=reward, phases=phases)


# -- TRL's side (runs in .venv-trl; imports nothing of bayesalign) ---------------------------------
def trl_worker(args: argparse.Namespace) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import RLOOConfig, RLOOTrainer

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    folder = Path(args.model_dir)
    words = set(json.loads((folder / "words.json").read_text()))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def contains_word(completions: list[str], **_) -> list[float]:
        """The same b(x) as bayesalign's WordScorer on these space-separated word tokens."""
        return [float(any(w in words for w in text.split())) for text in completions]

    class Lockstep(TrainerCallback):
        """Blocks before each update until the driver says go; reports the update's time."""

        start = 0.0
        last: dict = {}

        def on_train_begin(self, *_, **__):
            n_params = sum(p.numel() for p in model.parameters())
            emit("ready", params=n_params, method="trl-rloo", words=len(words))

        def on_step_begin(self, *_, **__):
            if not sys.stdin.readline():
                raise SystemExit(0)
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, *_, **__):
            self.seconds = time.perf_counter() - self.start
            self.cpu = time.process_time() - self.cpu_start

        def on_log(self, args, state, control, logs=None, **__):
            logs = logs or {}
            emit(
                "step",
                seconds=self.seconds,
                cpu=self.cpu,
                length=logs.get("completions/mean_length", float("nan")),
                reward=logs.get("reward", float("nan")),
            )

    steps = args.warmup + args.repeats
    config = RLOOConfig(
        output_dir=str(folder / "trl-out"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        num_generations=args.batch,  # one prompt per update: the baseline is the other completions
        max_completion_length=MAX_NEW_TOKENS,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=args.beta,
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        # TRL's configs default to gradient checkpointing (recompute the forward in backward, to
        # save memory on large models); users of a model this small turn it off
        gradient_checkpointing=args.trl_gradient_checkpointing,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    dataset = Dataset.from_dict({"prompt": [PROMPT] * (steps + 8)})
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=contains_word,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Lockstep()],
    )
    trainer.train()


# -- driver ----------------------------------------------------------------------------------------
class Worker:
    """A worker process that answers each line on its stdin with one ``step`` record."""

    def __init__(self, name: str, python: Path, args: argparse.Namespace, env: dict) -> None:
        self.name = name
        role = "ours" if name.startswith("ours") else name
        cmd = [str(python), __file__, "--worker", role, "--model-dir", args.model_dir]
        cmd += ["--two-pass"] if name == "ours-2pass" else []
        cmd += ["--spec", args.spec, "--batch", str(args.batch), "--threads", str(args.threads)]
        cmd += ["--warmup", str(args.warmup), "--repeats", str(args.repeats), "--beta", str(args.beta)]
        cmd += ["--trl-gradient-checkpointing"] if args.trl_gradient_checkpointing else []
        self.log = open(Path(args.model_dir) / f"{name}.stderr", "w")  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=ROOT
        )
        self.ready = self.read("ready")

    def read(self, kind: str) -> dict:
        return read_record(self.proc, self.log, self.name, kind)

    def step(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self.read("step")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        self.log.close()


def drive(args: argparse.Namespace) -> None:
    # ours runs in the driver's own interpreter (our venv), TRL in .venv-trl
    pythons = {"ours": Path(sys.executable), "trl": ROOT / ".venv-trl" / "bin" / "python"}
    for name, python in pythons.items():
        if not python.exists():
            hint = "bash benchmarks/setup_trl_venv.sh" if name == "trl" else "make setup"
            sys.exit(f"{python} is missing; create it first: {hint}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    paths = (str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH"))  # keep a caller's src/ first on the path
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    print(
        f"threads = {args.threads} per worker ({os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start); GPT-2 {args.spec}, batch {args.batch} x {MAX_NEW_TOKENS} "
        f"tokens, beta {args.beta}; median of {args.repeats} updates after {args.warmup} warm-up; "
        f"TRL gradient checkpointing {'on' if args.trl_gradient_checkpointing else 'off'}"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        args.model_dir = tmp
        workers = [Worker("ours", pythons["ours"], args, env)]  # builds and saves the model first
        workers.append(Worker("trl", pythons["trl"], args, env))
        if args.compare_two_pass:  # ours with a separate forward of π, as before the sampling pass was reused
            workers.append(Worker("ours-2pass", pythons["ours"], args, env))
        for w in workers:
            r = w.ready
            print(f"  {w.name}: {r['method']}, {r['params']:,} parameters, {r['words']} constraint words")
        runs: dict[str, list[dict]] = {w.name: [] for w in workers}
        for i in range(args.warmup + args.repeats):
            order = workers[i % len(workers) :] + workers[: i % len(workers)]  # who goes first rotates
            for w in order:
                record = w.step()
                if i >= args.warmup:
                    runs[w.name].append(record)
                print(
                    f"  update {i + 1}: {w.name:>4} {record['seconds']:.3f} s, mean length "
                    f"{record['length']:.1f}, reward {record['reward']:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
        for w in workers:
            w.close()

    per_update = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r["cpu"] for r in rs) for name, rs in runs.items()}
    print(
        f"\n{'impl':>5} | {'s/update':>8} | {'CPU s/update':>12} | {'ms/sample':>9} | {'samples/s':>9} | "
        f"{'mean len':>8}"
    )
    for name, seconds in per_update.items():
        length = statistics.fmean(r["length"] for r in runs[name])
        print(
            f"{name:>5} | {seconds:8.3f} | {cpu[name]:12.3f} | {1000 * seconds / args.batch:9.2f} | "
            f"{args.batch / seconds:9.1f} | {length:8.1f}"
        )
    phases = {p: statistics.median(r["phases"][p] for r in runs["ours"]) for p in runs["ours"][0]["phases"]}
    print("ours by phase (medians, s): " + ", ".join(f"{p} {s:.3f}" for p, s in phases.items()))
    print("  (log a: the prior's forward that propose() runs for log P; rest: score, loss, backward, AdamW)")
    ratio = per_update["ours"] / per_update["trl"]
    cpu_ratio = cpu["ours"] / cpu["trl"]
    verdict = "PASS" if cpu_ratio <= 0.4 else "FAIL"
    print(
        f"\nours / TRL time per sample: wall {ratio:.2f}, CPU {cpu_ratio:.2f} -> {verdict} (goal: CPU <= 0.4)"
    )
    if "ours-2pass" in cpu:
        print(
            f"ours-2pass / TRL, CPU {cpu['ours-2pass'] / cpu['trl']:.2f}; ours / ours-2pass, CPU "
            f"{cpu['ours'] / cpu['ours-2pass']:.2f}"
        )
    print(
        f"benchmark wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f} "
        f"at end (above {args.threads} means other jobs shared the CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", choices=["5M", "0.4M"], default="5M", help="bench_step.py's GPT-2")
    parser.add_argument("--batch", type=int, default=64, help="completions per update")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (0: plain RLOO)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--trl-gradient-checkpointing",
        action="store_true",
        help="leave TRL's default gradient checkpointing on (off by default: a 5M model does not need it)",
    )
    parser.add_argument(
        "--compare-two-pass",
        action="store_true",
        help="also run ours with training.reuse_sampling_pass: false (π's separate forward), in the rotation",
    )
    parser.add_argument("--two-pass", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch < 2:
        parser.error("--batch must be >= 2 (the leave-one-out baseline needs another sample)")
    if args.beta < 0:
        parser.error("--beta must be >= 0")
    if args.worker == "ours":
        ours_worker(args)
    elif args.worker == "trl":
        trl_worker(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
