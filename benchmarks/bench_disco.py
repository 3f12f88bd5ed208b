"""DPG side by side: bayesalign against the disco toolkit (naver/disco 1.1.1), same workloads, one run.

    bash benchmarks/setup_disco_venv.sh        # once: disco in .venv-disco (see its header)
    python benchmarks/bench_disco.py [--workloads on-0.3,on-0.1,on-0.03,fixed-0.1] [--seeds 0,1,2]
        [--steps 100] [--lr 1e-3] [--pool 50000] [--pi-samples 2048] [--out results.jsonl]
        [--variant NAME=JSON ...] [--disco-lr 1e-4,3e-4] [--no-disco] [--method gdc++|dpg]

The prior a is a randomly initialised GPT-2 (2 layers × 128, 4 heads, 0.41M parameters) over a
101-token word-level vocabulary (EOS, w1..w100), with initialiser std 0.1 so that its next-token
distributions are far from uniform and words differ in how often they occur. It is built once
in our venv and written with ``save_pretrained``; both libraries load that folder. Sequences
start from EOS (disco: context "<eos>"; ours: the empty prompt) and have at most 20 tokens.

A workload is a word constraint b(x) = 1 iff x contains the word, the word chosen so that its
base rate under a (on a 4,096-sample pilot pool) is nearest 0.3, 0.1, 0.03 or 0.01, and a proposal:
``on`` = on-policy (q = π; disco's "online" mode) or ``fixed`` = offline with q = a (disco: a
proposal distribution that is never replaced, its divergence check interval set past the last
step). Both libraries train by GDC++ (DPG with the baseline π/q; disco's DPGTuner default,
KLLoss(use_baseline=True)) or, with ``--method dpg``, by DPG without a baseline (disco:
KLLoss(use_baseline=False)), 256 samples × 20 tokens per step, one update per step, the same lr
and number of steps; every other setting is each library's default (disco: Adam, no clipping,
12 warm-up steps from lr 0; ours: AdamW with weight decay 0, gradient norm clipped at 1.0, no
warm-up). ``--variant NAME=JSON`` adds a run of ours with ``training`` overrides (e.g.
``adam-noclip={"optimizer":"adam","max_grad_norm":null}`` or ``lr3e-4={"lr":3e-4}``), for finding
causes and tuning ours (plus this script's own probes: ``bench_decay`` (lr decays linearly
to 0), ``bench_betas`` (Adam's β1, β2), ``bench_ema`` (the final π is an exponential moving
average of the weights with this decay), ``bench_weights`` (how GDC++ forms its advantage:
``batch_z``, the weights P/q normalised by their own batch mean instead of the running Z;
``mean_baseline``, the batch mean of the weights subtracted instead of π/q), ``bench_twist``
(not GDC++: a learned twist π ∝ a·σ(u_θ) fitted on 256 new samples of a per step,
twist_fit.py, with these TwistFitSettings, e.g. ``twist={"bench_twist": {"lr": 1e-3,
"updates_per_step": 2}}``; the workload's proposal does not apply)); the loop's own method
``twist`` runs as a variant too, with q = a whatever the workload's proposal
(``loop={"method": "twist", "proposal": {"update": "fixed"}, "minibatch_size": 128}``); ``--disco-lr``
runs disco at each of several lrs (one worker process each, all in the same lock-step), so that
ours is compared with disco at its best lr.

Timing: each library runs in a persistent worker process of its own venv, 1 thread, and the
runners of a (workload, seed) step in lock-step, rotating who goes first, so all see the same
background load. A step is timed wall (perf_counter) and CPU (process_time) from the start of
sampling to the end of the optimizer step: ours around ``Trainer.train_step()``, disco's
between two of its ``step_idx_updated`` notifications inside ``DPGTuner.tune()``.

Posterior quality, by one estimator that is neither library's: a pool of N samples from a
(``--pool``, drawn once); b ∈ {0, 1}, so the pool's satisfying samples are exact samples of p,
and log Z = log(acceptance rate). KL(p‖π) = mean over those p-samples of
(log a + log b − log Z − log π); its standard error combines the mean's and log Z's
((1 − r)/(N r) by the delta method). The pool is shared by every model of a workload, so the
log Z part of the error is common to all of them (it cancels in differences between models;
``se_diff`` is the error without it). On ``--pi-samples`` fresh samples of each final π:
satisfaction E_π[b] and KL(π‖a) = mean(log π − log a). log π and log a are computed by
bayesalign's LanguageModel for both libraries' final models; the script first checks that disco
and bayesalign give the same log-probabilities (within 1e-5) on samples of the same folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worker_protocol import emit, read_record

ROOT = Path(__file__).resolve().parent.parent
WORDS = [f"w{i}" for i in range(1, 101)]
WEIGHTS = ("batch_z", "mean_baseline")  # the bench_weights probes
EOS = "<eos>"
MAX_NEW_TOKENS = 20
BATCH = 256
POOL_SEED = 12345  # pool of prior samples for the estimator; pilot pool uses POOL_SEED + 1
PILOT = 4096
WORKLOADS = {  # name: (target base rate of the constraint word, proposal)
    "on-0.3": (0.3, "on"),
    "on-0.1": (0.1, "on"),
    "on-0.03": (0.03, "on"),
    "on-0.01": (0.01, "on"),  # the rarest: this prior has no word below ≈ 0.02 (631 of 30,000)
    "fixed-0.3": (0.3, "fixed"),
    "fixed-0.1": (0.1, "fixed"),
    "fixed-0.03": (0.03, "fixed"),
}


def commands():
    """Protocol lines from the driver on stdin, one JSON object each; ends at EOF."""
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


# -- our side (runs in our venv) -------------------------------------------------------------------
def weights_probe(kind: str):
    """GDC++ with another weight normalisation or baseline (``bench_weights``), to measure what
    each does to the gradient's noise. Each step's samples form one minibatch here (BATCH), so
    the batch statistics below are the step's."""
    import dataclasses

    import torch

    from bayesalign.objectives.distribution_matching import GDCPlusPlus

    class Probe(GDCPlusPlus):
        def per_sample_loss(self, batch, out):
            if kind == "batch_z":  # GDC++ itself, with log Z = log of this batch's mean P/q
                log_w = batch.log_target - batch.log_q
                log_z = (torch.logsumexp(log_w, 0) - math.log(len(log_w))).item()
                return super().per_sample_loss(dataclasses.replace(batch, log_z=log_z), out)
            w = batch.normalised_weights  # running-Z weights, their batch mean as the baseline
            return -(w - w.mean()).to(out.log_prob) * out.log_prob

    return Probe()


def variant(spec: str) -> tuple[str, dict]:
    """``--variant NAME=JSON`` → (name, overrides); bad JSON or an unknown probe is refused by
    argparse, before the pool is drawn."""
    name, _, overrides = spec.partition("=")
    try:
        parsed = json.loads(overrides or "{}")
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"{name}: the part after = must be a JSON object, got {overrides!r}")
    if parsed.get("bench_weights", WEIGHTS[0]) not in WEIGHTS:
        raise argparse.ArgumentTypeError(
            f"{name}: bench_weights must be one of {', '.join(WEIGHTS)}, got {parsed['bench_weights']!r}"
        )
    twist = parsed.get("bench_twist", {})
    if not isinstance(twist, dict) or not set(twist) <= {"lr", "updates_per_step", "minibatch_size"}:
        raise argparse.ArgumentTypeError(
            f"{name}: bench_twist takes lr, updates_per_step and minibatch_size only, got {twist!r}"
        )
    return name, parsed


def ours_worker() -> None:
    import torch
    from transformers.utils import logging as hf_logging

    from bayesalign.config import parse_config
    from bayesalign.config.build import build_target, build_trainer
    from bayesalign.models import LanguageModel, make_policy
    from bayesalign.objectives.twist import twisted_policy
    from bayesalign.samples import SamplingParams
    from bayesalign.training.trainer import Trainer
    from bayesalign.twist_fit import TwistFitSettings, TwistFitter

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    jobs: dict[str, tuple[Trainer | TwistFitter, LanguageModel | None, float | None, list]] = {}
    emit("ready")
    for cmd in commands():
        if cmd["cmd"] == "init":
            # bench_* overrides are this script's, not the library's (probes of settings it lacks)
            bench = {k: v for k, v in cmd["overrides"].items() if k.startswith("bench_")}
            training = {
                "method": cmd["method"],
                "steps": cmd["steps"],
                "batch_size": BATCH,
                "lr": cmd["lr"],
                "seed": cmd["seed"],
                "threads": 1,
                "proposal": {"update": "on_policy" if cmd["proposal"] == "on" else "fixed"},
                **{k: v for k, v in cmd["overrides"].items() if k not in bench},
            }
            config = parse_config(
                {
                    "model": {"name": cmd["model_dir"]},
                    "prompt": "",
                    "sampling": {"max_new_tokens": MAX_NEW_TOKENS},
                    "target": {"constraints": [{"type": "word", "words": [cmd["word"]]}]},
                    "training": training,
                }
            )
            prior = LanguageModel.from_pretrained(cmd["model_dir"])
            target = build_target(config.target, prior, config.sampling)
            if "bench_twist" in bench:  # a learned twist fitted on samples of a (twist_fit.py)
                settings = TwistFitSettings(batch_size=BATCH, seed=cmd["seed"], **bench["bench_twist"])
                jobs[cmd["id"]] = (
                    TwistFitter(target, SamplingParams(MAX_NEW_TOKENS), settings),
                    None,
                    None,
                    [],
                )
                emit("ready")
                continue
            twist = config.training.twist  # method twist through the loop (objectives/twist.py)
            if twist is None:
                policy = make_policy(prior)
            else:
                policy = twisted_policy(prior, head=twist.head, trunk=twist.trunk)
            trainer = build_trainer(config, policy, target)
            optimizer, args = trainer.scheduler.optimizer, config.training
            if bench.get("bench_decay"):  # lr decays linearly to 0 over the run's updates
                total, warm = cmd["steps"] * args.epochs * (BATCH // args.minibatch), args.warmup_steps
                trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer, lambda u, t=total, w=warm: (min(1.0, (u + 1) / w) if w else 1.0) * (1 - u / t)
                )
            for group in optimizer.param_groups:  # Adam's (β1, β2)
                group["betas"] = tuple(bench.get("bench_betas", group["betas"]))
            decay = bench.get("bench_ema")  # the saved π is an exponential average of the iterates
            average = [p.detach().clone() for p in trainer.params] if decay else []
            if bench.get("bench_weights"):
                trainer.objective = weights_probe(bench["bench_weights"])
            jobs[cmd["id"]] = (trainer, policy, decay, average)
            emit("ready")
        elif cmd["cmd"] == "step":
            trainer, _, decay, average = jobs[cmd["id"]]
            wall, cpu = time.perf_counter(), time.process_time()
            trainer.step() if isinstance(trainer, TwistFitter) else trainer.train_step()
            with torch.no_grad():
                for mean, p in zip(average, trainer.params if decay else [], strict=True):
                    mean.mul_(decay).add_(p, alpha=1 - decay)
            emit("step", wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)
        elif cmd["cmd"] == "save":
            trainer, policy, _, average = jobs.pop(cmd["id"])
            policy = trainer.model if isinstance(trainer, TwistFitter) else policy
            with torch.no_grad():
                for mean, p in zip(average, trainer.params if average else [], strict=True):
                    p.copy_(mean)
            policy.save_pretrained(cmd["path"])
            emit("saved")


# -- disco's side (runs in .venv-disco; imports nothing of bayesalign) -----------------------------
def disco_worker() -> None:
    os.environ.setdefault("DISCO_SAVE_PATH", tempfile.gettempdir())
    import torch
    from disco.distributions import LMDistribution
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    stream = commands()
    emit("ready")
    for cmd in stream:
        if cmd["cmd"] == "check":  # samples and disco's log-probabilities of them, for the check
            torch.manual_seed(0)
            model = LMDistribution(cmd["model_dir"], length=MAX_NEW_TOKENS)
            samples, sampling_log_probs = model.sample(context=EOS, sampling_size=cmd["n"])
            tokens = model.log_score(samples, context=EOS, sum=False)
            emit(
                "checked",
                ids=[s.token_ids.tolist() for s in samples],
                sampling=sampling_log_probs.tolist(),
                tokens=tokens.tolist(),
            )
            continue
        if cmd["cmd"] != "init":
            raise SystemExit(f"disco worker: unexpected {cmd!r}")
        run_disco_job(cmd, stream)


def run_disco_job(cmd: dict, stream) -> None:
    """One DPGTuner run, stepped by the driver: each "step" line lets ``tune()`` run one step."""
    import torch
    from disco.distributions import LMDistribution
    from disco.scorers import BooleanScorer
    from disco.tuners import DPGTuner
    from disco.tuners.losses import KLLoss

    word, steps = cmd["word"], cmd["steps"]
    base = LMDistribution(cmd["model_dir"], length=MAX_NEW_TOKENS)
    target = base * BooleanScorer(lambda sample, context: word in sample.text.split())
    policy = LMDistribution(cmd["model_dir"], length=MAX_NEW_TOKENS, freeze=False)
    proposal = None
    interval = 16  # disco's default divergence_evaluation_interval
    if cmd["proposal"] == "fixed":  # offline with q = a, never replaced
        proposal = LMDistribution(cmd["model_dir"], length=MAX_NEW_TOKENS)
        interval = steps + 1
    tuner = DPGTuner(
        policy,
        target,
        proposal=proposal,
        context=EOS,
        n_gradient_steps=steps,
        n_samples_per_step=BATCH,
        sampling_size=BATCH,  # one generate() call per step (disco's default is 32)
        scoring_size=BATCH,  # one minibatch per step (disco's default is 64: same gradient)
        learning_rate=cmd["lr"],
        divergence_evaluation_interval=interval,
        loss=KLLoss(use_baseline=cmd["method"] == "gdc++"),  # disco's default: the baseline on
    )
    clock: dict[str, float] = {}

    def finish_step() -> None:
        emit("step", wall=time.perf_counter() - clock["wall"], cpu=time.process_time() - clock["cpu"])

    def on_step(index: int) -> None:  # tune() calls this at the start of every step
        if index > 0:
            finish_step()
        command = next(stream)
        if command["cmd"] != "step":
            raise SystemExit(f"disco worker: expected a step, got {command!r}")
        clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

    tuner.step_idx_updated.enroll(on_step)
    torch.manual_seed(cmd["seed"])
    emit("ready")
    tuner.tune()
    finish_step()
    command = next(stream)
    policy.network.save_pretrained(command["path"], safe_serialization=True)
    policy.tokenizer.save_pretrained(command["path"])
    emit("saved")


# -- driver (our venv) -----------------------------------------------------------------------------
class Worker:
    def __init__(self, name: str, python: Path, env: dict, log_dir: Path, kind: str | None = None) -> None:
        self.name = name
        self.log = open(log_dir / f"{name}.stderr", "w")  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen(
            [str(python), __file__, "--worker", kind or name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.read("ready")

    def send(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def read(self, kind: str) -> dict:
        return read_record(self.proc, self.log, self.name, kind)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        self.log.close()


def build_prior(folder: Path, init_std: float):
    from bayesalign.toy import toy_model

    prior = toy_model(WORDS, seed=0, n_embd=128, n_layer=2, n_head=4, n_positions=32, init_std=init_std)
    prior.save_pretrained(folder)
    # transformers 5 names the tokenizer class "TokenizersBackend", which disco's transformers
    # 4.40 does not know; both read the same tokenizer.json as a PreTrainedTokenizerFast
    config = folder / "tokenizer_config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    return prior


def draw(model, n: int, seed: int):
    import torch

    from bayesalign.samples import SamplingParams

    generator = torch.Generator().manual_seed(seed)
    return model.sample(n, SamplingParams(MAX_NEW_TOKENS), generator=generator, batch_size=2048)


def choose_words(prior, rates: list[float]) -> dict[float, tuple[str, float]]:
    """For each wanted base rate, the word whose rate on a pilot pool of a is nearest."""
    pilot = draw(prior, PILOT, POOL_SEED + 1)
    counts = dict.fromkeys(WORDS, 0)
    for text in pilot.texts:
        for word in set(text.split()):
            counts[word] += 1
    return {r: min(((w, c / PILOT) for w, c in counts.items()), key=lambda wc: abs(wc[1] - r)) for r in rates}


def check_log_probs(disco: Worker, folder: Path, n: int = 64) -> dict[str, float]:
    """Largest gaps between disco's and bayesalign's log-probabilities on disco's samples of the
    model in ``folder``: per token, and per sequence (also disco's own sampling pass against its
    scoring pass, for the float32 rounding that sums of ~15 tokens carry)."""
    import torch

    from bayesalign.models import LanguageModel
    from bayesalign.samples import Samples

    disco.send(cmd="check", model_dir=str(folder), n=n)
    got = disco.read("checked")
    ours = LanguageModel.from_pretrained(folder)
    rows = []
    for ids in got["ids"]:  # generated tokens up to and including the first EOS
        end = ids.index(0) + 1 if 0 in ids else len(ids)
        rows.append(ids[:end])
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
    prompt = torch.zeros(len(rows), 1, dtype=torch.long)
    samples = Samples(
        prompt, torch.ones_like(prompt, dtype=torch.bool), ids, mask, torch.zeros(ids.shape), [""] * len(rows)
    )
    ours_tokens = ours.token_log_probs_frozen(samples).double()
    disco_tokens = torch.tensor(got["tokens"], dtype=torch.float64)[:, :width] * mask
    sampling = torch.tensor(got["sampling"], dtype=torch.float64)
    return {
        "token": (ours_tokens - disco_tokens).abs().max().item(),
        "sequence": (ours_tokens.sum(-1) - disco_tokens.sum(-1)).abs().max().item(),
        "disco_sampling_vs_scoring": (sampling - disco_tokens.sum(-1)).abs().max().item(),
        "mean_abs_log_prob": disco_tokens.sum(-1).abs().mean().item(),
    }


class Estimator:
    """KL(p‖π) from exact p-samples (a pool of a, kept where b = 1), E_π[b] and KL(π‖a)."""

    def __init__(self, prior, pool_size: int, pi_samples: int) -> None:
        self.prior, self.pi_samples = prior, pi_samples
        started = time.process_time()
        self.pool = draw(prior, pool_size, POOL_SEED)
        self.pool_cpu = time.process_time() - started
        self.log_a = self.pool.log_q.double()  # the sampling pass's log-probabilities: log a exactly

    def workload(self, word: str) -> dict:
        import torch

        from bayesalign.scorers import WordScorer

        scorer = WordScorer((word,))
        satisfied = scorer(self.pool.texts).bool()
        index = torch.nonzero(satisfied)[:, 0]
        n, accepted = len(self.pool), len(index)
        rate = accepted / n
        return {
            "scorer": scorer,
            "p_samples": self.pool.select(index),
            "log_a": self.log_a[index],
            "log_z": math.log(rate),
            "var_log_z": (1 - rate) / (n * rate),
            "accepted": accepted,
            "rate": rate,
        }

    def score(self, folder: Path, w: dict, seed: int) -> dict:
        from bayesalign.models import LanguageModel

        pi = LanguageModel.from_pretrained(folder)
        log_pi = pi.log_prob_frozen(w["p_samples"], batch_size=2048).double()
        terms = w["log_a"] - w["log_z"] - log_pi
        var_mean = terms.var().item() / len(terms)
        fresh = draw(pi, self.pi_samples, 10_000 + seed)
        sat = w["scorer"](fresh.texts)
        kl_pi_a = fresh.log_q.double() - self.prior.log_prob_frozen(fresh, batch_size=2048).double()
        return {
            "kl_p_pi": terms.mean().item(),
            "se": math.sqrt(var_mean + w["var_log_z"]),
            "se_diff": math.sqrt(var_mean),
            "satisfaction": sat.mean().item(),
            "satisfaction_se": sat.std().item() / math.sqrt(len(sat)),
            "kl_pi_a": kl_pi_a.mean().item(),
            "kl_pi_a_se": kl_pi_a.std().item() / math.sqrt(len(kl_pi_a)),
            "length_pi": fresh.lengths.double().mean().item(),
        }


def show_gaps(gaps: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2e}" if k != "mean_abs_log_prob" else f"{k} {v:.1f}" for k, v in gaps.items())


def drive(args: argparse.Namespace) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    disco_python = ROOT / ".venv-disco" / "bin" / "python"
    if not args.no_disco and not disco_python.exists():
        sys.exit(f"{disco_python} is missing; create it first: bash benchmarks/setup_disco_venv.sh")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-disco-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; work folder {work}")

    prior_dir = work / "prior"
    prior = build_prior(prior_dir, args.init_std)
    n_params = sum(p.numel() for p in prior.module.parameters())
    workloads = args.workloads.split(",")
    words = choose_words(prior, sorted({WORKLOADS[w][0] for w in workloads}))
    estimator = Estimator(prior, args.pool, args.pi_samples)
    print(
        f"prior: GPT-2, {n_params:,} parameters, vocabulary {len(WORDS) + 1}; pool of {args.pool:,} "
        f"samples of a ({estimator.pool_cpu:.0f} CPU s), "
        f"mean length {estimator.pool.lengths.double().mean():.1f}"
    )

    workers: dict[str, Worker] = {"ours": Worker("ours", Path(sys.executable), env, work)}
    runners = []  # (name, worker, our training overrides, lr)
    for lr in [] if args.no_disco else args.disco_lr or [args.lr]:  # one disco worker per lr
        name = "disco" if lr == args.lr else f"disco:lr{lr:g}"
        workers[name] = Worker(name, disco_python, env, work, kind="disco")
        runners.append((name, name, {}, lr))
    if not args.no_disco:
        gaps = check_log_probs(workers[runners[0][1]], prior_dir)
        print("log-prob check on the prior's folder, max |disco - ours|: " + show_gaps(gaps))
        if gaps["token"] > 1e-5:
            sys.exit("disco and bayesalign disagree on a token's log-probability by more than 1e-5")
    runners += [("ours", "ours", {}, args.lr)] if not args.no_default else []
    for name, overrides in args.variant:
        runners.append((f"ours:{name}", "ours", overrides, overrides.get("lr", args.lr)))

    for workload in workloads:
        rate, proposal = WORKLOADS[workload]
        word, pilot_rate = words[rate]
        w = estimator.workload(word)
        print(
            f"\n{workload}: b = contains {word!r} (pilot rate {pilot_rate:.3f}; pool: {w['accepted']} of "
            f"{args.pool} accepted, log Z = {w['log_z']:.4f} ± {math.sqrt(w['var_log_z']):.4f}), "
            f"proposal {proposal}",
            flush=True,
        )
        for seed in args.seeds:
            ids = [f"{workload}/{name}/seed{seed}" for name, _, _, _ in runners]
            for (_, worker, overrides, lr), job in zip(runners, ids, strict=True):
                workers[worker].send(
                    cmd="init",
                    id=job,
                    model_dir=str(prior_dir),
                    word=word,
                    proposal=proposal,
                    seed=seed,
                    lr=lr,
                    steps=args.steps,
                    method=args.method,
                    overrides=overrides,
                )
                workers[worker].read("ready")
            times: dict[str, list[dict]] = {job: [] for job in ids}
            for step in range(args.steps):
                k = step % len(runners)
                for (_, worker, _, _), job in (
                    list(zip(runners, ids, strict=True))[k:] + list(zip(runners, ids, strict=True))[:k]
                ):
                    workers[worker].send(cmd="step", id=job)
                    times[job].append(workers[worker].read("step"))
            for (name, worker, overrides, lr), job in zip(runners, ids, strict=True):
                folder = work / "models" / job
                workers[worker].send(cmd="save", id=job, path=str(folder))
                workers[worker].read("saved")
                if worker != "ours" and args.check_trained:
                    gaps = check_log_probs(workers[worker], folder)
                    print("  log-prob check on disco's trained model: " + show_gaps(gaps))
                    if gaps["token"] > 1e-5:
                        sys.exit(
                            "disco and bayesalign disagree on a token's log-probability by more than 1e-5"
                        )
                quality = estimator.score(folder, w, seed)
                cpu = statistics.median(t["cpu"] for t in times[job])
                wall = statistics.median(t["wall"] for t in times[job])
                record = {
                    "workload": workload,
                    "word": word,
                    "rate": w["rate"],
                    "log_z": w["log_z"],
                    "library": name,
                    "method": args.method,
                    "overrides": overrides,
                    "seed": seed,
                    "steps": args.steps,
                    "lr": lr,
                    "cpu_per_step": cpu,
                    "wall_per_step": wall,
                    "cpu_total": sum(t["cpu"] for t in times[job]),
                    "wall_total": sum(t["wall"] for t in times[job]),
                    "samples_per_s": BATCH / wall,
                    **quality,
                }
                with out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(
                    f"  seed {seed} {name:>16}: CPU {cpu:.3f} s/step, wall {wall:.3f} s/step, KL(p||pi) "
                    f"{quality['kl_p_pi']:.3f} ± {quality['se']:.3f}, sat {quality['satisfaction']:.3f}, "
                    f"KL(pi||a) {quality['kl_pi_a']:.3f}",
                    flush=True,
                )
    for worker in workers.values():
        worker.close()
    print(
        f"\nbenchmark: {time.perf_counter() - started_wall:.0f} s wall, "
        f"driver {time.process_time() - started_cpu:.0f} CPU s; load average {os.getloadavg()[0]:.2f} "
        f"at end; records appended to {out}"
    )
    summarise([json.loads(line) for line in out.read_text().splitlines() if line.strip()])


def summarise(records: list[dict]) -> None:
    """Markdown table: workload × library, means over seeds (per-seed KL listed)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:  # records written before --method existed are GDC++
        library = r["library"] if r.get("method", "gdc++") == "gdc++" else f"{r['library']} ({r['method']})"
        groups.setdefault((r["workload"], library), []).append(r)
    print(
        "\n| workload | library | lr | CPU s/step | wall s/step | samples/s | KL(p‖π) per seed (± s.e.) | "
        "KL(p‖π) mean ± s.e. | E_π[b] | KL(π‖a) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (workload, library), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        n = len(rs)
        kl = statistics.fmean(r["kl_p_pi"] for r in rs)
        # s.e. of the mean over seeds: the spread between seeds (training noise) when n > 1
        se = statistics.stdev(r["kl_p_pi"] for r in rs) / math.sqrt(n) if n > 1 else rs[0]["se"]
        per_seed = " / ".join(f"{r['kl_p_pi']:.3f} ± {r['se']:.3f}" for r in rs)
        print(
            f"| {workload} | {library} | {rs[0]['lr']:g} | "
            f"{statistics.fmean(r['cpu_per_step'] for r in rs):.3f} | "
            f"{statistics.fmean(r['wall_per_step'] for r in rs):.3f} | "
            f"{statistics.fmean(r['samples_per_s'] for r in rs):.0f} | {per_seed} | {kl:.3f} ± {se:.3f} | "
            f"{statistics.fmean(r['satisfaction'] for r in rs):.3f} | "
            f"{statistics.fmean(r['kl_pi_a'] for r in rs):.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads", default="on-0.3,on-0.1,on-0.03,fixed-0.1", help=f"of {list(WORKLOADS)}"
    )
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--init-std",
        type=float,
        default=0.1,
        help="the prior's initialiser std (GPT-2's own: 0.02, near uniform)",
    )
    parser.add_argument("--pool", type=int, default=50_000, help="samples of a for the exact p-samples")
    parser.add_argument("--pi-samples", type=int, default=2048, help="samples of each final π")
    parser.add_argument(
        "--variant", action="append", default=[], type=variant, help="NAME=JSON of training overrides"
    )
    parser.add_argument(
        "--disco-lr",
        type=lambda s: [float(x) for x in s.split(",")],
        help="disco's lrs, one runner each (default: --lr)",
    )
    parser.add_argument("--no-disco", action="store_true", help="ours (and variants) only")
    parser.add_argument(
        "--method",
        choices=["gdc++", "dpg"],
        default="gdc++",
        help="both libraries' loss: GDC++ (disco's default) or DPG without a baseline",
    )
    parser.add_argument("--no-default", action="store_true", help="leave out ours with default settings")
    parser.add_argument("--check-trained", action="store_true", help="log-prob check on disco's final models")
    parser.add_argument("--out", default="bench_disco.jsonl", help="JSON lines, appended")
    parser.add_argument("--work-dir", help="models and worker logs (default: a new temporary folder)")
    parser.add_argument("--summarise", help="print the table of an --out file and exit")
    parser.add_argument("--worker", choices=["ours", "disco"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        ours_worker()
    elif args.worker == "disco":
        disco_worker()
    elif args.summarise:
        summarise(
            [json.loads(line) for line in Path(args.summarise).read_text().splitlines() if line.strip()]
        )
    else:
        drive(args)


if __name__ == "__main__":
    main()
