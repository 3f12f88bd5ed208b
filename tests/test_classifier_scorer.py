"""A local Hugging Face sequence classifier as a scorer (a tiny one, built and saved here)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from bayesalign.config import ConfigError, build_target, parse_config
from bayesalign.scorers.classifier import ClassifierScorer
from bayesalign.toy import toy_model, toy_tokenizer

TEXTS = ["a b", "c c c", "b"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=4,
        n_embd=8,
        n_layer=1,
        n_head=2,
        num_labels=2,
        pad_token_id=0,
        id2label={0: "neutral", 1: "positive"},
        label2id={"neutral": 0, "positive": 1},
    )
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = toy_tokenizer(["a", "b", "c"])
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_scores_are_the_label_probability(classifier):
    folder, model, tokenizer = classifier
    scorer = ClassifierScorer(str(folder), "positive", batch_size=2)
    with torch.no_grad():
        expected = [
            torch.softmax(model(**tokenizer(t, return_tensors="pt")).logits, -1)[0, 1].item() for t in TEXTS
        ]
    torch.testing.assert_close(
        scorer(TEXTS), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6
    )
    boolean = ClassifierScorer(str(folder), 1, threshold=0.5)
    assert boolean.boolean and boolean(TEXTS).tolist() == [float(p >= 0.5) for p in expected]


def test_bad_classifier_specs_are_named(classifier, tmp_path):
    folder, _, _ = classifier
    with pytest.raises(ValueError, match=r"label 'happy' is not one of \['neutral', 'positive'\]"):
        ClassifierScorer(str(folder), "happy")
    with pytest.raises(ValueError, match="does not exist"):
        ClassifierScorer(str(tmp_path / "missing"), 0)
    raw = {
        "model": {"name": "toy"},
        "target": {
            "constraints": [
                {
                    "type": "classifier",
                    "path": str(folder),
                    "label": "positive",
                    "threshold": 0.5,
                    "name": "pos",
                }
            ]
        },
    }
    target = build_target(parse_config(raw).target, toy_model(["a", "b", "c"]))
    assert target.describe() == "a(x) · b[pos]"
    raw["target"]["constraints"][0]["threshold"] = 2.0
    with pytest.raises(ConfigError, match="threshold"):
        parse_config(raw)
