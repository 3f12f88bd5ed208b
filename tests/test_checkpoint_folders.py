"""Every checkpoint is also a Hugging Face folder: plain ``from_pretrained`` loads a fully
fine-tuned checkpoint, ``PeftModel.from_pretrained`` a LoRA one, and both equal the trained
policy; the resumable state beside them still resumes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from bayesalign.cli import main
from bayesalign.toy import toy_model

CONFIG = Path(__file__).parents[1] / "configs" / "toy_word.yaml"
FAST = ["--set", "eval.samples=64", "--set", "training.batch_size=32", "--set", "eval.report=false"]
IDS = torch.tensor([[0, 1, 2, 1, 0]])


def train(out: Path, steps: int, *extra: str) -> None:
    every = ["--set", "checkpoint.every=2", "--set", "eval.every=2"]
    argv = ["train", str(CONFIG), "--out", str(out), "--set", f"training.steps={steps}", *FAST, *every]
    assert main([*argv, *extra]) == 0


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def test_a_full_checkpoint_loads_with_from_pretrained_and_still_resumes(tmp_path):
    out = tmp_path / "run"
    train(out, 4)
    last = out / "checkpoints" / "step_000004"
    final = logits(AutoModelForCausalLM.from_pretrained(out / "final"))
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(last)), final)
    assert not torch.allclose(
        logits(AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step_000002")), final
    )
    tokens = AutoTokenizer.from_pretrained(last)("a b c")["input_ids"]
    assert tokens == AutoTokenizer.from_pretrained(out / "final")("a b c")["input_ids"] and len(tokens) >= 3
    train(out, 6, "--resume")
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4, 6]


def test_a_lora_checkpoint_is_an_adapter_that_peft_loads(tmp_path):
    out = tmp_path / "run"
    train(out, 2, "--set", "model.lora={r: 2, target_modules: [c_attn]}", "--set", "training.lr=0.1")
    folder = out / "checkpoints" / "step_000002"
    assert (folder / "adapter_config.json").exists() and not (folder / "model.safetensors").exists()
    prior = toy_model(["a", "b", "c"], seed=1).module
    before = logits(prior)
    adapted = PeftModel.from_pretrained(prior, folder)
    merged = AutoModelForCausalLM.from_pretrained(out / "final")  # final/ is merged by default
    torch.testing.assert_close(logits(adapted), logits(merged), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(adapted), before)


def test_final_in_bfloat16_is_half_the_disk_and_the_same_model(tmp_path):
    """checkpoint.final_dtype: final/ is written in bfloat16 (training and the resumable
    checkpoints stay float32), loads with from_pretrained, and predicts what the float32
    final/ of the same run predicts, within bfloat16's rounding."""
    full, half = tmp_path / "full", tmp_path / "half"
    train(full, 2)
    train(half, 2, "--set", "checkpoint.final_dtype=bfloat16")
    weights = load_file(half / "final" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert {
        t.dtype for t in load_file(half / "checkpoints" / "step_000002" / "policy.safetensors").values()
    } == {torch.float32}
    size = (half / "final" / "model.safetensors").stat().st_size
    assert size < 0.6 * (full / "final" / "model.safetensors").stat().st_size
    reference = logits(AutoModelForCausalLM.from_pretrained(full / "final"))
    loaded = logits(AutoModelForCausalLM.from_pretrained(half / "final", dtype=torch.float32))
    torch.testing.assert_close(loaded, reference, atol=0.1, rtol=0.02)
    assert not torch.allclose(reference, logits(toy_model(["a", "b", "c"], seed=1).module))
