"""training.average_weights (training/averaging.py): π's final weights are the exponential
average of the iterates after every step, evaluations measure that average (exactly, on the toy
space), training itself keeps the raw iterate, and a resumed run continues the average exactly."""

from __future__ import annotations

import pytest
import torch

from bayesalign.exact import ExactTarget, SequenceSpace, kl
from bayesalign.runs import RunFolder
from bayesalign.training.averaging import WeightAverage

BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"method": "gdc++", "steps": 6, "batch_size": 32, "lr": 3e-2, "average_weights": 0.8},
    "eval": {"every": 3, "samples": 32, "exact": True},
    "checkpoint": {"every": 3},
}


def weights(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.policy.module.parameters() if p.requires_grad]


def test_the_average_follows_its_recursion():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    average = WeightAverage([p], decay=0.5)
    for value in ([3.0, 0.0], [5.0, 2.0]):
        with torch.no_grad():
            p.copy_(torch.tensor(value))
        average.update()
    # θ̄ = 0.5·(0.5·θ0 + 0.5·θ1) + 0.5·θ2
    torch.testing.assert_close(average.mean[0], torch.tensor([3.5, 0.5]))
    with average.swapped_in():
        torch.testing.assert_close(p.detach(), torch.tensor([3.5, 0.5]))
    torch.testing.assert_close(p.detach(), torch.tensor([5.0, 2.0]))  # the iterate is back
    with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
        WeightAverage([p], decay=1.0)


def test_final_weights_are_the_average_and_records_measure_it(make_trainer):
    trainer = make_trainer()
    iterates, real_step = [weights(trainer)], trainer.train_step

    def step_and_keep():
        out = real_step()
        iterates.append(weights(trainer))
        return out

    trainer.train_step = step_and_keep
    records = trainer.fit()
    expected = iterates[0]
    for theta in iterates[1:]:
        expected = [0.8 * m + 0.2 * t for m, t in zip(expected, theta, strict=True)]
    for got, want in zip(weights(trainer), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(expected, iterates[-1], strict=True))
    # the last record's exact KL is the averaged π's, computed here independently
    space = SequenceSpace(trainer.target.base, 4)
    exact = ExactTarget.build(trainer.target, space)
    log_pi = space.log_prob(trainer.policy)
    assert records[-1]["exact_kl_p_pi"] == pytest.approx(kl(exact.log_p, log_pi), rel=1e-5)


def test_a_resumed_run_continues_the_average_exactly(make_trainer, tmp_path):
    whole = make_trainer()
    whole.fit()
    run = RunFolder(tmp_path).create()
    first = make_trainer("training.steps=3", run=run)
    first.fit()
    second = make_trainer(run=run)
    assert second.resume() and second.state.step == 3
    second.fit()
    for a, b in zip(weights(second), weights(whole), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    changed = make_trainer("training.average_weights=null", run=run)
    with pytest.raises(ValueError, match="average_weights disagree"):
        changed.resume()
