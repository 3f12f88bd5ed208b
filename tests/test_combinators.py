"""and / or / not of constraints and weighted sums, in Python and through the config."""

from __future__ import annotations

import pytest
import torch

from bayesalign.config import ConfigError, parse_config
from bayesalign.config.build import build_target
from bayesalign.scorers import CallableScorer, WordScorer
from bayesalign.scorers.combinators import AllOf, AnyOf, Not, WeightedSum
from bayesalign.toy import toy_model

TEXTS = ["a c", "a b", "c", "b"]
HAS_A, HAS_B = WordScorer(("a",), name="a"), WordScorer(("b",), name="b")
LENGTH = CallableScorer(lambda t: float(len(t.split())), name="length")


def test_boolean_combinators_follow_their_truth_tables():
    assert AllOf((HAS_A, Not(HAS_B)))(TEXTS).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert AnyOf((HAS_A, HAS_B))(TEXTS).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert Not(AnyOf((HAS_A, HAS_B)))(TEXTS).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_weighted_sum_adds_weighted_scores():
    torch.testing.assert_close(
        WeightedSum((HAS_A, LENGTH), (2.0, -0.5))(TEXTS),
        torch.tensor([2 - 1.0, 2 - 1.0, -0.5, -0.5], dtype=torch.float64),
    )


def test_combinators_refuse_what_they_cannot_combine():
    with pytest.raises(ValueError, match=r"all combines constraints; \['length'\] are real-valued"):
        AllOf((HAS_A, LENGTH))
    with pytest.raises(ValueError, match="at least one scorer"):
        AnyOf(())
    with pytest.raises(ValueError, match="one weight per scorer"):
        WeightedSum((HAS_A,), (1.0, 2.0))


def test_combinators_nest_in_the_config():
    raw = {
        "model": {"name": "toy"},
        "target": {
            "constraints": [
                {
                    "type": "all",
                    "name": "a_not_b",
                    "of": [
                        {"type": "word", "words": ["a"]},
                        {"type": "not", "scorer": {"type": "word", "words": ["b"]}},
                    ],
                }
            ]
        },
    }
    target = build_target(parse_config(raw).target, toy_model(["a", "b", "c"]))
    assert target.constraints[0].scorer(TEXTS).tolist() == [1.0, 0.0, 0.0, 0.0]
    raw["target"]["constraints"][0]["of"][1]["scorer"]["type"] = "wrod"
    with pytest.raises(ConfigError, match="unknown scorer 'wrod'; did you mean 'word'"):
        parse_config(raw)
