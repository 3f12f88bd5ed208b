"""f-DPG checked exactly on enumerable toy spaces.

Three words and at most three tokens give 40 sequences, so expected gradients are sums over the
whole space (no sampling error in the check), and every divergence D_f(π‖p) is computed exactly
from textbook formulas that do not go through the objective under test.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bayesalign.config import ConfigError, apply_overrides, parse_config
from bayesalign.config.build import build_objective
from bayesalign.config.sections import TrainingSection
from bayesalign.exact import ExactTarget, SequenceSpace, kl, tv
from bayesalign.objectives import DPG, FDPG, Batch, GDCPlusPlus, InfiniteDivergenceError, PolicyOutput
from bayesalign.objectives.f_divergence import PSEUDO_REWARDS, MovingBaseline
from bayesalign.runs import RunFolder
from bayesalign.runs.metric_names import is_timing
from bayesalign.scorers import CallableScorer
from bayesalign.targets import Target
from bayesalign.toy import perturbed_policy, toy_model
from bayesalign.training import Trainer

WORDS = ["a", "b", "c"]
COUNT_A = CallableScorer(lambda text: float(text.split().count("a")), name="count_a")

BASE = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 1}},
    "sampling": {"max_new_tokens": 3},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"method": "f-dpg", "steps": 60, "batch_size": 64, "lr": 3e-2},
    "eval": {"every": 1000, "samples": 16, "exact": True},
}


def tilt(beta: float):
    return lambda prior: Target.tilt(prior, COUNT_A, beta)


# -- exact divergences, from their textbook definitions ---------------------------------------------
def js(log_p: torch.Tensor, log_m: torch.Tensor) -> float:
    log_mix = torch.logaddexp(log_p, log_m) - math.log(2)
    return 0.5 * kl(log_p, log_mix) + 0.5 * kl(log_m, log_mix)


DIVERGENCE = {  # D(π‖p) given (log p, log π)
    "forward_kl": lambda log_p, log_pi: kl(log_p, log_pi),  # KL(p‖π)
    "reverse_kl": lambda log_p, log_pi: kl(log_pi, log_p),  # KL(π‖p)
    "js": js,
    "tv": tv,
}
F = {  # the generators f(t), t = π/p, as in the module docstring
    "forward_kl": lambda t: -torch.log(t),
    "reverse_kl": lambda t: t * torch.log(t),
    "js": lambda t: t * torch.log(2 * t / (1 + t)) + torch.log(2 / (1 + t)),
    "tv": lambda t: 0.5 * (t - 1).abs(),
}
F_PRIME_AT_INFINITY = {"forward_kl": 0.0, "js": math.log(2), "tv": 0.5}  # lim f(t)/t


def capped_reverse_kl(log_p: torch.Tensor, log_pi: torch.Tensor, c: float) -> float:
    """D_{f_C}(π‖p) with f_C(t) = t·log t (t ≤ e^C), (C+1)·t − e^C beyond, and f_C′(∞) = C + 1."""
    support = log_p > float("-inf")
    log_t = (log_pi - log_p)[support]
    t = log_t.exp()
    f = torch.where(log_t <= c, t * log_t, (c + 1) * t - math.exp(c))
    return float((log_p[support].exp() * f).sum() + (c + 1) * log_pi[~support].exp().sum())


# -- exact expected gradients -----------------------------------------------------------------------
def flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()


def expected_gradient(objective, policy, exact: ExactTarget, log_q: torch.Tensor) -> torch.Tensor:
    """E_{x∼q}[∇ loss(x)] = ∇ Σ_x q(x)·loss(x) over the whole space (the loss's weights are detached)."""
    params = [p for p in policy.module.parameters() if p.requires_grad]
    log_pi = policy.log_prob(exact.space.samples)
    batch = Batch(exact.space.samples, log_q, exact.log_target, exact.evidence, exact.log_z)
    losses = objective.per_sample_loss(batch, PolicyOutput.of_sequences(log_pi))
    return flat_grad((log_q.exp().to(losses) * losses).sum(), params)


def kl_regularised_rl_gradient(policy, exact: ExactTarget, reward: torch.Tensor, beta: float):
    """∇θ J and J, for J(π) = E_π[r] − β·KL(π‖a) = Σ_x π(x)·(r(x) − β·(log π(x) − log a(x)))."""
    params = [p for p in policy.module.parameters() if p.requires_grad]
    log_pi = policy.log_prob(exact.space.samples).double()
    objective = (log_pi.exp() * (reward - beta * (log_pi - exact.log_a))).sum()
    return flat_grad(objective, params), objective.item()


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def set_baseline(objective: FDPG, value: float) -> None:
    objective.baseline.observe(torch.zeros(1), torch.tensor([value]))
    objective.after_update()
    assert objective.baseline.value == pytest.approx(value)


@pytest.fixture(scope="module")
def toy_space():
    prior = toy_model(WORDS, seed=1)
    return prior, SequenceSpace(prior, 3)


# -- 1. the pseudo-rewards --------------------------------------------------------------------------
@pytest.mark.parametrize("divergence", list(PSEUDO_REWARDS))
def test_pseudo_reward_is_minus_f_prime_with_the_right_limit_where_p_is_zero(divergence):
    t = torch.tensor([0.05, 0.5, 0.9, 1.3, 4.0, 50.0], dtype=torch.float64, requires_grad=True)
    (f_prime,) = torch.autograd.grad(F[divergence](t).sum(), t)
    reward = PSEUDO_REWARDS[divergence](t.detach().log())
    torch.testing.assert_close(reward, -f_prime, rtol=1e-12, atol=1e-12)
    at_infinity = PSEUDO_REWARDS[divergence](torch.tensor([float("inf")], dtype=torch.float64))
    if divergence == "reverse_kl":
        assert at_infinity.item() == float("-inf")  # why FDPG refuses or clips it
    else:  # the gradient w.r.t. mass where p = 0 is f′(∞): finite, and exactly this
        assert at_infinity.item() == -F_PRIME_AT_INFINITY[divergence]


def test_js_generator_is_twice_jensen_shannon(toy_space):
    prior, space = toy_space
    log_p = space.log_prob(prior)
    log_pi = space.log_prob(perturbed_policy(prior, 0))
    value = float((log_p.exp() * F["js"]((log_pi - log_p).exp())).sum())
    assert value == pytest.approx(2 * js(log_p, log_pi), rel=1e-9)


# -- 2. reverse KL = KL-regularised RL: the same gradient direction, hence the same fixed point ------
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_reverse_kl_fdpg_is_kl_regularised_rl_exactly(toy_space, beta):
    prior, space = toy_space
    exact = ExactTarget.build(Target.tilt(prior, COUNT_A, beta), space)
    reward = exact.evidence.scores["count_a"]
    for seed in range(3):
        policy = perturbed_policy(prior, seed)
        log_pi = space.log_prob(policy)
        kl_pi_p = kl(log_pi, exact.log_p)
        assert kl_pi_p > 1.0  # far from p*
        grad_f = expected_gradient(FDPG("reverse_kl"), policy, exact, log_q=log_pi)  # on-policy
        grad_j, j = kl_regularised_rl_gradient(policy, exact, reward, beta)
        # J = −β·KL(π‖p*) + β·log Z, so ∇ KL(π‖p*) = −∇J/β
        assert j == pytest.approx(-beta * kl_pi_p + beta * exact.log_z, rel=1e-6)
        assert cosine(grad_f, -grad_j) > 1 - 1e-6
        assert float(grad_f @ grad_j / (grad_j @ grad_j)) == pytest.approx(-1 / beta, rel=1e-4)
        # off-policy (q = a) the importance ratios π/q give the same expected gradient,
        # and the baseline's value does not change it
        shifted = FDPG("reverse_kl")
        set_baseline(shifted, -3.7)
        grad_off = expected_gradient(shifted, policy, exact, log_q=exact.log_a)
        assert float((grad_off - grad_f).norm()) < 1e-5 * float(grad_f.norm())


def test_on_policy_reverse_kl_fdpg_drives_exact_kl_to_the_tilt_target_down(make_trainer):
    trainer = make_trainer(
        "training.f_dpg.divergence=reverse_kl", "training.proposal.update=on_policy", target=tilt(0.5)
    )
    reward = trainer.exact[0].evidence.scores["count_a"]

    def measure() -> tuple[float, float]:
        log_pi = trainer.exact[0].space.log_prob(trainer.policy)
        j = float((log_pi.exp() * (reward - 0.5 * (log_pi - trainer.exact[0].log_a))).sum())
        return kl(log_pi, trainer.exact[0].log_p), j

    kl_before, j_before = measure()
    trainer.fit()
    kl_after, j_after = measure()
    assert kl_before == pytest.approx(1.9045, abs=1e-3)  # KL(a‖p*) for this toy model and β
    assert kl_after < 0.05 * kl_before, (kl_before, kl_after)  # measured: 1.905 -> 0.013
    assert j_after > j_before  # the KL-regularised RL objective went up by β·(KL drop)
    assert j_after - j_before == pytest.approx(0.5 * (kl_before - kl_after), rel=1e-6)


# -- 3. forward KL = DPG ----------------------------------------------------------------------------
def test_forward_kl_fdpg_has_dpg_expected_gradient(toy_space):
    prior, space = toy_space
    exact = ExactTarget.build(Target.tilt(prior, COUNT_A, 0.5), space)
    policy = perturbed_policy(prior, 7)
    dpg = expected_gradient(DPG(), policy, exact, log_q=exact.log_a)
    gdc = expected_gradient(GDCPlusPlus(), policy, exact, log_q=exact.log_a)
    assert float(dpg.norm()) > 1.0
    for value in (0.0, 1.0, -2.5):
        objective = FDPG("forward_kl")
        if value:
            set_baseline(objective, value)
        for log_q in (exact.log_a, space.log_prob(policy)):  # off- and on-policy
            grad = expected_gradient(objective, policy, exact, log_q=log_q)
            assert float((grad - dpg).norm()) < 1e-5 * float(dpg.norm()), value
    assert float((gdc - dpg).norm()) < 1e-5 * float(dpg.norm())


# -- 4. each divergence decreases its own exact value ------------------------------------------------
@pytest.mark.parametrize("proposal", ["on_policy", "adaptive"])
@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "js", "tv"])
def test_training_decreases_the_exact_divergence_it_minimises(make_trainer, divergence, proposal):
    target = tilt(0.5) if divergence == "reverse_kl" else None  # the others on the pointwise target
    trainer = make_trainer(
        f"training.f_dpg.divergence={divergence}", f"training.proposal.update={proposal}", target=target
    )
    log_p = trainer.exact[0].log_p
    before = DIVERGENCE[divergence](log_p, trainer.exact[0].space.log_prob(trainer.policy))
    records = trainer.fit()
    after = DIVERGENCE[divergence](log_p, trainer.exact[0].space.log_prob(trainer.policy))
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    # measured (60 steps of 64 samples; on-policy / adaptive): forward_kl 0.940 -> 0.187 / 0.136,
    # reverse_kl 1.905 -> 0.013 / 0.016, js 0.280 -> 0.034 / 0.043, tv 0.609 -> 0.170 / 0.150
    assert after < 0.4 * before, (before, after)


# -- 5. the baseline: per instance, importance-weighted, advanced once per update --------------------
def test_each_objective_owns_its_baseline():
    a, b = FDPG(), FDPG()
    assert a.baseline is not b.baseline
    set_baseline(a, 2.0)
    assert len(b.baseline) == 0 and b.baseline.value == 0.0
    training = TrainingSection(method="f-dpg")
    assert training.f_dpg is not None
    first, second = build_objective(training, None), build_objective(training, None)
    assert first is not second and first.baseline is not second.baseline
    set_baseline(first, 1.0)
    assert len(second.baseline) == 0
    assert len(FDPG().baseline) == 0  # no state leaks into later default instances


def test_baseline_is_the_importance_weighted_mean_of_the_last_window_samples():
    baseline = MovingBaseline(window=3)
    baseline.observe(torch.log(torch.tensor([1.0, 1.0])), torch.tensor([10.0, 20.0]))
    assert baseline.value == 0.0 and len(baseline) == 0  # pending until the update ends
    baseline.commit()
    assert baseline.value == pytest.approx(15.0)
    baseline.observe(torch.log(torch.tensor([2.0, 6.0])), torch.tensor([1.0, 3.0]))
    baseline.commit()  # the window keeps the last 3 samples: weights 1, 2, 6 and rewards 20, 1, 3
    assert len(baseline) == 3
    assert baseline.value == pytest.approx((20 * 1 + 1 * 2 + 3 * 6) / 9)
    huge = MovingBaseline(window=4)  # weights from log w, no overflow
    huge.observe(torch.tensor([800.0, 800.0 + math.log(3)], dtype=torch.float64), torch.tensor([0.0, 4.0]))
    huge.commit()
    assert huge.value == pytest.approx(3.0)


def test_the_loss_subtracts_the_baseline_of_earlier_updates_only(toy_space):
    prior, space = toy_space
    exact = ExactTarget.build(Target.tilt(prior, COUNT_A, 0.5), space)
    objective = FDPG("reverse_kl")
    set_baseline(objective, 0.25)
    batch = Batch(space.samples, exact.log_a, exact.log_target, exact.evidence, exact.log_z)
    log_pi = space.log_prob(prior).float()  # on-policy at π = a: π/q = 1
    reward = exact.log_p - exact.log_a - 1  # log p − log π − 1
    loss = objective.per_sample_loss(batch, PolicyOutput.of_sequences(log_pi))
    torch.testing.assert_close(loss.double(), -(reward - 0.25) * log_pi.double(), rtol=1e-5, atol=1e-5)
    assert objective.baseline.value == pytest.approx(0.25)  # unchanged until the update ends
    objective.after_update()
    window = objective.baseline
    assert len(window) == 1 + len(space)
    assert window.value == pytest.approx(float((0.25 + reward.sum()) / (1 + len(space))))


def test_micro_batches_do_not_change_the_result(make_trainer):
    common = ("training.f_dpg.divergence=js", "training.minibatch_size=32", "training.steps=20")
    whole = make_trainer(*common, "eval.every=10").fit()
    split = make_trainer(*common, "training.micro_batch_size=8", "eval.every=10").fit()
    assert [r["step"] for r in whole] == [0, 10, 20]
    for a, b in zip(whole, split, strict=True):
        assert b["exact_kl_p_pi"] == pytest.approx(a["exact_kl_p_pi"], rel=1e-4)


# -- 6. checkpoint and resume -----------------------------------------------------------------------
RESUME = (
    "training.f_dpg.divergence=js",
    "training.f_dpg.baseline_window=100",  # smaller than the samples seen: the window rolls over
    "training.steps=12",
    "training.proposal.update=adaptive",
    "training.proposal.every=3",
    "eval.every=3",
    "checkpoint.every=6",
    "checkpoint.keep=1",
)


def _same_records(a: list[dict], b: list[dict]) -> bool:
    if [r["step"] for r in a] != [r["step"] for r in b]:
        return False
    for ra, rb in zip(a, b, strict=True):
        if ra.keys() != rb.keys():
            return False
        for key, va in ra.items():
            if is_timing(key):
                continue
            vb = rb[key]
            if isinstance(va, float) or isinstance(vb, float):
                if vb != pytest.approx(va, rel=1e-6, abs=1e-9):
                    return False
            elif va != vb:
                return False
    return True


@pytest.fixture(scope="module")
def uninterrupted_fdpg(make_trainer, tmp_path_factory):
    run = RunFolder(tmp_path_factory.mktemp("fdpg_uninterrupted")).create()
    trainer = make_trainer(*RESUME, run=run)
    trainer.fit()
    return run.read_metrics(), trainer.objective.state_dict()


def _interrupted(
    make_trainer, tmp_path, *, restore_objective: bool = True
) -> tuple[list[dict], Trainer, Trainer]:
    run = RunFolder(tmp_path).create()
    first = make_trainer(*RESUME, "training.steps=6", run=run)
    first.fit()
    second = make_trainer(*RESUME, run=run)
    if not restore_objective:  # what resuming would do if checkpoints ignored the baseline
        second.objective.load_state_dict = lambda state: None
    assert second.resume()
    second.fit()
    return run.read_metrics(), first, second


def test_fdpg_resume_gives_the_same_metrics_and_baseline(make_trainer, tmp_path, uninterrupted_fdpg):
    metrics, final_state = uninterrupted_fdpg
    resumed, first, second = _interrupted(make_trainer, tmp_path)
    assert len(first.objective.baseline) == 100  # the checkpoint held a full, rolled-over window
    assert _same_records(metrics, resumed)
    for key, value in final_state.items():
        assert torch.equal(second.objective.state_dict()[key], value), key


def test_resume_without_the_baseline_would_differ(make_trainer, tmp_path, uninterrupted_fdpg):
    """The control for the test above: the baseline does move the metrics."""
    metrics, _ = uninterrupted_fdpg
    resumed, _, _ = _interrupted(make_trainer, tmp_path, restore_objective=False)
    assert not _same_records(metrics, resumed)


def test_checkpoint_and_objective_must_agree_on_objective_state(make_trainer, tmp_path):
    schedule = (*RESUME[2:], "training.steps=6")  # without the f_dpg options
    stateless = RunFolder(tmp_path / "gdc").create()
    make_trainer(*schedule, "training.method=gdc++", run=stateless).fit()
    with pytest.raises(ValueError, match=r"holds no state for objective f-dpg\[js\], which keeps some"):
        make_trainer(*schedule, run=stateless).resume()
    stateful = RunFolder(tmp_path / "fdpg").create()
    make_trainer(*schedule, run=stateful).fit()
    with pytest.raises(ValueError, match=r"holds objective state, but objective gdc\+\+ keeps none"):
        make_trainer(*schedule, "training.method=gdc++", run=stateful).resume()


# -- 7. samples with P(x) = 0 -----------------------------------------------------------------------
@pytest.mark.parametrize("divergence", ["forward_kl", "js", "tv"])
def test_bounded_divergences_handle_zero_target_samples_exactly(toy_space, divergence):
    prior, space = toy_space
    exact = ExactTarget.build(Target.pointwise(prior, [CallableScorer(lambda t: "b" in t, True)]), space)
    zero = exact.log_target == float("-inf")
    assert 0 < int(zero.sum()) < len(space)
    objective = FDPG(divergence)
    batch = Batch(space.samples, exact.log_a, exact.log_target, exact.evidence, exact.log_z)
    log_pi = space.log_prob(perturbed_policy(prior, 3)).float()
    reward = objective.pseudo_rewards(batch, log_pi)
    assert torch.isfinite(reward).all()
    assert torch.equal(reward[zero], torch.full_like(reward[zero], -F_PRIME_AT_INFINITY[divergence]))
    assert torch.isfinite(objective.per_sample_loss(batch, PolicyOutput.of_sequences(log_pi))).all()


def test_reverse_kl_refuses_a_target_where_p_can_be_zero(make_trainer, toy_space):
    with pytest.raises(InfiniteDivergenceError, match=r"pointwise constraints \('has_b'\).*max_log_ratio"):
        make_trainer("training.f_dpg.divergence=reverse_kl")
    # and per batch, for targets built without a Constraint term
    prior, space = toy_space
    exact = ExactTarget.build(Target.pointwise(prior, [CallableScorer(lambda t: "b" in t, True)]), space)
    batch = Batch(space.samples, exact.log_a, exact.log_target, exact.evidence, exact.log_z)
    with pytest.raises(InfiniteDivergenceError, match=r"\d+ of 40 samples have P\(x\) = 0"):
        FDPG("reverse_kl").per_sample_loss(batch, PolicyOutput.of_sequences(space.log_prob(prior)))


def test_capped_reverse_kl_pushes_violations_down_by_its_documented_bound(make_trainer):
    c = 2.0
    trainer = make_trainer("training.f_dpg.divergence=reverse_kl", f"training.f_dpg.max_log_ratio={c}")
    exact = trainer.exact[0]
    # on a batch, P = 0 samples get the pseudo-reward −(C + 1)
    batch = Batch(exact.space.samples, exact.log_a, exact.log_target, exact.evidence, exact.log_z)
    log_pi = exact.space.log_prob(trainer.policy).float()
    reward = trainer.objective.pseudo_rewards(batch, log_pi)
    zero = exact.log_target == float("-inf")
    assert torch.equal(reward[zero], torch.full_like(reward[zero], -(c + 1)))
    assert torch.isfinite(trainer.objective.per_sample_loss(batch, PolicyOutput.of_sequences(log_pi))).all()
    # training lowers the capped divergence it minimises, and satisfaction goes up
    before = capped_reverse_kl(exact.log_p, exact.space.log_prob(trainer.policy), c)
    records = trainer.fit()
    after = capped_reverse_kl(exact.log_p, exact.space.log_prob(trainer.policy), c)
    assert after < 0.3 * before, (before, after)  # measured: 1.46 -> 0.20
    assert records[-1]["exact_satisfaction_pi"] > 0.9 > records[0]["exact_satisfaction_pi"]


# -- 8. configuration -------------------------------------------------------------------------------
def test_config_builds_the_configured_fdpg():
    cfg = parse_config(
        apply_overrides(
            copy.deepcopy(BASE),
            ["training.f_dpg={divergence: reverse_kl, baseline_window: 64, max_log_ratio: 3}"],
        )
    )
    objective = build_objective(cfg.training, None)
    assert isinstance(objective, FDPG)
    assert (objective.divergence, objective.baseline.window, objective.max_log_ratio) == ("reverse_kl", 64, 3)
    assert parse_config(copy.deepcopy(BASE)).training.f_dpg.divergence == "js"  # the default


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["training.method=fdpg"], r"unknown method 'fdpg'; did you mean 'f-dpg'\?"),
        (
            ["training.f_dpg.divergence=jss"],
            r"training.f_dpg.divergence: invalid value 'jss'; did you mean 'js'\?",
        ),
        (
            ["training.f_dpg.baseline_widow=8"],
            r"unknown key 'baseline_widow'; did you mean 'baseline_window'\?",
        ),
        (["training.f_dpg.max_log_ratio=2"], r"max_log_ratio applies to divergence 'reverse_kl' only"),
        (
            ["training.method=gdc++", "training.f_dpg.divergence=tv"],
            r"f_dpg is set but method is 'gdc\+\+'; f_dpg applies to method 'f-dpg' only",
        ),
    ],
    ids=["method", "divergence", "key", "clip", "options-for-another-method"],
)
def test_fdpg_config_errors_name_the_closest_valid_value(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_config(apply_overrides(copy.deepcopy(BASE), overrides))


def test_the_objective_and_the_config_refuse_a_misplaced_clip_alike():
    """One check: the config's f_dpg section calls the objective's own."""
    with pytest.raises(ValueError, match=r"max_log_ratio applies to divergence 'reverse_kl' only \(js"):
        FDPG("js", max_log_ratio=2.0)


@pytest.mark.parametrize("method", ["f-dpg", "gdc++"])
def test_a_run_folder_config_reads_back_the_same(method):
    """Runs write the resolved config: f-dpg's with its options filled in, other methods' with
    ``f_dpg: null`` (as configs written before f-DPG existed, which must still resume)."""
    cfg = parse_config(apply_overrides(copy.deepcopy(BASE), [f"training.method={method}"]))
    dumped = cfg.model_dump(mode="json")
    assert parse_config(dumped) == cfg
    if method == "f-dpg":
        assert dumped["training"]["f_dpg"] == {
            "divergence": "js",
            "baseline_window": 1024,
            "max_log_ratio": None,
        }
    else:
        assert dumped["training"]["f_dpg"] is None
        del dumped["training"]["f_dpg"]
        assert parse_config(dumped) == cfg
