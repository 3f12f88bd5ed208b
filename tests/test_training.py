"""The training loop on a toy model small enough to evaluate exactly.

Three words and at most four tokens give 121 possible sequences, so every record carries the exact
KL(p‖π) next to the IS estimates, and convergence, the proposal rule, resume and error handling
are all checked against exact values rather than against numbers copied from a run.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch

from bayesalign.config import ConfigError, apply_overrides, load_config, parse_config
from bayesalign.diagnostics import gradient_variance
from bayesalign.estimators import ZeroPartitionError
from bayesalign.exact import kl as exact_kl
from bayesalign.objectives import DPG, Batch, GDCPlusPlus, Objective, PolicyOutput
from bayesalign.proposals import NonFiniteLogProbError
from bayesalign.runs import RunFolder
from bayesalign.runs.metric_names import is_timing
from bayesalign.scorers import CallableScorer, WordScorer
from bayesalign.targets import Target
from bayesalign.training import NonFiniteLossError, Trainer, proposal_should_update
from bayesalign.training import checkpoint as checkpoint_module

WORDS = ["a", "b", "c"]

BASE = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"method": "gdc++", "steps": 20, "batch_size": 64, "lr": 3e-2},
    "eval": {"every": 10, "samples": 32, "exact": True},
}


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.module.named_parameters()}


def same_weights(model, weights: dict[str, torch.Tensor]) -> bool:
    current = dict(model.module.named_parameters())
    return current.keys() == weights.keys() and all(torch.equal(current[n], w) for n, w in weights.items())


# -- 1. convergence to the exact target --------------------------------------------------------------
CONVERGENCE = (
    "training.steps=200",
    "training.batch_size=256",
    "training.lr=1e-2",
    "training.proposal.update=adaptive",
    "training.proposal.every=10",
    "eval.every=50",
    "eval.samples=64",
)


@pytest.fixture(scope="module")
def convergence_runs(make_trainer) -> dict[str, list[dict]]:
    return {m: make_trainer(*CONVERGENCE, f"training.method={m}").fit() for m in ("dpg", "gdc++")}


@pytest.mark.parametrize("method", ["dpg", "gdc++"])
def test_distribution_matching_drives_exact_kl_below_a_tenth_of_minus_log_z(convergence_runs, method):
    records = convergence_runs[method]
    assert [r["step"] for r in records] == [0, 50, 100, 150, 200]
    assert all("exact_kl_p_pi" in r and math.isfinite(r["exact_kl_p_pi"]) for r in records)
    start, end = records[0], records[-1]
    # at step 0, π = a and KL(p‖a) = −log Z exactly for a pointwise target
    assert start["exact_kl_pi_a"] == pytest.approx(0.0, abs=1e-6)
    assert start["exact_kl_p_pi"] == pytest.approx(-start["exact_log_z"], rel=1e-6)
    assert end["exact_log_z"] == start["exact_log_z"]  # the target does not move
    ratio = end["exact_kl_p_pi"] / -start["exact_log_z"]
    assert ratio < 0.1, f"{method}: final exact KL(p‖π) is {ratio:.1%} of −log Z"
    assert end["exact_satisfaction_pi"] > start["exact_satisfaction_pi"]


def test_gdcpp_ends_closer_to_the_target_than_dpg(convergence_runs):
    dpg, gdc = convergence_runs["dpg"][-1], convergence_runs["gdc++"][-1]
    assert gdc["exact_kl_p_pi"] < dpg["exact_kl_p_pi"]


def test_dpg_from_a_fixed_proposal_reaches_a_tilt_target_where_p_over_pi_weights_would_not(make_trainer):
    """DPG's weight is p/q for samples of q. With q fixed at a and a tilt target, weighting by
    p/π instead (a plausible slip) has another fixed point: this test tells the two apart by
    where training ends, not only by one gradient."""

    @dataclass(frozen=True)
    class PiWeighted(DPG):
        def per_sample_loss(self, batch, out):
            log_pi = out.log_prob
            weights = torch.exp(batch.log_target - log_pi.detach().double().cpu() - batch.log_z)
            return -weights.to(log_pi) * log_pi

    def tilt(prior):
        return Target.tilt(prior, WordScorer(("b",), name="has_b"), beta=0.25)

    settings = ("training.steps=150", "training.batch_size=256", "training.lr=1e-2", "eval.every=150")
    ends = {}
    for name, objective in (("p/q", DPG()), ("p/π", PiWeighted())):
        trainer = make_trainer(*settings, "training.proposal.update=fixed", target=tilt, objective=objective)
        records = trainer.fit()
        ends[name] = records[-1]["exact_kl_p_pi"]
        start = records[0]["exact_kl_p_pi"]
    assert ends["p/q"] < 0.15 * start, (start, ends)
    assert ends["p/π"] > 3 * ends["p/q"], ends


# -- 2. gradient variance -----------------------------------------------------------------------------
def _cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def _flat(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One float64 CPU vector of a gradient (where `gradient_variance` reports its mean)."""
    return torch.cat([g.reshape(-1) for g in grads]).double().cpu()


def test_gdcpp_has_lower_gradient_variance_than_dpg_on_the_same_batches(make_trainer):
    trainer = make_trainer("training.proposal.update=fixed")  # q = a = π at initialisation
    policy, exact = trainer.policy, trainer.exact[0]
    # the exact gradient of KL(p‖π) = −Σ_x p(x) ∇log π(x), over the whole space
    exact_loss = -(exact.log_p.exp().float() * policy.log_prob(exact.space.samples)).sum()
    exact_grad = (
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(exact_loss, trainer.params)]).double().cpu()
    )

    gen = torch.Generator().manual_seed(123)
    stats = {"dpg": [], "gdc++": []}
    for _ in range(4):
        draw = trainer.draw(trainer.proposal, 64, gen)
        batch = Batch(draw.samples, draw.log_q, draw.log_target, draw.evidence, exact.log_z)
        for objective in (DPG(), GDCPlusPlus()):
            stats[objective.name].append(gradient_variance(policy, objective, batch))

    for d, g in zip(stats["dpg"], stats["gdc++"], strict=True):
        assert 0 < g.variance < d.variance, (g.variance, d.variance)
    # same gradient in expectation: both batch means point along the exact gradient, and agree
    mean_dpg = torch.stack([s.mean for s in stats["dpg"]]).mean(0)
    mean_gdc = torch.stack([s.mean for s in stats["gdc++"]]).mean(0)
    assert _cosine(mean_dpg, exact_grad) > 0.9
    assert _cosine(mean_gdc, exact_grad) > 0.9
    assert (mean_dpg - mean_gdc).norm() < 0.5 * exact_grad.norm()


def test_gradient_variance_matches_explicit_per_sample_gradients(make_trainer):
    trainer = make_trainer("training.proposal.update=fixed")
    policy, objective = trainer.policy, GDCPlusPlus()
    draw = trainer.draw(trainer.proposal, 6, torch.Generator().manual_seed(0))
    batch = Batch(draw.samples, draw.log_q, draw.log_target, draw.evidence, trainer.exact[0].log_z)

    grads = []
    for i in range(len(batch)):
        loss = objective.per_sample_loss(batch, PolicyOutput.of_sequences(policy.log_prob(batch.samples)))[i]
        grads.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, trainer.params)]).double().cpu()
        )
    grads = torch.stack(grads)
    expected_var = (grads**2).sum(1).mean() - (grads.mean(0) ** 2).sum()

    stats = gradient_variance(policy, objective, batch)
    assert stats.n == len(batch)
    assert torch.allclose(stats.mean, grads.mean(0), rtol=1e-5, atol=1e-8)
    assert stats.variance == pytest.approx(expected_var.item(), rel=1e-5)
    assert all(p.grad is None for p in trainer.params)  # the diagnostic leaves .grad alone

    repeated = batch.select(torch.zeros(5, dtype=torch.long))  # five copies of one sample
    same = gradient_variance(policy, objective, repeated)
    assert same.mean_sq_norm > 0
    assert abs(same.variance) < 1e-6 * same.mean_sq_norm


# -- 3. the proposal --------------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["kl", "tv"])
def test_proposal_should_update_iff_policy_strictly_closer(criterion):
    assert proposal_should_update(criterion, 0.1, 0.2)
    assert not proposal_should_update(criterion, 0.2, 0.2)
    assert not proposal_should_update(criterion, 0.3, 0.2)
    assert not proposal_should_update(criterion, float("nan"), 0.2)


def test_proposal_should_update_rejects_unknown_criterion():
    with pytest.raises(ValueError, match="unknown proposal criterion 'kll'"):
        proposal_should_update("kll", 0.1, 0.2)


def test_adaptive_proposal_is_replaced_exactly_when_the_policy_is_closer(make_trainer, monkeypatch):
    trainer = make_trainer(
        "training.steps=40",
        "training.proposal.update=adaptive",
        "training.proposal.every=4",
        "training.proposal.samples=128",
        "eval.every=40",
        "eval.samples=16",
    )
    assert trainer.proposal is trainer.base
    checks = []
    original = trainer.check_proposal

    def recording_check() -> dict[str, float]:
        before = trainer.proposal
        policy_weights = snapshot(trainer.policy)
        out = original()
        checks.append((trainer.state.step, before, trainer.proposal, policy_weights, out))
        return out

    monkeypatch.setattr(trainer, "check_proposal", recording_check)
    records = trainer.fit()

    assert [c[0] for c in checks] == list(range(4, 41, 4))
    replaced = 0
    for step, before, after, policy_weights, out in checks:
        closer = out["check_kl_p_pi"] < out["check_kl_p_q"]
        assert out["proposal_replaced"] == float(closer), step
        if closer:
            replaced += 1
            assert after is not before and after is not trainer.policy
            assert same_weights(after, policy_weights)  # q ← a copy of π at that moment
            assert not any(p.requires_grad for p in after.module.parameters())
            last_copy = (after, policy_weights, step)
        else:
            assert after is before
    assert 0 < replaced < len(checks), "the run should exercise both outcomes"
    assert trainer.state.proposal_updates == replaced == records[-1]["proposal_updates"]
    assert trainer.state.proposal_is_copy
    proposal, weights, copied_at = last_copy
    assert trainer.proposal is proposal
    assert same_weights(proposal, weights)  # later training did not move the frozen copy
    if copied_at < trainer.state.step:
        assert not same_weights(trainer.policy, weights)
    # the last record reports the last check
    assert records[-1]["check_kl_p_pi"] == checks[-1][4]["check_kl_p_pi"]


def _forbid_checks(trainer: Trainer, monkeypatch) -> None:
    def fail() -> dict[str, float]:
        raise AssertionError("check_proposal must not run for this proposal update")

    monkeypatch.setattr(trainer, "check_proposal", fail)


def test_fixed_proposal_stays_the_prior(make_trainer, monkeypatch):
    trainer = make_trainer("training.proposal.update=fixed", "eval.every=5")
    prior_weights = snapshot(trainer.base)
    _forbid_checks(trainer, monkeypatch)
    records = trainer.fit()
    assert trainer.proposal is trainer.base
    assert same_weights(trainer.base, prior_weights)
    assert trainer.state.proposal_updates == 0 and not trainer.state.proposal_is_copy
    for r in records:  # q = a throughout: KL(p‖q) = KL(p‖a) = −log Z
        assert r["exact_kl_p_q"] == pytest.approx(-r["exact_log_z"], rel=1e-6)
        assert not any(k.startswith("check_") for k in r)
    assert records[-1]["exact_kl_p_pi"] < records[-1]["exact_kl_p_q"]


def test_on_policy_proposal_is_the_policy(make_trainer, monkeypatch):
    trainer = make_trainer("training.proposal.update=on_policy", "eval.every=5")
    assert trainer.proposal is trainer.policy
    _forbid_checks(trainer, monkeypatch)
    drawn_from = []
    original_draw = trainer.draw

    def recording_draw(model, n, generator, **kw):
        drawn_from.append(model)
        return original_draw(model, n, generator, **kw)

    monkeypatch.setattr(trainer, "draw", recording_draw)
    records = trainer.fit()
    assert trainer.proposal is trainer.policy
    assert drawn_from and all(m is trainer.policy for m in drawn_from)
    for r in records:
        assert r["exact_kl_p_q"] == r["exact_kl_p_pi"]
        assert r["kl_p_q"] == r["kl_p_pi"]
    assert records[-1]["exact_kl_p_pi"] < records[0]["exact_kl_p_pi"]


@pytest.mark.parametrize("method", ["dpg", "gdc++"])
def test_dm_draws_run_the_prior_on_the_support_only_and_train_the_same(make_trainer, method, monkeypatch):
    """DPG and GDC++ read log P, not log a: their on-policy training draws run the prior's
    forward on the samples with b = 1 only, and end with the weights of a loop forced to
    score every sample (same seed; log P equal within float rounding of the smaller batch)."""
    overrides = ("training.proposal.update=on_policy", f"training.method={method}", "training.steps=4")
    overrides += ("eval.every=100", "eval.exact=false")
    support, every = make_trainer(*overrides), make_trainer(*overrides)
    every.prior_pass = "all"
    rows: dict[str, list[int]] = {"support": [], "all": []}
    for name, trainer in (("support", support), ("all", every)):
        forward = trainer.base.token_log_probs_frozen
        monkeypatch.setattr(
            trainer.base,
            "token_log_probs_frozen",
            lambda s, *a, _f=forward, _r=rows[name], **k: _r.append(len(s)) or _f(s, *a, **k),
        )
        for _ in range(4):
            trainer.train_step()
    assert support.prior_pass == "support" and rows["all"] == [64] * 4
    assert all(0 < n < 64 for n in rows["support"]) and len(rows["support"]) == 4
    assert support.state.log_z == pytest.approx(every.state.log_z, abs=1e-5)
    weights = zip(support.policy.module.parameters(), every.policy.module.parameters(), strict=True)
    for mine, theirs in weights:
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)


@dataclass(frozen=True)
class EveryRowDPG(DPG):
    """DPG as it was: the policy's forward and backward on every row."""

    def rows_with_loss(self, batch: Batch) -> None:
        return None


@pytest.mark.parametrize("proposal", ["fixed", "on_policy"])
def test_dpg_runs_the_policy_on_weighted_rows_only_same_gradient(make_trainer, proposal, monkeypatch):
    """DPG's loss is 0·log π wherever P(x) = 0: the loop runs the policy's forward and backward
    on the other rows only, and its gradient is that of a loop that runs every row (same seed,
    same draw; equal within the float rounding of a smaller batch). The loss is still divided
    by the whole minibatch: dividing by the kept rows would scale the gradient and fail here.
    (Gradients, not weights after Adam: the attention's key bias has a zero gradient in exact
    arithmetic, and Adam turns its rounding noise into lr-sized steps.)"""
    overrides = (f"training.proposal.update={proposal}", "training.method=dpg", "training.steps=1")
    overrides += ("training.max_grad_norm=null", "eval.every=100", "eval.exact=false")  # no clipping
    skipping, every = make_trainer(*overrides), make_trainer(*overrides, objective=EveryRowDPG())
    rows: dict[str, list[int]] = {"skipping": [], "every": []}
    grads: dict[str, list[torch.Tensor]] = {}
    for name, trainer in (("skipping", skipping), ("every", every)):
        forward, step = trainer.policy.forward_generated, trainer.optimizer.step
        monkeypatch.setattr(
            trainer.policy,
            "forward_generated",
            lambda s, *a, _f=forward, _r=rows[name], **k: _r.append(len(s)) or _f(s, *a, **k),
        )

        def record(*a, _step=step, _name=name, _trainer=trainer, **k):
            grads[_name] = [p.grad.clone() for p in _trainer.policy.module.parameters()]
            return _step(*a, **k)

        monkeypatch.setattr(trainer.optimizer, "step", record)
        trainer.train_step()
    assert rows["every"] == [64] and len(rows["skipping"]) == 1
    assert 0 < rows["skipping"][0] < 64  # b = "has b": some rows without, some with
    assert any(g.abs().max() > 1e-3 for g in grads["every"])
    for mine, theirs in zip(grads["skipping"], grads["every"], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


def test_objectives_name_the_rows_with_a_loss():
    """DPG: the rows with P(x) > 0; GDC++ (its baseline pushes every row): all of them."""
    from bayesalign.objectives import CDPG

    log_target = torch.tensor([0.0, float("-inf"), -1.0], dtype=torch.float64)
    batch = Batch(None, torch.zeros(3, dtype=torch.float64), log_target, None, 0.0)
    assert DPG().rows_with_loss(batch).tolist() == [True, False, True]
    assert GDCPlusPlus().rows_with_loss(batch) is None
    # CDPG: its per-context weights, zero where P(x | c) = 0, unless its baseline is on
    weight = torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64)
    weighted = Batch(None, batch.log_q, log_target, None, 0.0, extras={"weight": weight})
    assert CDPG(baseline=False).rows_with_loss(weighted).tolist() == [True, False, True]
    assert CDPG().rows_with_loss(weighted) is None


# -- 4. resume ----------------------------------------------------------------------------------------
RESUME = (
    "training.steps=12",
    "training.proposal.update=adaptive",
    "training.proposal.every=3",
    "eval.every=3",  # every record right after a check
    "checkpoint.every=6",
    "checkpoint.keep=1",
)


def _assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys(), (ra["step"], sorted(ra.keys() ^ rb.keys()))
        for key, va in ra.items():
            if is_timing(key):
                continue
            vb = rb[key]
            if isinstance(va, float) or isinstance(vb, float):
                assert vb == pytest.approx(va, rel=1e-6, abs=1e-9), (ra["step"], key)
            else:
                assert va == vb, (ra["step"], key)


@pytest.fixture(scope="module")
def uninterrupted(make_trainer, tmp_path_factory):
    """The reference: 12 steps in one go, with its final weights."""
    run = RunFolder(tmp_path_factory.mktemp("uninterrupted")).create()
    trainer = make_trainer(*RESUME, run=run)
    trainer.fit()
    return run.read_metrics(), snapshot(trainer.policy), snapshot(trainer.proposal)


def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(make_trainer, tmp_path, uninterrupted):
    metrics, policy_weights, proposal_weights = uninterrupted
    run = RunFolder(tmp_path).create()
    first = make_trainer(*RESUME, "training.steps=6", run=run)
    assert not first.resume()  # nothing to resume from yet
    first.fit()
    assert first.state.step == 6
    assert first.state.proposal_is_copy, "the checkpoint should hold a replaced proposal"
    assert (run.checkpoint_dir(6) / "proposal.safetensors").is_file()

    second = make_trainer(*RESUME, run=run)
    assert second.resume()
    assert second.state.step == 6 and second.state.proposal_is_copy
    assert same_weights(second.proposal, snapshot(first.proposal))
    assert same_weights(second.policy, snapshot(first.policy))
    second.fit()

    _assert_same_metrics(metrics, run.read_metrics())
    assert same_weights(second.policy, policy_weights)
    assert same_weights(second.proposal, proposal_weights)
    kept = sorted(p.name for p in run.checkpoints.iterdir())
    assert kept == ["step_000012"]  # checkpoint.keep = 1 pruned step 6 once step 12 was complete


def test_a_checkpoint_that_fails_midway_leaves_the_previous_one_usable(
    make_trainer, tmp_path, monkeypatch, uninterrupted
):
    metrics, policy_weights, _ = uninterrupted
    run = RunFolder(tmp_path).create()
    real_save_file = checkpoint_module.save_file

    def failing_save_file(tensors, path):
        if "step_000012" in str(path):
            raise OSError("disk full")
        real_save_file(tensors, path)

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        make_trainer(*RESUME, run=run).fit()
    monkeypatch.undo()

    # keep = 1, yet the finished step-6 checkpoint survives the failed step-12 one
    assert (run.checkpoints / "step_000012.tmp").is_dir()  # the half-written one is left behind
    assert run.latest_checkpoint() == run.checkpoint_dir(6)
    assert max(r["step"] for r in run.read_metrics()) == 12  # logged before the checkpoint failed

    trainer = make_trainer(*RESUME, run=run)
    assert trainer.resume()
    assert trainer.state.step == 6
    assert max(r["step"] for r in run.read_metrics()) == 6  # records after the checkpoint dropped
    trainer.fit()
    _assert_same_metrics(metrics, run.read_metrics())
    assert same_weights(trainer.policy, policy_weights)
    assert not (run.checkpoints / "step_000012.tmp").exists()  # replaced by the complete save
    assert run.latest_checkpoint() == run.checkpoint_dir(12)


def test_resume_restores_the_last_proposal_check_reported_in_records(make_trainer, tmp_path):
    # eval every 2 steps, checks every 3: the record of step 8 repeats the check made at step 6,
    # just before the checkpoint the resumed run starts from
    schedule = (*RESUME, "eval.every=2")
    reference = RunFolder(tmp_path / "reference").create()
    make_trainer(*schedule, run=reference).fit()
    run = RunFolder(tmp_path / "resumed").create()
    make_trainer(*schedule, "training.steps=6", run=run).fit()
    trainer = make_trainer(*schedule, run=run)
    assert trainer.resume()
    trainer.fit()
    _assert_same_metrics(reference.read_metrics(), run.read_metrics())


# -- 5. errors ----------------------------------------------------------------------------------------
def _raw(**sections) -> dict:
    raw = copy.deepcopy(BASE)
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (_raw(training={"stpes": 10}), r"training: unknown key 'stpes'; did you mean 'steps'\?"),
        (_raw(training={"method": "gdc+"}), r"unknown method 'gdc\+'; did you mean 'gdc\+\+'\?"),
        (
            _raw(target={"constraints": [{"type": "wrod", "words": ["b"]}]}),
            r"unknown scorer 'wrod'; did you mean 'word'\?",
        ),
        (
            _raw(training={"proposal": {"update": "adaptiv"}}),
            r"training.proposal.update: invalid value 'adaptiv'; did you mean 'adaptive'\?",
        ),
        (_raw(evl={"every": 1}), r"unknown key 'evl'; did you mean 'eval'\?"),
    ],
    ids=["key", "method", "scorer", "literal", "section"],
)
def test_config_errors_suggest_the_closest_valid_name(raw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_config(raw)


def test_overrides_set_nested_values_parsed_as_yaml():
    raw = apply_overrides(
        copy.deepcopy(BASE),
        ["training.steps=5", "training.proposal.update=fixed", "eval.exact=false", "prompt=a b"],
    )
    cfg = parse_config(raw)
    assert cfg.training.steps == 5
    assert cfg.training.proposal.update == "fixed"
    assert cfg.eval.exact is False
    assert cfg.prompt == "a b"
    assert cfg.training.lr == BASE["training"]["lr"]  # untouched keys stay


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("training.steps", "must look like section.key=value"),
        ("=5", "must look like section.key=value"),
        ("sampling.max_new_tokens.x=1", "'max_new_tokens' is not a section"),
    ],
)
def test_malformed_overrides_are_rejected(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides(copy.deepcopy(BASE), [override])


def test_load_config_applies_overrides_and_validates_them(tmp_path):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_config(path, ["training.steps=7"]).training.steps == 7
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(path, ["training.stpes=7"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_unsatisfiable_constraint_raises_before_any_optimizer_step(make_trainer):
    trainer = make_trainer(
        'target.constraints=[{type: word, words: ["zebra"], name: needs_zebra}]',
        "eval.exact=false",
    )
    before = snapshot(trainer.policy)
    with pytest.raises(ZeroPartitionError, match=r"'needs_zebra' held for 0"):
        trainer.fit()
    with pytest.raises(ZeroPartitionError, match=r"no sample satisfies the target.*'needs_zebra'"):
        trainer.train_step()
    assert same_weights(trainer.policy, before)
    assert trainer.state.step == 0 and not trainer.optimizer.state


def test_nan_from_a_scorer_is_reported_by_name(make_trainer):
    nan_reward = CallableScorer(lambda text: float("nan") if "c" in text.split() else 0.0, name="nan_reward")
    trainer = make_trainer("eval.exact=false", target=lambda prior: Target.tilt(prior, nan_reward, beta=1.0))
    before = snapshot(trainer.policy)
    with pytest.raises(ValueError, match=r"scorer 'nan_reward' returned nan"):
        trainer.fit()
    assert same_weights(trainer.policy, before)


class NaNObjective(Objective):
    """DPG whose loss turns NaN: stands in for any objective that produces a non-finite loss."""

    name = "broken_objective"

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        return DPG().per_sample_loss(batch, out) * float("nan")


def test_non_finite_loss_names_the_objective(make_trainer):
    trainer = make_trainer("eval.exact=false", objective=NaNObjective())
    before = snapshot(trainer.policy)
    with pytest.raises(NonFiniteLossError, match=r"broken_objective loss is nan at step 1"):
        trainer.fit()
    assert same_weights(trainer.policy, before)
    assert trainer.state.step == 0


def test_nan_policy_log_prob_is_a_non_finite_loss(make_trainer, monkeypatch):
    trainer = make_trainer("eval.exact=false")
    original = trainer.policy.forward_generated

    def poisoned(samples, **kw):
        token_log_probs, hidden = original(samples, **kw)
        return token_log_probs * float("nan"), hidden

    monkeypatch.setattr(trainer.policy, "forward_generated", poisoned)
    before = snapshot(trainer.policy)
    with pytest.raises(NonFiniteLossError, match=r"gdc\+\+ loss is nan at step 1.*min log π = nan"):
        trainer.train_step()
    assert same_weights(trainer.policy, before)


def test_nan_importance_weights_are_refused_before_the_loss(make_trainer, monkeypatch):
    trainer = make_trainer("eval.exact=false")
    original = trainer.target.log_prob

    def poisoned(log_a, evidence):
        out = original(log_a, evidence).clone()
        out[0] = float("nan")
        return out

    monkeypatch.setattr(trainer.target, "log_prob", poisoned)
    before = snapshot(trainer.policy)
    with pytest.raises(NonFiniteLogProbError, match=r"log-probabilities are NaN.*P/q are undefined"):
        trainer.train_step()
    assert same_weights(trainer.policy, before)
    assert trainer.state.z_count == 0  # the running Z did not absorb the bad batch


@pytest.mark.parametrize(
    "target_override",
    [
        "target.constraints=[{type: word, words: [b], name: has_b}]",
        "target.reward={scorer: {type: regex, pattern: a, count: true, name: n_a}, beta: 0.5}",
    ],
)
def test_kl_p_a_estimate_matches_the_exact_divergence_of_the_target(make_trainer, target_override):
    """kl_p_a is KL(p‖a) for any target: −log Z for a pointwise one, E_p[r/β] − log Z for a tilt."""
    overrides = [target_override, "training.steps=0", "eval.samples=4000", "eval.exact=true"]
    if "reward" in target_override:
        overrides.append("target.constraints=[]")
    trainer = make_trainer(*overrides)
    record = trainer.fit()[0]
    exact = trainer.exact[0]
    exact_kl_p_a = exact_kl(exact.log_p, exact.log_a)
    assert abs(record["kl_p_a"] - exact_kl_p_a) < 4 * record["kl_p_a_stderr"] + 1e-9
    if "constraints" in target_override:
        assert record["kl_p_a"] == pytest.approx(record["minus_log_z"], abs=1e-9)


def test_a_policy_that_does_not_start_at_the_prior_gets_its_own_evaluation_samples(make_trainer):
    """At step 0 π's samples are q's only when π really equals a (checked, not assumed)."""
    trainer = make_trainer("training.steps=0", "training.proposal.update=fixed")
    same = trainer.evaluate()
    assert same["kl_pi_a"] == 0.0 and same["satisfaction_pi"] == same["satisfaction_q"]
    with torch.no_grad():
        for p in trainer.policy.module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    moved = trainer.evaluate()
    assert moved["kl_pi_a"] > 0.05
    assert moved["exact_kl_pi_a"] == pytest.approx(moved["kl_pi_a"], abs=5 * moved["kl_pi_a_stderr"] + 0.02)


def test_records_say_where_the_time_went(make_trainer):
    """Per-step wall and CPU seconds of each phase since the last record, and the evaluation's
    own: they are non-negative, and the phases of the steps between two records fit inside the
    wall time between them."""
    records = make_trainer("training.steps=4", "eval.every=2", "training.proposal.every=1").fit()
    first, *later = records
    assert "time_evaluate_wall" in first and "time_draw_wall" not in first  # no step before step 0
    phases = ("draw", "prepare", "forward_backward", "optimizer", "proposal_check", "evaluate")
    for before, rec in zip(records, later, strict=False):
        for phase in phases:
            assert rec[f"time_{phase}_wall"] >= 0 and rec[f"time_{phase}_cpu"] >= 0, phase
        assert rec["time_draw_wall"] > 0 and rec["time_forward_backward_wall"] > 0
        steps = rec["step"] - before["step"]
        timed = steps * sum(rec[f"time_{p}_wall"] for p in phases[:-1]) + rec["time_evaluate_wall"]
        assert timed <= rec["seconds"] - before["seconds"] + 1e-3
