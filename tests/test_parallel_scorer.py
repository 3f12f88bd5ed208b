"""Scoring in worker processes with a cache: the same scores as the scorer itself."""

from __future__ import annotations

import functools

import pytest
import torch

from bayesalign.scorers import WordScorer
from bayesalign.scorers.code import Pep8Scorer
from bayesalign.scorers.parallel import ParallelScorer

CODE = ["x=1\n", "def f(a):\n    return a\n", "import os,sys\n", "y = 2\n"] * 10


def test_workers_give_the_scorers_own_scores_in_order():
    scorer = Pep8Scorer()
    parallel = ParallelScorer(Pep8Scorer, workers=2, chunk=4)
    try:
        varied = [f"{text}z{i} = {i}\n" for i, text in enumerate(CODE)]  # 40 distinct texts
        torch.testing.assert_close(parallel(varied), scorer(varied))
        assert parallel.hits == 0
        torch.testing.assert_close(parallel(varied[::-1]), scorer(varied[::-1]))
        assert parallel.hits == 40  # the second call was served from the cache
    finally:
        parallel.close()


def test_the_cache_is_keyed_by_text_and_context_and_bounded():
    calls = []

    class Counting:
        name, boolean = "counting", False

        def __call__(self, texts, contexts=None):
            calls.append(len(texts))
            return torch.tensor(
                [
                    float(len(t)) + (len(c) if c else 0)
                    for t, c in zip(texts, contexts or [None] * len(texts), strict=True)
                ]
            )

    cached = ParallelScorer(Counting, workers=0, cache_size=2)
    assert cached(["ab", "ab", "c"]).tolist() == [2.0, 2.0, 1.0] and calls == [2]  # duplicates scored once
    assert cached(["ab"], ["xyz"]).tolist() == [5.0]  # another context: another key
    assert cached(["ab", "c"]).tolist() == [2.0, 1.0]  # "ab" was evicted (size 2), "c" kept
    assert calls == [2, 1, 1]
    assert (cached.name, cached.boolean) == ("counting", False)
    assert ParallelScorer(functools.partial(WordScorer, ("a",)), workers=0).boolean
    with pytest.raises(ValueError, match="chunk >= 1"):
        ParallelScorer(Counting, chunk=0)


def test_a_parallel_scorer_from_the_config_scores_like_its_scorer():
    from bayesalign.config import parse_config
    from bayesalign.config.build import build_target
    from bayesalign.toy import toy_model

    spec = {"type": "parallel", "workers": 1, "scorer": {"type": "pep8", "name": "pep8"}}
    raw = {"model": {"name": "toy"}, "target": {"reward": {"scorer": spec, "beta": 1.0}}}
    scorer = build_target(parse_config(raw).target, toy_model(["a"])).terms[0].scorer
    try:
        texts = [f"v{i}={i}\n" for i in range(100)]  # more than one chunk: goes to the worker
        torch.testing.assert_close(scorer(texts), Pep8Scorer()(texts))
    finally:
        scorer.close()
