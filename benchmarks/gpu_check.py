"""The checks that need a CUDA GPU, one subcommand each; ``benchmarks/gpu_check.sh`` runs them all.

    python benchmarks/gpu_check.py env
    python benchmarks/gpu_check.py step --model DIR [--random-weights] [--precision bf16]
    python benchmarks/gpu_check.py bf16
    python benchmarks/gpu_check.py toy-run --out DIR [--expect-fsdp]   (under accelerate launch)
    python benchmarks/gpu_check.py same-weights DIR_A DIR_B
    python benchmarks/gpu_check.py vllm --model DIR [--random-weights]

Each prints one JSON line (``RESULT {...}``) and exits non-zero when its assertion fails, so the
driver can collect results without stopping at the first failure. ``--random-weights`` builds the
model of DIR's config.json with random weights (timing depends on shapes, not values; such a model
never says EOS, so every sample has the full ``--tokens``): the device machine cannot carry the
98 MB SmolLM2 GGUF, but its config and tokenizer, a few MB, travel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bayesalign.config import parse_config
from bayesalign.config.build import build_models, build_target, build_trainer
from bayesalign.training.distributed import Distributed

PROMPT = "I just got back from the restaurant downtown, and"
# a tilt p ∝ a·exp(b/β) with b = "two vowels in a row": every sequence has support, so no batch
# of a random-weight model has Z = 0
TILT = {"reward": {"scorer": {"type": "regex", "pattern": "[aeiou]{2}", "ignore_case": True}, "beta": 1.0}}
TOY = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c", "d"], "seed": 1, "n_layer": 2}},
    "sampling": {"max_new_tokens": 6},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    "training": {"method": "gdc++", "steps": 6, "batch_size": 64, "minibatch_size": 32, "lr": 1e-2},
    "eval": {"every": 3, "samples": 64, "exact": True, "report": False},
    "checkpoint": {"every": 3},
}


def result(ok: bool, **fields: object) -> None:
    print("RESULT " + json.dumps({"ok": ok, **fields}), flush=True)
    if not ok:
        sys.exit(1)


def model_folder(name: str, random_weights: bool) -> str:
    """``name`` itself, or a temporary folder with random weights of ``name``'s config."""
    if not random_weights:
        return name
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(name))
    out = Path(tempfile.mkdtemp(prefix="gpu-check-model-"))
    model.save_pretrained(out)
    for f in Path(name).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation")):
            shutil.copy(f, out / f.name)
    return str(out)


def env(_: argparse.Namespace) -> None:
    import accelerate
    import transformers

    ok = torch.cuda.is_available()
    fields = {"torch": torch.__version__, "transformers": transformers.__version__}
    fields["accelerate"] = accelerate.__version__
    if ok:
        fields |= {"gpu": torch.cuda.get_device_name(), "bf16": torch.cuda.is_bf16_supported()}
    result(ok, **fields)


def step(args: argparse.Namespace) -> None:
    """s/step of on-policy GDC++ (full fine-tuning) on the GPU, after warm-up steps."""
    name = model_folder(args.model, args.random_weights)
    config = parse_config(
        {
            "model": {"name": name},
            "prompt": PROMPT,
            "sampling": {"max_new_tokens": args.tokens, "batch_size": args.batch},
            "target": TILT,
            "training": {
                "method": "gdc++",
                "batch_size": args.batch,
                "minibatch_size": args.minibatch,
                "lr": 1e-5,
                "mixed_precision": args.precision,
                "proposal": {"update": "on_policy"},
            },
        }
    )
    dist = Distributed(None, config.training.mixed_precision)
    policy, prior = build_models(config.model, config.prompt, config.training.seed)
    target = build_target(config.target, prior)
    trainer = build_trainer(config, policy, target, distributed=dist)
    before = [p.detach().clone() for p in policy.module.parameters()]
    times, records = [], []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            trainer.clock.take()  # the phases' seconds of the timed steps only
        torch.cuda.synchronize()
        start = time.perf_counter()
        records.append(trainer.train_step())
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    timed = times[args.warmup :]
    after = list(policy.module.parameters())
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(after, before, strict=True))
    finite = all(torch.isfinite(p).all() for p in policy.module.parameters())
    phases = trainer.clock.take()  # per step; approximate on a GPU (kernels run asynchronously)
    result(
        finite and moved > 0 and str(policy.device).startswith("cuda"),
        device=str(policy.device),
        precision=args.precision,
        parameters=sum(p.numel() for p in policy.module.parameters()),
        batch=args.batch,
        tokens=args.tokens,
        minibatch=args.minibatch,
        s_per_step_median=statistics.median(timed),
        s_per_step=timed,
        generated_tokens_per_s=args.batch * args.tokens / statistics.median(timed),
        max_weight_change=moved,
        peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20,
        loss=records[-1].get("loss"),
        phases_wall={k: v for k, v in phases.items() if k.endswith("_wall")},
    )


def bf16(_: argparse.Namespace) -> None:
    """log π under bf16 autocast against float32 on the same samples: close, and not equal (the
    autocast did run in bf16)."""
    from bayesalign.toy import toy_model

    model = toy_model(["a", "b", "c", "d"], seed=1, n_layer=2)
    model.module.to("cuda")
    samples = model.sample(256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model.log_prob(samples)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model.log_prob(samples)
    diff = (full - half).abs()
    rel = (diff / full.abs().clamp_min(1e-6)).max().item()
    result(diff.max().item() > 0 and rel < 0.05, max_abs=diff.max().item(), max_rel=rel)


def toy_run(args: argparse.Namespace) -> None:
    """The toy config trained through session.train on this process's GPU (under accelerate
    launch with an FSDP config: checks that the policy really is FSDP-wrapped)."""
    from bayesalign.session import train

    overrides = json.loads(args.set) if args.set else {}
    config = parse_config({**TOY, "training": {**TOY["training"], **overrides}})
    train(config, Path(args.out))
    if args.expect_fsdp:  # what accelerate set up for the run just made
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedType

        kind = AcceleratorState().distributed_type
        if kind != DistributedType.FSDP:
            result(False, error=f"accelerate set up {kind}, not FSDP")
    records = map(json.loads, (Path(args.out) / "metrics.jsonl").read_text().splitlines())
    exact = [r for r in records if r.get("exact_kl_p_pi") is not None]
    kl_prior, kl_final = exact[-1]["exact_kl_p_a"], exact[-1]["exact_kl_p_pi"]
    result(
        (Path(args.out) / "final" / "model.safetensors").exists() and kl_final < kl_prior,
        exact_kl_p_a=kl_prior,
        exact_kl_p_pi=kl_final,
        steps=exact[-1]["step"],
    )


def methods(args: argparse.Namespace) -> None:
    """Every training method for a few steps on the GPU through session.train (the CLI's path):
    objectives keep their batch statistics on the CPU and meet log π there, so a tensor left on
    the wrong device fails here, not on a user's first GPU run."""
    from bayesalign.session import train

    reward = {"reward": {"scorer": {"type": "word", "words": ["b"], "name": "has_b"}, "beta": 1.0}}
    runs = {
        "dpg": {"proposal": {"update": "fixed"}},
        "gdc++": {"proposal": {"update": "adaptive", "every": 1, "samples": 32}},
        "f-dpg": {"f_dpg": {"divergence": "js"}},
        "reinforce": {"proposal": {"update": "on_policy"}},
        "kl-reinforce": {"proposal": {"update": "on_policy"}},
        "ppo": {"proposal": {"update": "on_policy"}, "epochs": 2},
        "cdpg": {"proposal": {"update": "fixed"}},
        "twist": {"proposal": {"update": "fixed"}},
        "twist-buffer": {"proposal": {"update": "fixed"}, "sample_buffer": True, "updates_per_step": 1},
    }
    failed, kls = [], {}
    for method, extra in runs.items():
        name, method = method, method.removesuffix("-buffer")
        training = {**TOY["training"], "method": method, "steps": 2, **extra}
        raw = {**TOY, "target": reward, "training": training}
        raw["eval"] = {**TOY["eval"], "every": 2}
        if method == "twist":  # pointwise constraints only
            raw["target"] = TOY["target"]
        if method == "cdpg":
            raw["contexts"] = {"train": ["a", "b c", "c c a", "d"], "per_step": 4}
            raw["target"] = TOY["target"]
        try:
            train(parse_config(raw), Path(args.out) / name)
            kls[name] = exact_kl(Path(args.out) / name)
        except Exception as err:  # every method is tried; the failures are listed together
            failed.append(name)
            print(f"{name}: {type(err).__name__}: {err}", flush=True)
    result(not failed, failed=failed, exact_kl_p_pi=kls)


def same_weights(args: argparse.Namespace) -> None:
    """Two toy runs' final weights and exact KL agree. GPT-2's attention key biases are left out of
    the weights: softmax ignores them, their gradient is 0, and Adam turns its rounding noise into
    ±lr steps whose signs depend on summation order (tests/test_distributed.py); the exact KL,
    over every sequence of the space, is compared instead."""
    from safetensors.torch import load_file

    a, b = (load_file(str(Path(d) / "final" / "model.safetensors")) for d in (args.a, args.b))
    diffs = {}
    for name in a:
        x, y = a[name].float(), b[name].float()
        if name.endswith("attn.c_attn.bias"):
            third = len(x) // 3
            x, y = torch.cat([x[:third], x[2 * third :]]), torch.cat([y[:third], y[2 * third :]])
        diffs[name] = (x - y).abs().max().item()
    worst = max(diffs, key=diffs.get)
    kls = [exact_kl(Path(d)) for d in (args.a, args.b)]
    same_kl = abs(kls[0] - kls[1]) <= 1e-4 * abs(kls[0])
    result(
        set(a) == set(b) and diffs[worst] < args.atol and same_kl,
        max_abs=diffs[worst],
        worst=worst,
        exact_kl_p_pi=kls,
    )


def exact_kl(run: Path) -> float:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("exact_kl_p_pi") is not None][-1]["exact_kl_p_pi"]


def vllm(args: argparse.Namespace) -> None:
    """vLLM's log q against HF's log π on the same samples, before and after a weight sync."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        print("SKIP vllm is not installed here (pip install 'bayesalign[vllm]')")
        sys.exit(3)
    from bayesalign.models import LanguageModel
    from bayesalign.samples import SamplingParams
    from bayesalign.sampling_backends.vllm_engine import VLLMSampler

    policy = LanguageModel.from_pretrained(model_folder(args.model, args.random_weights), prompt=PROMPT)
    policy.module.to("cuda")
    engine = VLLMSampler(policy)
    params = SamplingParams(max_new_tokens=16)
    gaps = []
    for round_ in range(2):
        samples = engine.sample(64, params, generator=torch.Generator().manual_seed(round_))
        log_q = (samples.token_log_q * samples.mask).sum(-1)
        gaps.append((policy.log_prob_frozen(samples) - log_q).abs().max().item())
        with torch.no_grad():  # move π, then copy its weights into the engine: log q must follow
            for p in policy.module.parameters():
                p.add_(0.01 * torch.randn_like(p))
        engine.sync()
    result(max(gaps) < args.atol, max_abs_log_pi_minus_log_q=gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env").set_defaults(run=env)
    p = sub.add_parser("step")
    p.add_argument("--model", required=True)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--precision", choices=["no", "bf16"], default="no")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--minibatch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.set_defaults(run=step)
    sub.add_parser("bf16").set_defaults(run=bf16)
    p = sub.add_parser("toy-run")
    p.add_argument("--out", required=True)
    p.add_argument("--set", help="JSON of training overrides")
    p.add_argument("--expect-fsdp", action="store_true")
    p.set_defaults(run=toy_run)
    p = sub.add_parser("methods")
    p.add_argument("--out", required=True)
    p.set_defaults(run=methods)
    p = sub.add_parser("same-weights")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=float, default=1e-5)
    p.set_defaults(run=same_weights)
    p = sub.add_parser("vllm")
    p.add_argument("--model", required=True)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--atol", type=float, default=0.05, help="per sequence of 16 tokens")
    p.set_defaults(run=vllm)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
