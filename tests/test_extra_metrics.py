"""Extra metrics are objects an Evaluator runs on π's evaluation samples: one a user writes is
called with those samples, and the built-in misalignment agrees with the target's own view of
the same samples."""

from __future__ import annotations

import pytest

from bayesalign.evaluator import Evaluator
from bayesalign.extra_metrics import Misalignment
from bayesalign.samples import SamplingParams
from bayesalign.scorers import CallableScorer, WordScorer
from bayesalign.targets import Target
from bayesalign.toy import toy_model


@pytest.fixture(scope="module")
def target() -> Target:
    prior = toy_model(["a", "b", "c"], seed=1)
    return Target.pointwise(prior, [WordScorer(["b"], name="has_b")])


def test_a_user_metric_sees_pis_evaluation_samples(target):
    seen = []

    def longest(policy, draw, micro):
        seen.append(draw.samples.texts)
        return {"longest_pi": max(len(t.split()) for t in draw.samples.texts)}

    sampling = SamplingParams(max_new_tokens=4)
    metrics = Evaluator(target, samples=32, sampling=sampling, metrics=[longest]).evaluate(target.base)
    assert len(seen) == 1 and len(seen[0]) == 32
    assert metrics["longest_pi"] == max(len(t.split()) for t in seen[0]) <= 4


def test_misalignment_by_the_targets_own_scorer_is_its_unsatisfied_share(target):
    """Scored by "has no b" (1 = misaligned), π's misalignment is 1 − its satisfaction on the
    same samples: two computations of one number."""
    lacks_b = CallableScorer(lambda text: float("b" not in text.split()), boolean=True, name="lacks_b")
    sampling = SamplingParams(max_new_tokens=4)
    evaluator = Evaluator(target, samples=64, sampling=sampling, metrics=[Misalignment(lacks_b, k=4)])
    metrics = evaluator.evaluate(target.base)
    assert metrics["misalignment_pi"] == pytest.approx(1 - metrics["satisfaction_pi"])
    assert 0 < metrics["misalignment_pi"] < 1
