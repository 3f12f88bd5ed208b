"""A local Hugging Face sequence classifier as a scorer (a tiny one, built and saved here)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from bayesalign.config import ConfigError, parse_config
from bayesalign.config.build import build_target
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


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory):
    """A tiny multi-label classifier laid out like unitary/toxic-bert (Detoxify's model)."""
    folder = tmp_path_factory.mktemp("toxic")
    torch.manual_seed(1)
    labels = ["toxic", "insult", "threat"]
    config = GPT2Config(
        vocab_size=4,
        n_embd=8,
        n_layer=1,
        n_head=2,
        num_labels=3,
        pad_token_id=0,
        problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = toy_tokenizer(["a", "b", "c"])
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def logits_of(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in TEXTS])


def test_a_multi_label_model_scores_each_label_by_a_sigmoid(multi_label):
    folder, model, tokenizer = multi_label
    logits = logits_of(model, tokenizer)
    expected = torch.sigmoid(logits[:, 1]).double()
    torch.testing.assert_close(ClassifierScorer(str(folder), "insult")(TEXTS), expected, rtol=1e-5, atol=1e-6)
    softmax = ClassifierScorer(str(folder), "insult", activation="softmax")(TEXTS)
    torch.testing.assert_close(softmax, torch.softmax(logits, -1)[:, 1].double(), rtol=1e-5, atol=1e-6)


def test_toxicity_spec_reads_detoxifys_model_from_disk_or_says_how_to_get_it(multi_label, tmp_path):
    folder, model, tokenizer = multi_label
    spec = {"type": "toxicity", "path": str(folder)}
    raw = {"model": {"name": "toy"}, "target": {"constraints": [spec | {"threshold": 0.5}]}}
    scorer = parse_config(raw).target.constraints[0].build()
    expected = torch.sigmoid(logits_of(model, tokenizer)[:, 0]) >= 0.5  # label "toxic" by default
    assert scorer.name == "toxicity" and scorer(TEXTS).tolist() == expected.double().tolist()
    missing = {"model": {"name": "toy"}, "target": {"constraints": [spec | {"path": str(tmp_path / "none")}]}}
    with pytest.raises(ValueError, match=r"unitary/toxic-bert.*save_pretrained"):
        parse_config(missing).target.constraints[0].build()
