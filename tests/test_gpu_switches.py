"""The GPU switches, checked on CPU: gradient checkpointing leaves the gradient unchanged and stores
fewer activations; bf16 mixed precision and the vLLM backend refuse to run here, with errors that
say why and what to set instead."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from bayesalign.config import apply_overrides, parse_config
from bayesalign.objectives import policy_output
from bayesalign.session import train
from bayesalign.toy import toy_model
from bayesalign.training.distributed import Distributed, enable_gradient_checkpointing

BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1, "n_layer": 2}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    "training": {"method": "gdc++", "steps": 1, "batch_size": 16, "lr": 3e-2},
    "eval": {"every": 1, "samples": 8, "report": False},
}


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``fn`` runs."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def test_gradient_checkpointing_gives_the_same_gradient_with_fewer_stored_activations():
    model = toy_model(["a", "b", "c"], seed=3, n_layer=3, n_embd=32)
    samples = model.sample(16, generator=torch.Generator().manual_seed(0))
    plain = model.trainable_copy()
    checkpointed = model.trainable_copy()
    enable_gradient_checkpointing(checkpointed.module)
    grads, stored = [], []
    for m in (plain, checkpointed):
        log_pi, size = saved_bytes(lambda m=m: policy_output(m, samples).log_prob)
        log_pi.sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.module.parameters()]))
        stored.append(size)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
    assert stored[1] < 0.7 * stored[0], stored  # the layers' activations were not kept


def test_a_training_step_with_gradient_checkpointing_moves_the_weights_identically(make_trainer):
    plain, checkpointed = make_trainer(), make_trainer("training.gradient_checkpointing=true")
    for trainer in (plain, checkpointed):
        trainer.train_step()
    before = dict(make_trainer().policy.module.named_parameters())
    after = dict(checkpointed.policy.module.named_parameters())
    for name, weight in plain.policy.module.named_parameters():
        torch.testing.assert_close(after[name], weight, rtol=1e-5, atol=1e-6)
        assert not torch.equal(weight, before[name])  # the step did move it


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA allows bf16")
def test_bf16_mixed_precision_is_refused_on_cpu_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="bf16 needs a CUDA GPU.*training.mixed_precision: no"):
        Distributed(mixed_precision="bf16")
    cfg = parse_config(apply_overrides(copy.deepcopy(BASE), ["training.mixed_precision=bf16"]))
    with pytest.raises(ValueError, match="bf16 needs a CUDA GPU"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_vllm_backend_without_vllm_names_the_extra(tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    cfg = parse_config(apply_overrides(copy.deepcopy(BASE), ["sampling.backend=vllm"]))
    with pytest.raises(ImportError, match=r"pip install 'bayesalign\[vllm\]'"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_vllm_backend_without_a_gpu_says_so(make_trainer, tmp_path, monkeypatch):
    fake = tmp_path / "site"
    (fake / "vllm").mkdir(parents=True)
    (fake / "vllm" / "__init__.py").write_text("")  # an importable vllm, as if installed
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="vllm needs a CUDA GPU"):
        make_trainer("sampling.backend=vllm")
