"""Trajectory balance (method tb, objectives/trajectory_balance.py): the VarGrad loss, its
on-policy gradient (exactly ∇KL(π‖p) on an enumerated space), convergence to p from on-policy and
from prior samples, and the refusal of a constraint target without a floor on b."""

from __future__ import annotations

import pytest
import torch

from bayesalign.config import ConfigError
from bayesalign.exact import ExactTarget, SequenceSpace
from bayesalign.objectives import Batch, PolicyOutput, TrajectoryBalance

BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    "training": {
        "method": "tb",
        "tb": {"min_log_b": -10},
        "steps": 60,
        "batch_size": 64,
        "lr": 1e-2,
        "proposal": {"update": "on_policy"},
    },
    "eval": {"every": 60, "samples": 64, "exact": True},
}


def test_the_loss_is_zero_where_log_pi_minus_log_p_is_constant_and_ignores_log_q(make_trainer):
    trainer = make_trainer()
    draw = trainer.draw(trainer.proposal, 6, torch.Generator().manual_seed(0))
    log_target = torch.tensor([-1.0, -2.5, -0.3, -4.0, -2.0, -7.0], dtype=torch.float64)

    def batch(log_q: torch.Tensor) -> Batch:
        return Batch(draw.samples, log_q, log_target, draw.evidence, 0.0)

    tb = TrajectoryBalance()
    at_p = PolicyOutput.of_sequences((log_target - 0.7).float())  # π ∝ P on these samples
    prepared = tb.prepare(batch(draw.log_q), at_p)
    torch.testing.assert_close(tb.per_sample_loss(prepared, at_p), torch.zeros(6), atol=1e-6, rtol=0)
    off = PolicyOutput.of_sequences(torch.full((6,), -1.0))
    other_q = torch.tensor([-3.0, 0.0, -1.0, -9.0, -2.0, -1.0], dtype=torch.float64)
    losses = [tb.per_sample_loss(tb.prepare(batch(log_q), off), off) for log_q in (draw.log_q, other_q)]
    assert losses[0].sum() > 0.5  # away from p the loss is not zero...
    torch.testing.assert_close(losses[0], losses[1])  # ...and no importance weight enters it


def test_on_policy_the_expected_gradient_is_that_of_reverse_kl(make_trainer):
    """Σ_x π(x)·∇[(log π(x) − log P(x) + E_π[δ])²]/2 = ∇KL(π‖p), exactly, over every sequence."""
    trainer = make_trainer(
        "target.constraints=[]", "target.reward={scorer: {type: word, words: [b]}, beta: 0.5}"
    )
    policy, target = trainer.policy, trainer.target
    space = SequenceSpace(target.base, 4)
    samples = space.samples
    log_target = ExactTarget.build(target, space).log_target
    params = [p for p in policy.module.parameters() if p.requires_grad]

    def log_pi() -> torch.Tensor:
        return policy.log_prob(samples)

    lp = log_pi()  # on the policy's device; the batch's statistics live on the CPU
    weights = lp.detach().double().cpu().exp()
    mean = (weights * (log_target - lp.detach().double().cpu())).sum()
    batch = Batch(samples, lp.detach().double().cpu(), log_target, None, 0.0)  # type: ignore[arg-type]
    per_sample = TrajectoryBalance().per_sample_loss(
        batch.with_extras(tb_offset=log_target - mean), PolicyOutput.of_sequences(lp)
    )
    loss = (weights.to(per_sample) * per_sample).sum() / 2
    ours = torch.autograd.grad(loss, params)
    lp = log_pi()
    kl = (lp.exp() * (lp.double() - log_target.to(lp.device)).float()).sum()  # KL(π‖p) + log Z
    expected = torch.autograd.grad(kl, params)
    for g, e in zip(ours, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("proposal", ["on_policy", "fixed"])
def test_tb_brings_pi_close_to_p_on_policy_and_from_prior_samples(make_trainer, proposal):
    records = make_trainer(f"training.proposal.update={proposal}").fit()
    first, last = records[0], records[-1]
    assert first["exact_kl_p_pi"] > 0.8
    assert last["exact_kl_p_pi"] < 0.3 * first["exact_kl_p_pi"], (
        first["exact_kl_p_pi"],
        last["exact_kl_p_pi"],
    )
    assert "tb_log_z" in last and "tb_std" in last


def test_a_constraint_target_without_a_floor_on_b_is_refused_before_sampling(make_trainer):
    with pytest.raises(ValueError, match="tb: the target has pointwise constraints.*min_log_b"):
        make_trainer("training.tb={}")


def test_tb_options_are_checked_by_the_config(make_trainer):
    with pytest.raises(ConfigError, match="min_log_b"):
        make_trainer("training.tb={min_log_b: 2}")
    with pytest.raises(ConfigError, match="tb is set but method is 'gdc\\+\\+'"):
        make_trainer("training.method=gdc++")
