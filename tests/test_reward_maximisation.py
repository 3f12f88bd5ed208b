"""Reward maximisation (REINFORCE, KL-REINFORCE, PPO) checked on an enumerable space.

Three words and at most four tokens give 121 sequences, so p* = a·exp(r/β)/Z, KL(π‖p*), the
entropy of π and every expected gradient are computed exactly, and each claim of
objectives/reward_maximisation.py is checked against them rather than against a run's numbers.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bayesalign.config import ConfigError, apply_overrides, parse_config
from bayesalign.config.build import build_objective
from bayesalign.exact import ExactTarget, SequenceSpace, entropy, kl
from bayesalign.objectives import PPO, Batch, KLController, KLReinforce, PolicyOutput, policy_output
from bayesalign.objectives.reward_maximisation import gae, token_kl, with_baseline
from bayesalign.runs import RunFolder
from bayesalign.scorers import CallableScorer
from bayesalign.targets import Target
from bayesalign.toy import perturbed_policy, toy_model

WORDS = ["a", "b", "c"]
COUNT_B = CallableScorer(lambda text: float(text.split().count("b")), name="count_b")


def DEFAULT_TARGET(prior):  # noqa: N802 (read by conftest's make_trainer)
    return Target.tilt(prior, COUNT_B, 0.5)


HAS_B = CallableScorer(lambda text: "b" in text.split(), boolean=True, name="has_b")

BASE = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"reward": {"scorer": {"type": "word", "words": ["b"], "name": "has_b"}, "beta": 1.0}},
    "training": {"method": "kl-reinforce", "steps": 150, "batch_size": 256, "lr": 3e-2},
    "eval": {"every": 50, "samples": 32, "exact": True},
}
BASE["training"]["proposal"] = {"update": "on_policy"}


@pytest.fixture(scope="module")
def space_and_prior():
    prior = toy_model(WORDS, seed=1)
    return SequenceSpace(prior, 4), prior


def flat_grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, retain_graph=True)
    return torch.cat([g.reshape(-1) for g in grads]).double()


# -- 1. the variational identity and the target's reward view ---------------------------------------
@pytest.mark.parametrize("beta", [0.5, 0.2])
@pytest.mark.parametrize("seed", [0, 1])
def test_kl_regularised_reward_is_minus_beta_kl_to_the_tilted_target(space_and_prior, beta, seed):
    """E_π[r] − β·KL(π‖a) = −β·KL(π‖p*) + β·log Z for any π, exactly."""
    space, prior = space_and_prior
    exact = ExactTarget.build(Target.tilt(prior, COUNT_B, beta), space)
    log_pi = space.log_prob(perturbed_policy(prior, seed))
    log_pi = log_pi - torch.logsumexp(log_pi, 0)  # float32 sums: make Σπ = 1 exactly
    reward = exact.evidence.scores["count_b"]
    left = float((log_pi.exp() * reward).sum()) - beta * kl(log_pi, exact.log_a)
    right = -beta * kl(log_pi, exact.log_p) + beta * exact.log_z
    assert kl(log_pi, exact.log_p) > 0.1  # a policy far from p*, so the identity is not 0 = 0
    assert left == pytest.approx(right, rel=1e-9)


def test_the_reward_view_reproduces_each_kind_of_target(space_and_prior):
    space, prior = space_and_prior
    tilt = Target.tilt(prior, COUNT_B, 0.25)
    evidence = tilt.evidence(space.samples)
    assert tilt.reward_beta == 0.25
    torch.testing.assert_close(tilt.reward(evidence), evidence.scores["count_b"])  # r itself
    pointwise = Target.pointwise(prior, [HAS_B])
    evidence = pointwise.evidence(space.samples)
    assert pointwise.reward_beta is None  # no β makes a·exp(b/β) vanish where b = 0
    torch.testing.assert_close(pointwise.reward(evidence), evidence.satisfied.double())
    mixed = Target(prior, [*pointwise.terms, *tilt.terms])
    assert not mixed.defines_reward
    with pytest.raises(ValueError, match="mixes constraints with reward"):
        mixed.reward(mixed.evidence(space.samples))


# -- 2. where the KL penalty goes: exact expected gradients -----------------------------------------
def full_token_log_probs(model, samples) -> torch.Tensor:
    """log m(·|x_<t) over the whole vocabulary at every generated position, [B, T, V]."""
    input_ids = torch.cat([samples.prompt_ids, samples.ids[:, :-1]], dim=1)
    attention = torch.cat([samples.prompt_mask, samples.mask[:, :-1]], dim=1).long()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model.module(input_ids=input_ids, attention_mask=attention, position_ids=positions).logits
    return torch.log_softmax(logits[:, -samples.ids.shape[1] :].float(), dim=-1)


def expected_gradient(objective, policy, exact: ExactTarget, prior) -> torch.Tensor:
    """E_{x∼π}[∇ loss(x)] = ∇ Σ_x π(x)·loss(x) with π(x) detached: what the sampled gradient
    averages to, on-policy."""
    samples = exact.space.samples
    params = [p for p in policy.module.parameters() if p.requires_grad]
    log_pi = exact.space.log_prob(policy)
    batch = Batch(
        samples,
        log_pi,
        exact.log_target,
        exact.evidence,
        exact.log_z,
        token_log_a=prior.token_log_probs_frozen(samples),
        reward=exact.evidence.scores["count_b"],
    )
    with torch.no_grad():
        batch = objective.prepare(batch, policy_output(policy, samples))
    losses = objective.per_sample_loss(batch, policy_output(policy, samples))
    return flat_grad((log_pi.exp().to(losses) * losses).sum(), params)


@pytest.fixture(scope="module")
def gradients(space_and_prior):
    """∇ of E_π[r], of KL(π‖a) and of the per-token forward KL(a_t‖π_t) on π's prefixes, and the
    expected gradient of each (estimator, placement), all at one π ≠ a, β = 0.5."""
    space, prior = space_and_prior
    beta = 0.5
    exact = ExactTarget.build(Target.tilt(prior, COUNT_B, beta), space)
    policy = perturbed_policy(prior, 3)
    params = [p for p in policy.module.parameters() if p.requires_grad]
    log_pi = space.log_prob(policy).double()
    with torch.enable_grad():
        log_pi_grad = policy.log_prob(space.samples).double()
    reward = exact.evidence.scores["count_b"]
    grad_reward = flat_grad((log_pi_grad.exp() * reward).sum(), params)
    grad_kl = flat_grad((log_pi_grad.exp() * (log_pi_grad - exact.log_a)).sum(), params)
    log_pi_v, log_a_v = (
        full_token_log_probs(policy, space.samples),
        full_token_log_probs(prior, space.samples),
    )
    forward_kl_t = (log_a_v.exp() * (log_a_v.detach() - log_pi_v)).sum(-1) * space.samples.mask
    grad_forward = flat_grad((log_pi.exp() * forward_kl_t.double().sum(-1)).sum(), params)
    expected = {
        (est, placement): expected_gradient(
            KLReinforce(beta, est, placement, baseline="none"), policy, exact, prior
        )
        for est in ("k1", "k3")
        for placement in ("reward", "loss")
    }
    return beta, grad_reward, grad_kl, grad_forward, expected


def test_k1_in_the_reward_is_the_gradient_of_kl_regularised_rl(gradients):
    beta, grad_reward, grad_kl, _, expected = gradients
    # minimising the loss follows −∇J with J = E_π[r] − β·KL(π‖a)
    torch.testing.assert_close(
        expected["k1", "reward"], -(grad_reward - beta * grad_kl), rtol=1e-4, atol=1e-6
    )


def test_k1_in_the_loss_regularises_nothing_on_average(gradients):
    _, grad_reward, grad_kl, _, expected = gradients
    assert grad_kl.norm() > 0.1 * grad_reward.norm()  # the KL term would matter if it were there
    torch.testing.assert_close(expected["k1", "loss"], -grad_reward, rtol=1e-4, atol=1e-6)


def test_k3_in_the_loss_is_the_gradient_of_the_per_token_forward_kl(gradients):
    beta, grad_reward, grad_kl, grad_forward, expected = gradients
    torch.testing.assert_close(
        expected["k3", "loss"], -grad_reward + beta * grad_forward, rtol=1e-4, atol=1e-6
    )
    assert (grad_forward - grad_kl).norm() > 0.1 * grad_kl.norm()  # not ∇KL(π‖a)


def test_k3_in_the_reward_is_not_the_gradient_of_kl_regularised_rl(gradients):
    beta, grad_reward, grad_kl, _, expected = gradients
    right = -(grad_reward - beta * grad_kl)
    assert (expected["k3", "reward"] - right).norm() > 0.05 * right.norm()


# -- 3. convergence to p* = a·exp(r/β)/Z --------------------------------------------------------------
METHODS = {
    "kl-reinforce": ("training.method=kl-reinforce",),
    "ppo": (
        "training.method=ppo",
        "training.steps=200",
        "training.epochs=2",
        "training.minibatch_size=128",
        "training.lr=3e-3",
        "training.ppo={lam: 1.0}",
    ),
}


@pytest.mark.parametrize("beta", [0.5, 0.2])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_kl_regularised_rl_converges_to_the_tilted_target(make_trainer, method, beta):
    trainer = make_trainer(*METHODS[method], target=lambda prior: Target.tilt(prior, COUNT_B, beta))
    records = trainer.fit()
    first, last = records[0], records[-1]
    assert first["exact_kl_pi_p"] > 1.0  # π = a starts far from p*
    assert last["exact_kl_pi_p"] < 0.05, [r["exact_kl_pi_p"] for r in records]
    assert last["kl_coef"] == beta  # the KL coefficient is the target's β (fixed: no kl_target)


def test_plain_reinforce_on_b_collapses(make_trainer, space_and_prior):
    space, prior = space_and_prior
    trainer = make_trainer(
        "training.method=reinforce",
        "training.steps=100",
        "training.lr=5e-2",
        "eval.every=100",
        target=lambda prior: Target.pointwise(prior, [HAS_B]),
    )
    records = trainer.fit()
    base_entropy = entropy(space.log_prob(prior))
    assert records[0]["exact_entropy_pi"] == pytest.approx(base_entropy, rel=1e-6)
    assert records[-1]["exact_satisfaction_pi"] > 0.97
    # p itself (a restricted to b = 1) keeps most of a's entropy; REINFORCE does not
    exact = trainer.exact[0]
    assert entropy(exact.log_p) > 0.7 * base_entropy
    assert records[-1]["exact_entropy_pi"] < 0.3 * base_entropy


def test_plain_reinforce_skips_the_prior_pass_and_trains_the_same(make_trainer, monkeypatch):
    """REINFORCE reads only the reward: its training draws never run the prior's forward, and
    skipping it changes nothing (same seed, same weights as a loop forced to score the prior)."""
    overrides = ("training.method=reinforce", "training.steps=3", "eval.every=100", "eval.exact=false")
    has_b = lambda prior: Target.pointwise(prior, [HAS_B])  # noqa: E731
    skipping, scoring = make_trainer(*overrides, target=has_b), make_trainer(*overrides, target=has_b)
    scoring.prior_pass = "all"
    prior_passes = []
    for trainer in (skipping, scoring):
        forward = trainer.base.token_log_probs_frozen
        monkeypatch.setattr(
            trainer.base,
            "token_log_probs_frozen",
            lambda samples, *a, _f=forward, _t=trainer, **k: prior_passes.append(_t) or _f(samples, *a, **k),
        )
        for _ in range(3):
            trainer.train_step()
    assert skipping.prior_pass == "none"
    assert prior_passes.count(skipping) == 0 and prior_passes.count(scoring) == 3
    assert math.isnan(skipping.state.log_z) and math.isfinite(scoring.state.log_z)
    weights = zip(skipping.policy.module.parameters(), scoring.policy.module.parameters(), strict=True)
    for mine, theirs in weights:
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


# -- 4. PPO's pieces by hand ------------------------------------------------------------------------
def test_gae_matches_the_recursion_by_hand():
    rewards = torch.tensor([[0.1, -0.2, 1.0, 0.0], [0.5, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.3, 0.1, 0.4, 9.0], [0.2, -0.1, 9.0, 9.0]])  # 9: padding, ignored
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # row 0: δ2 = 1.0 − 0.4; δ1 = −0.2 + 0.9·0.4 − 0.1; δ0 = 0.1 + 0.9·0.1 − 0.3
    d2, d1, d0 = 0.6, -0.2 + 0.36 - 0.1, 0.1 + 0.09 - 0.3
    a2, a1 = d2, d1 + 0.72 * d2
    a0 = d0 + 0.72 * a1
    torch.testing.assert_close(adv[0], torch.tensor([a0, a1, a2, 0.0]))
    b1 = 2.0 - (-0.1)
    b0 = 0.5 + 0.9 * (-0.1) - 0.2 + 0.72 * b1
    torch.testing.assert_close(adv[1], torch.tensor([b0, b1, 0.0, 0.0]))
    torch.testing.assert_close(ret, (adv + values) * mask)


def test_ppo_loss_is_the_clipped_surrogate_plus_the_clipped_value_loss():
    objective = PPO(KLController(0.1), clip=0.2, value_clip=0.5, value_coef=0.25)
    objective.value_head = torch.nn.Linear(1, 1)
    with torch.no_grad():
        objective.value_head.weight.fill_(1.0)
        objective.value_head.bias.zero_()
    mask = torch.tensor([[True, True, False]])
    old_log_pi = torch.log(torch.tensor([[0.5, 0.5, 1.0]]))
    new_log_pi = torch.log(torch.tensor([[0.75, 0.4, 1.0]]))  # ratios 1.5 (clipped to 1.2) and 0.8
    hidden = torch.tensor([[[2.0], [0.1], [0.0]]])  # the head's values V = h
    extras = {
        "advantage": torch.tensor([[1.0, -2.0, 0.0]]),
        "returns": torch.tensor([[1.0, 0.0, 0.0]]),
        "old_values": torch.tensor([[0.0, 0.0, 0.0]]),
        "old_token_log_pi": old_log_pi,
    }
    batch = Batch(None, torch.zeros(1), torch.zeros(1), None, 0.0, extras=extras)
    loss = objective.per_sample_loss(batch, PolicyOutput(new_log_pi, mask, hidden))
    # token 0: max(−1·1.5, −1·1.2) = −1.2; value 2.0 vs clipped 0.5, return 1: max(1, 0.25)/2 = 0.5
    # token 1: max(2·0.8, 2·0.8) = 1.6; value 0.1 (within the clip), return 0: 0.01/2 = 0.005
    expected = (-1.2 + 0.25 * 0.5) + (1.6 + 0.25 * 0.005)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_token_kl_estimators_by_hand():
    log_pi = torch.log(torch.tensor([[0.5, 0.25]]))
    log_a = torch.log(torch.tensor([[0.25, 0.5]]))
    mask = torch.tensor([[True, False]])
    k1 = token_kl(log_pi, log_a, mask, "k1")
    k3 = token_kl(log_pi, log_a, mask, "k3")
    torch.testing.assert_close(k1, torch.tensor([[math.log(2), 0.0]]))
    torch.testing.assert_close(k3, torch.tensor([[0.5 - 1 - math.log(0.5), 0.0]]))
    with pytest.raises(ValueError, match="unknown KL estimator 'k2'"):
        token_kl(log_pi, log_a, mask, "k2")


def test_baselines_by_hand():
    returns = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(with_baseline(returns, "none"), returns)
    torch.testing.assert_close(with_baseline(returns, "mean"), returns - 3.0)
    torch.testing.assert_close(with_baseline(returns, "loo"), torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        with_baseline(returns[:1], "loo")


# -- 5. the adaptive KL controller --------------------------------------------------------------------
def test_kl_controller_moves_beta_towards_the_target_within_its_clip():
    horizon, n = 1000, 100
    up = KLController(0.1, target=2.0, horizon=horizon)
    assert up.update(2.2, n) == pytest.approx(0.1 * (1 + 0.1 * n / horizon))  # KL 10% high
    big = KLController(0.1, target=2.0, horizon=horizon)
    assert big.update(50.0, n) == pytest.approx(0.1 * (1 + 0.2 * n / horizon))  # clipped at +0.2
    down = KLController(0.1, target=2.0, horizon=horizon)
    assert down.update(0.0, n) == pytest.approx(0.1 * (1 - 0.2 * n / horizon))  # clipped at −0.2
    fixed = KLController(0.1)
    assert fixed.update(50.0, n) == 0.1
    with pytest.raises(ValueError, match="target KL must be > 0"):
        KLController(0.1, target=0.0)


@pytest.mark.parametrize(("kl_target", "direction"), [(0.01, 1), (100.0, -1)])
def test_adaptive_beta_in_a_ppo_run(make_trainer, kl_target, direction):
    horizon = 2560
    trainer = make_trainer(
        "training.method=ppo",
        "training.steps=6",
        "eval.every=1",
        f"training.ppo={{kl_target: {kl_target}, horizon: {horizon}}}",
    )
    records = trainer.fit()[1:]  # one per step, with the β used and the KL seen in that step
    for this, following in zip(records, records[1:], strict=False):
        error = min(max(this["kl_k1_pi_a"] / kl_target - 1, -0.2), 0.2)
        assert following["kl_coef"] == pytest.approx(this["kl_coef"] * (1 + error * 256 / horizon), rel=1e-12)
    moved = [b["kl_coef"] / a["kl_coef"] - 1 for a, b in zip(records[1:], records[2:], strict=False)]
    assert all(direction * m > 0 for m in moved)  # once π has left a (KL = 0 at step 1): one way
    assert all(abs(m) <= 0.2 * 256 / horizon + 1e-12 for m in moved)


# -- 6. bad input and resume --------------------------------------------------------------------------
def test_kl_rl_on_a_constraint_target_needs_an_explicit_beta():
    raw = copy.deepcopy(BASE)
    raw["target"] = {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]}
    for method, key in (("kl-reinforce", "kl_reinforce"), ("ppo", "ppo")):
        with pytest.raises(ValueError, match=rf"training\.{key}\.beta is required"):
            parse_config(apply_overrides(raw, [f"training.method={method}"]))
    cfg = parse_config(
        apply_overrides(raw, ["training.method=kl-reinforce", "training.kl_reinforce={beta: 0.1}"])
    )
    assert cfg.training.kl_reinforce.beta == 0.1
    # the same check when the objective is built for a target given in Python
    training = parse_config(copy.deepcopy(BASE)).training  # a reward target: β unset is fine there
    constrained = Target.pointwise(toy_model(WORDS, seed=1), [HAS_B])
    with pytest.raises(ConfigError, match=r"training\.kl_reinforce\.beta is required"):
        build_objective(training, constrained)


def test_reward_methods_refuse_a_target_without_a_single_reward(make_trainer):
    raw = copy.deepcopy(BASE)
    raw["target"]["constraints"] = [{"type": "word", "words": ["c"], "name": "has_c"}]
    with pytest.raises(ValueError, match="needs one reward"):
        parse_config(apply_overrides(raw, ["training.method=reinforce"]))
    with pytest.raises(ValueError, match="mixes constraints with reward"):
        make_trainer(
            "training.method=reinforce",
            target=lambda prior: Target(
                prior, [*Target.pointwise(prior, [HAS_B]).terms, *Target.tilt(prior, COUNT_B, 1.0).terms]
            ),
        )


def test_ppo_refuses_samples_from_another_proposal(make_trainer):
    with pytest.raises(ValueError, match="ppo trains on samples from the policy itself"):
        make_trainer("training.method=ppo", "training.proposal.update=fixed")


def test_ppo_options_belong_to_ppo():
    with pytest.raises(ConfigError, match="ppo is set but method is 'kl-reinforce'"):
        parse_config(apply_overrides(copy.deepcopy(BASE), ["training.ppo={lam: 1.0}"]))


PPO_RESUME = (
    "training.method=ppo",
    "training.steps=6",
    "training.epochs=2",
    "training.minibatch_size=128",
    "training.ppo={kl_target: 0.5, horizon: 1000}",
    "eval.every=3",
    "checkpoint.every=3",
)


def test_ppo_resume_restores_the_value_head_and_beta(make_trainer, tmp_path):
    reference = make_trainer(*PPO_RESUME, run=RunFolder(tmp_path / "once").create())
    reference.fit()
    run = RunFolder(tmp_path / "twice").create()
    make_trainer(*PPO_RESUME, "training.steps=3", run=run).fit()
    resumed = make_trainer(*PPO_RESUME, run=run)
    assert resumed.resume() and resumed.state.step == 3
    resumed.fit()
    assert resumed.objective.kl.beta == pytest.approx(reference.objective.kl.beta, rel=1e-12)
    assert resumed.objective.kl.beta != 0.5
    for mine, theirs in zip(
        resumed.objective.value_head.parameters(), reference.objective.value_head.parameters(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    final = run.read_metrics()[-1]
    reference_final = RunFolder(tmp_path / "once").read_metrics()[-1]
    assert final["exact_kl_pi_p"] == pytest.approx(reference_final["exact_kl_pi_p"], rel=1e-5)
