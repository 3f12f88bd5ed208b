"""Perplexity under a reference model, against a direct computation from the model's logits,
and as an evaluation metric of the training loop next to a misalignment scorer."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bayesalign.config import ConfigError, parse_config
from bayesalign.config.build import build_models, build_target, build_trainer
from bayesalign.perplexity import perplexity
from bayesalign.toy import toy_model

WORDS = ["a", "b", "c"]


def direct_perplexity(model, texts: list[str]) -> float:
    """Each text after the start token, next-token log-probabilities read off the logits."""
    tok = model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    nll, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([[start] + tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            log_p = model.module(input_ids=ids).logits.log_softmax(-1)
        nll -= log_p[0, :-1].gather(-1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    return math.exp(nll / count)


def test_perplexity_equals_the_direct_computation_and_skips_empty_texts():
    model = toy_model(WORDS, seed=3)
    texts = ["a b", "c", "b b c a"]
    assert perplexity(model, texts + [""], batch_size=2) == pytest.approx(direct_perplexity(model, texts))
    assert math.isnan(perplexity(model, [""]))


BASE = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"method": "dpg", "steps": 1, "batch_size": 16},
    "eval": {"every": 1, "samples": 32},
}


def test_training_eval_reports_perplexity_and_misalignment_of_pis_samples(tmp_path, monkeypatch):
    toy_model(WORDS, seed=1).save_pretrained(tmp_path / "fluency")
    raw = copy.deepcopy(BASE)
    raw["eval"] |= {
        "perplexity_model": str(tmp_path / "fluency"),
        "misalignment": {"scorer": {"type": "word", "words": ["b"]}, "k": 4, "threshold": 0.5},
    }
    cfg = parse_config(raw)
    policy, prior = build_models(cfg.model, cfg.prompt, cfg.training.seed)
    target = build_target(cfg.target, prior)
    trainer = build_trainer(cfg, policy, target)
    draws = []
    draw = trainer.draw
    monkeypatch.setattr(trainer, "draw", lambda *a, **k: draws.append(draw(*a, **k)) or draws[-1])
    metrics = trainer.evaluate()
    texts = draws[-1].samples.texts  # π is still the prior: its draw is q's, the only one
    assert len(draws) == 1
    assert metrics["perplexity_pi"] == pytest.approx(direct_perplexity(prior, [t for t in texts if t]))
    # the same word scorer as the target's constraint, on the same samples: the same mean
    assert metrics["misalignment_pi"] == pytest.approx(metrics["score_has_b_pi"])
    has_b = [float("b" in t.split()) for t in texts]
    expected_max = sum(max(has_b[i : i + 4]) for i in range(0, 32, 4)) / 8
    assert metrics["expected_max_misalignment_4_pi"] == pytest.approx(expected_max)


def test_misalignment_k_beyond_the_eval_samples_is_a_config_error():
    raw = copy.deepcopy(BASE)
    raw["eval"] |= {"misalignment": {"scorer": {"type": "word", "words": ["b"]}, "k": 64}}
    with pytest.raises(ConfigError, match="eval.misalignment.k 64 exceeds eval.samples 32"):
        parse_config(raw)
