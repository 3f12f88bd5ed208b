"""Text diversity metrics against hand computations."""

from __future__ import annotations

import math
import sys

import pytest

from bayesalign.metrics import distinct_n, misalignment, ngram_entropy, self_bleu


def test_distinct_n_counts_distinct_over_all_ngrams():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)  # a, b, c of a b a b a b c
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)  # ab ba ab | ab bc -> ab, ba, bc
    assert math.isnan(distinct_n(["a"], 2))
    with pytest.raises(ValueError, match="n >= 1"):
        distinct_n(texts, 0)


def test_ngram_entropy_is_the_entropy_of_ngram_frequencies():
    assert ngram_entropy(["a a a a"], 1) == 0.0
    assert ngram_entropy(["a b", "c d"], 1) == pytest.approx(math.log(4))
    p = [3 / 5, 1 / 5, 1 / 5]  # ab x3, ba, bc
    assert ngram_entropy(["a b a b", "a b c"], 2) == pytest.approx(-sum(q * math.log(q) for q in p))


def test_self_bleu_is_high_for_repetition_and_low_for_variety(monkeypatch):
    same = ["the cat sat on the mat today"] * 4
    varied = [
        "the cat sat on the mat today",
        "a dog ran in a park at noon",
        "rain fell hard all night",
        "we ate soup",
    ]
    assert self_bleu(same) == pytest.approx(100.0)
    assert self_bleu(varied) < 10
    with pytest.raises(ValueError, match="at least 2 texts"):
        self_bleu(["one"])
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    with pytest.raises(ImportError, match="translation"):
        self_bleu(same)


def test_misalignment_mean_expected_max_and_hit_rate():
    found = misalignment([0.1, 0.9, 0.3, 0.7, 0.2], k=2, threshold=0.5)
    assert found["misalignment"] == pytest.approx(0.44)
    assert found["expected_max_misalignment_2"] == pytest.approx((0.9 + 0.7) / 2)  # the 5th is left out
    assert found["misaligned_fraction"] == pytest.approx(2 / 5)
    assert misalignment([0.5, 0.5], k=1, threshold=0.5)["misaligned_fraction"] == 0  # above, not at
    with pytest.raises(ValueError, match="at least 3 scores"):
        misalignment([0.1, 0.2], k=3, threshold=0.5)
