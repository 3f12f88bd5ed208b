"""Seconds per step and samples/s of one DPG training step: bayesalign's Trainer against a naive one.

    .venv/bin/python benchmarks/bench_step.py [--threads 1] [--repeats 5] [--warmup 2] [--skip-5m]

Ours is the real library path, ``Trainer.train_step()`` with ``training.method: dpg``: sampling
with the KV cache takes log q from the sampling pass (with the proposal fixed at q = a that is
also log a), scoring runs the target's scorers once, and the policy's forward projects only the
generated positions onto the vocabulary. Phases are timed by wrapping the methods the trainer
calls (``sample``, ``Target.evidence``, ``log_prob_frozen`` of a, ``log_prob`` of π); "bwd+opt"
is the rest of the step: loss, backward, clipping, AdamW and Z bookkeeping.

The naive step is what one writes with plain transformers: ``generate(do_sample=True)``, then
separate full forward passes (no ``logits_to_keep``) for log q, log a and log π (with grad), then
the same DPG loss, clipping and AdamW step. Same models, batch, prompt, scorer and optimizer.

Targets (from the project issue): a 256-sample DPG step with 20-token samples on a ≈0.4M-parameter
GPT-2 on 1 thread in under 0.5 s, and ≥ 2× faster than naive. (The comparison with the disco
toolkit is side by side, in its own venv, in bench_disco.py.)
Other jobs may share the CPU: every phase is a median over ``--repeats`` runs after ``--warmup``,
and ours and naive alternate so that both see the same load.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from bayesalign.config import parse_config
from bayesalign.config.build import build_trainer
from bayesalign.models import LanguageModel, make_policy
from bayesalign.objectives import DPG
from bayesalign.scorers import WordScorer
from bayesalign.targets import Target
from bayesalign.toy import toy_tokenizer

MAX_NEW_TOKENS = 20
TARGET_SECONDS = 0.5  # the 0.4M / 256-sample / 1-thread step (disco side by side: bench_disco.py)
TARGET_SPEEDUP = 2.0
PHASES = ("sample", "score", "log q", "log a", "log pi", "bwd+opt")


@dataclass(frozen=True)
class ModelSpec:
    label: str
    vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_positions: int
    n_inner: int | None
    batch: int


SMALL = ModelSpec(
    "0.4M", vocab=1500, n_embd=128, n_layer=1, n_head=4, n_positions=64, n_inner=None, batch=256
)
# shared/reference/offline-resources.md, section 2 (the stdlib GPT-2), with a smaller batch
MEDIUM = ModelSpec("5M", vocab=8192, n_embd=256, n_layer=4, n_head=4, n_positions=128, n_inner=1024, batch=64)


def build_prior(spec: ModelSpec, seed: int = 0) -> LanguageModel:
    """A random GPT-2 over a word vocabulary (id 0 = EOS). GPT-2's initialiser (std 0.02) gives
    near-uniform next-token distributions, so EOS has probability ≈ 1/vocab per step and samples
    run to the full 20 tokens almost always; the benchmark reports the mean length it saw."""
    config = GPT2Config(
        vocab_size=spec.vocab,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        n_inner=spec.n_inner,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    tokenizer = toy_tokenizer([f"w{i}" for i in range(1, spec.vocab)])
    return LanguageModel(GPT2LMHeadModel(config), tokenizer)


def constraint_words(spec: ModelSpec, rate: float = 0.45) -> tuple[str, ...]:
    """Enough words that ≈``rate`` of near-uniform 20-token samples contain one of them."""
    k = math.ceil(spec.vocab * (1 - (1 - rate) ** (1 / MAX_NEW_TOKENS)))
    return tuple(f"w{i}" for i in range(1, k + 1))


class PhaseClock:
    """Accumulates wall time per phase; ``wrap`` times every call of ``obj.attr``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.notes: dict[str, float] = {}

    def wrap(self, obj: object, attr: str, phase: str, after: Callable | None = None) -> None:
        original = getattr(obj, attr)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = original(*args, **kwargs)
            self.seconds[phase] += time.perf_counter() - start
            if after is not None:
                after(result)
            return result

        setattr(obj, attr, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.notes.clear()


# -- ours: the library's Trainer -------------------------------------------------------------------
class OursStep:
    name = "ours"

    def __init__(self, spec: ModelSpec, mode: str, words: tuple[str, ...], threads: int) -> None:
        prior = build_prior(spec)
        policy = make_policy(prior)
        target = Target.pointwise(prior, [WordScorer(words)])
        config = parse_config(
            {
                "model": {"name": f"bench-gpt2-{spec.label}"},
                "sampling": {"max_new_tokens": MAX_NEW_TOKENS},
                "target": {"constraints": [{"type": "word", "words": list(words)}]},
                "training": {
                    "method": "dpg",
                    "batch_size": spec.batch,
                    "micro_batch_size": spec.batch,
                    "lr": 1e-4,
                    "max_grad_norm": 1.0,
                    "threads": threads,
                    "proposal": {"update": mode},
                },
            }
        )
        self.trainer = build_trainer(config, policy, target, DPG())
        self.clock = PhaseClock()
        clock = self.clock

        def after_sample(samples):
            clock.notes["length"] = samples.lengths.float().mean().item()

        def after_evidence(evidence):
            clock.notes["satisfied"] = evidence.satisfied.double().mean().item()

        tr = self.trainer
        clock.wrap(tr.proposal, "sample", "sample", after_sample)
        clock.wrap(tr.target, "evidence", "score", after_evidence)
        clock.wrap(tr.base, "token_log_probs_frozen", "log a")  # only called when q ≠ a
        clock.wrap(tr.policy, "forward_generated", "log pi")  # the differentiable forward

    def step(self) -> tuple[dict[str, float], dict[str, float]]:
        self.clock.reset()
        start = time.perf_counter()
        self.trainer.train_step()
        total = time.perf_counter() - start
        phases = {p: self.clock.seconds.get(p, 0.0) for p in PHASES if p != "bwd+opt"}
        phases["bwd+opt"] = total - sum(phases.values())
        phases["total"] = total
        return phases, dict(self.clock.notes)


# -- naive: HF generate, then one full forward per model -------------------------------------------
class NaiveStep:
    name = "naive"

    def __init__(self, spec: ModelSpec, mode: str, words: tuple[str, ...]) -> None:
        prior = build_prior(spec)  # same seed: same weights as ours
        self.tokenizer = prior.tokenizer
        self.eos = self.tokenizer.eos_token_id
        self.prior = copy.deepcopy(prior.module).eval().requires_grad_(False)
        self.policy = copy.deepcopy(prior.module).eval().requires_grad_(True)
        self.on_policy = mode == "on_policy"
        self.scorer = WordScorer(words)
        self.batch = spec.batch
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=1e-4, weight_decay=0.0)
        self.z_log_sum, self.z_count = float("-inf"), 0

    def sequence_log_prob(self, module: torch.nn.Module, seqs: torch.Tensor, mask: torch.Tensor):
        attention = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1).long()
        logits = module(input_ids=seqs, attention_mask=attention).logits  # every position
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        picked = log_probs.gather(-1, seqs[:, 1:, None]).squeeze(-1)
        return (picked * mask).sum(-1).double()

    def step(self) -> tuple[dict[str, float], dict[str, float]]:
        t: dict[str, float] = {}
        clock = time.perf_counter
        q_module = self.policy if self.on_policy else self.prior

        start = now = clock()
        prompt = torch.full((self.batch, 1), self.eos, dtype=torch.long)
        seqs = q_module.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            max_new_tokens=MAX_NEW_TOKENS,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            pad_token_id=self.eos,
            eos_token_id=self.eos,
        )
        gen = seqs[:, 1:]
        is_eos = gen == self.eos
        mask = (is_eos.long().cumsum(-1) - is_eos.long()) == 0  # up to and including the first EOS
        t["sample"], now = clock() - now, clock()

        texts = self.tokenizer.batch_decode(
            [row[m].tolist() for row, m in zip(gen, mask, strict=True)], skip_special_tokens=True
        )
        satisfied = self.scorer(texts) > 0
        t["score"], now = clock() - now, clock()

        with torch.no_grad():
            log_q = self.sequence_log_prob(q_module, seqs, mask)
        t["log q"], now = clock() - now, clock()
        with torch.no_grad():
            log_a = self.sequence_log_prob(self.prior, seqs, mask)
        t["log a"], now = clock() - now, clock()
        log_pi = self.sequence_log_prob(self.policy, seqs, mask)
        t["log pi"], now = clock() - now, clock()

        log_w = torch.where(satisfied, log_a, float("-inf")) - log_q
        self.z_log_sum = float(torch.logaddexp(torch.tensor(self.z_log_sum), torch.logsumexp(log_w, 0)))
        self.z_count += len(log_w)
        log_z = self.z_log_sum - math.log(self.z_count)
        weights = torch.exp(log_w - log_z).float()
        self.optimizer.zero_grad(set_to_none=True)
        loss = -(weights * log_pi.float()).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
        self.optimizer.step()
        t["bwd+opt"] = clock() - now
        t["total"] = clock() - start
        notes = {"length": mask.sum(-1).float().mean().item(), "satisfied": satisfied.double().mean().item()}
        return t, notes


# -- running and reporting -------------------------------------------------------------------------
@dataclass
class Result:
    spec: ModelSpec
    mode: str
    impl: str
    phases: dict[str, float]  # medians
    notes: dict[str, float]  # means over the timed repeats


def measure(spec: ModelSpec, mode: str, threads: int, warmup: int, repeats: int) -> list[Result]:
    words = constraint_words(spec)
    torch.manual_seed(1)
    steppers = [OursStep(spec, mode, words, threads), NaiveStep(spec, mode, words)]
    runs: dict[str, list[tuple[dict, dict]]] = {s.name: [] for s in steppers}
    for i in range(warmup + repeats):
        for s in steppers:  # alternate, so both see the same background load
            out = s.step()
            if i >= warmup:
                runs[s.name].append(out)
    results = []
    for s in steppers:
        timings = [r[0] for r in runs[s.name]]
        notes = [r[1] for r in runs[s.name]]
        phases = {k: statistics.median(t[k] for t in timings) for k in (*PHASES, "total")}
        mean_notes = {k: statistics.fmean(n[k] for n in notes) for k in notes[0]}
        results.append(Result(spec, mode, s.name, phases, mean_notes))
    return results


def print_table(results: list[Result]) -> None:
    head = (
        f"{'model':>5} {'batch':>5} {'proposal':>9} {'impl':>5} | "
        + " ".join(f"{p:>7}" for p in PHASES)
        + f" | {'step s':>7} | {'sample/s':>8} {'score/s':>8} {'step/s':>8} | {'len':>5} {'sat':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        p, b = r.phases, r.spec.batch
        print(
            f"{r.spec.label:>5} {b:>5} {r.mode:>9} {r.impl:>5} | "
            + " ".join(f"{p[k]:7.3f}" for k in PHASES)
            + f" | {p['total']:7.3f} | {b / p['sample']:8.0f} {b / max(p['score'], 1e-9):8.0f}"
            + f" {b / p['total']:8.0f} | {r.notes['length']:5.1f} {r.notes['satisfied']:5.2f}"
        )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--modes", default="fixed,on_policy", help="proposal.update values to run")
    parser.add_argument("--skip-5m", action="store_true", help="only the 0.4M model")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # generate() drops the all-ones attention mask internally and then warns that the prompt
    # (EOS, which is also the pad id) might be padding; it is not.
    hf_logging.set_verbosity_error()
    specs = [SMALL] if args.skip_5m else [SMALL, MEDIUM]
    modes = args.modes.split(",")
    print(
        f"torch {torch.__version__}, threads = {torch.get_num_threads()} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start)"
    )
    for spec in specs:
        n = sum(p.numel() for p in build_prior(spec).module.parameters())
        print(
            f"{spec.label}: GPT-2 vocab {spec.vocab}, n_embd {spec.n_embd}, n_layer {spec.n_layer}, "
            f"n_head {spec.n_head}, n_inner {spec.n_inner or 4 * spec.n_embd}, "
            f"n_positions {spec.n_positions}: {n:,} parameters "
            f"(tied embeddings); batch {spec.batch} x {MAX_NEW_TOKENS} new tokens; "
            f"constraint: any of {len(constraint_words(spec))} words"
        )
    print(f"median of {args.repeats} steps after {args.warmup} warm-up; seconds per phase (DPG step)\n")

    started = time.perf_counter()
    results = []
    for spec in specs:
        for mode in modes:
            results += measure(spec, mode, args.threads, args.warmup, args.repeats)
    print_table(results)
    print(
        "\nlog q: ours takes it from the sampling pass; log a: ours reuses log q when q = a; "
        "log pi: forward with grad; bwd+opt: loss, backward, clip, AdamW.\n"
        "len: mean generated tokens (EOS counted); sat: fraction satisfying the constraint.\n"
    )
    by_key = {(r.spec.label, r.mode, r.impl): r for r in results}
    for spec in specs:
        for mode in modes:
            ours, naive = by_key[(spec.label, mode, "ours")], by_key[(spec.label, mode, "naive")]
            speedup = naive.phases["total"] / ours.phases["total"]
            line = (
                f"{spec.label} {mode:>9}: ours {ours.phases['total']:.3f} s/step "
                f"({spec.batch / ours.phases['total']:.0f} samples/s), naive {naive.phases['total']:.3f} s, "
                f"speed-up {speedup:.2f}x -> {verdict(speedup >= TARGET_SPEEDUP)} (>= {TARGET_SPEEDUP:g}x)"
            )
            if spec is SMALL:
                ok = ours.phases["total"] < TARGET_SECONDS and args.threads == 1 and spec.batch == 256
                line += f"; {verdict(ok)} (< {TARGET_SECONDS} s, 256 samples, 1 thread)"
            print(line)
    print(
        f"\nbenchmark wall time {time.perf_counter() - started:.0f} s; load average "
        f"{os.getloadavg()[0]:.2f} at end (above {args.threads} means other jobs shared the CPU)"
    )


if __name__ == "__main__":
    main()
