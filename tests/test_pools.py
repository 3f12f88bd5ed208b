"""Posterior pools against exact enumeration on a toy space (3 words, ≤ 4 tokens: 121 sequences).

Every pool estimate must land within 3 of its own standard errors of the exact value for the 10
seeds (one seed of 10 may miss by up to 4: with ~100 such checks in this file a 3-s.e. miss is
expected somewhere, and the test must not depend on the last bits of a CPU's rounding), and those
standard errors must match the spread of the estimates over the seeds (a standard error ten
times too large would pass the first check, not the second).
"""

from __future__ import annotations

import math

import pytest
import torch

from bayesalign.exact import ExactTarget, SequenceSpace, kl, tv
from bayesalign.frontier import Frontier, boolean_kl
from bayesalign.pools import PosteriorPool, known_bound, pool_metrics
from bayesalign.prior_draws import PoolCache, PoolError, draw_prior, pool_key
from bayesalign.samples import SamplingParams
from bayesalign.scorers import CallableScorer, WordScorer
from bayesalign.targets import Feature, Target
from bayesalign.toy import toy_model

WORDS = ["a", "b", "c"]
PARAMS = SamplingParams(max_new_tokens=4)
SEEDS = range(10)
N_POOL = 1024


def count_a(text: str) -> float:
    return float(text.split().count("a"))


@pytest.fixture(scope="module")
def prior():
    return toy_model(WORDS, seed=0, prompt="a b")


@pytest.fixture(scope="module")
def policy():
    return toy_model(WORDS, seed=3, prompt="a b")


def make_target(kind: str, prior) -> Target:
    if kind == "constraint":
        return Target.pointwise(prior, [WordScorer(("b",), name="has_b")])
    if kind == "boolean_feature":
        return Target(prior, [Feature(WordScorer(("c",), name="has_c"), lam=1.5)])
    return Target.tilt(prior, CallableScorer(count_a, name="n_a"), beta=0.5)  # bound only observed


@pytest.fixture(scope="module", params=["constraint", "boolean_feature", "tilt"])
def seeded(request, prior, policy):
    """(exact target, exact log π, [(pool, pool log π) per seed]) for one kind of target."""
    target = make_target(request.param, prior)
    space = SequenceSpace(prior, PARAMS.max_new_tokens)
    exact = ExactTarget.build(target, space)
    pools = []
    for seed in SEEDS:
        draws, _ = draw_prior(prior, N_POOL, PARAMS, seed=seed)
        pool = PosteriorPool(target, draws)
        pools.append((pool, policy.log_prob_frozen(pool.p_samples()).double()))
    return request.param, exact, space.log_prob(policy), pools


def check_calibrated(estimates, exact_value: float) -> None:
    z = sorted(abs(e.value - exact_value) / e.stderr for e in estimates)
    assert z[-2] < 3 and z[-1] < 4, f"seeds too many s.e. off: {z}"
    spread = torch.tensor([e.value for e in estimates]).std().item()
    mean_se = sum(e.stderr for e in estimates) / len(estimates)
    assert 0.5 < spread / mean_se < 2, f"stderr {mean_se:.4g} does not match the spread {spread:.4g}"


def test_pool_log_z_matches_exact(seeded):
    _, exact, _, pools = seeded
    check_calibrated([pool.log_z() for pool, _ in pools], exact.log_z)


def test_pool_kl_p_pi_matches_exact(seeded):
    _, exact, log_pi, pools = seeded
    check_calibrated([pool.kl_p_model(lp) for pool, lp in pools], kl(exact.log_p, log_pi))


def test_pool_kl_p_a_matches_exact(seeded):
    _, exact, _, pools = seeded
    check_calibrated([pool.kl_p_a() for pool, _ in pools], kl(exact.log_p, exact.log_a))


def test_pool_tv_p_pi_matches_exact(seeded):
    _, exact, log_pi, pools = seeded
    estimates = [pool.tv_p_model(lp) for pool, lp in pools]
    z = sorted(abs(e.value - tv(exact.log_p, log_pi)) / e.stderr for e in estimates)
    assert z[-2] < 3 and z[-1] < 4, z


def test_accepted_samples_are_distributed_as_p(seeded, prior):
    """The share of each sequence among accepted samples, pooled over seeds, matches p(x)."""
    kind, exact, _, pools = seeded
    counts: dict[str, int] = {}
    for pool, _ in pools:
        for text in pool.p_samples().texts:
            counts[text] = counts.get(text, 0) + 1
    total = sum(counts.values())
    p = dict(zip(exact.space.samples.texts, exact.log_p.exp().tolist(), strict=True))
    # chi-square over the 10 most likely sequences under p
    top = sorted(p, key=p.get, reverse=True)[:10]
    chi2 = sum((counts.get(t, 0) - total * p[t]) ** 2 / (total * p[t]) for t in top)
    assert chi2 < 30, (kind, chi2)  # 10 cells: the 99.9% quantile of χ²(10) is 29.6


def test_known_bounds(prior):
    assert known_bound(make_target("constraint", prior)) == 0.0
    assert known_bound(make_target("boolean_feature", prior)) == 1.5
    assert known_bound(make_target("tilt", prior)) is None  # real-valued: observed maximum


def test_observed_bound_is_reported(prior):
    draws, _ = draw_prior(prior, 256, PARAMS, seed=0)
    pool = PosteriorPool(make_target("tilt", prior), draws)
    assert pool.bound_observed
    assert 0 < pool.at_bound < 1
    assert not PosteriorPool(make_target("constraint", prior), draws).bound_observed


def test_unsatisfiable_target_is_an_error_naming_it(prior):
    draws, _ = draw_prior(prior, 256, PARAMS, seed=0)
    target = Target.pointwise(prior, [WordScorer(("zebra",), name="zebra")])
    with pytest.raises(PoolError, match="zebra"):
        PosteriorPool(target, draws)


def test_small_pool_is_marked_unreliable(prior, policy):
    draws, _ = draw_prior(prior, 256, PARAMS, seed=0)
    small = draws.head(20)
    pool = PosteriorPool(make_target("constraint", prior), small)
    metrics = pool_metrics(pool, policy, prior, batch_size=64)
    assert metrics["pool_accepted"] < 30 and metrics["pool_reliable"] == 0.0
    big = pool_metrics(PosteriorPool(make_target("constraint", prior), draws), policy, prior, 64)
    assert big["pool_reliable"] == 1.0 and big["pool_kl_p_q"] == pytest.approx(big["pool_kl_p_a"])


def test_tempered_sampling_cannot_make_a_pool(prior):
    with pytest.raises(PoolError, match="ancestral"):
        draw_prior(prior, 10, SamplingParams(max_new_tokens=4, temperature=0.7))


# -- the cache --------------------------------------------------------------------------------
def test_cache_reuses_and_extends_without_redrawing(prior, tmp_path, monkeypatch):
    cache = PoolCache(tmp_path)
    first, seconds = draw_prior(prior, 256, PARAMS, seed=4, cache=cache)
    assert seconds > 0
    calls = []
    original = type(prior).sample

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(prior), "sample", counted)
    again, _ = draw_prior(prior, 256, PARAMS, seed=4, cache=cache)
    assert calls == [] and again.samples.texts == first.samples.texts
    assert torch.equal(again.uniform, first.uniform)
    grown, _ = draw_prior(prior, 512, PARAMS, seed=4, cache=cache)
    assert len(calls) == 1  # one new chunk, the first one reused
    assert grown.samples.texts[:256] == first.samples.texts
    fresh, _ = draw_prior(prior, 512, PARAMS, seed=4)  # no cache: the same pool, drawn anew
    assert fresh.samples.texts == grown.samples.texts


def test_worker_processes_draw_the_same_pool_and_extend_the_cache_in_order(prior, tmp_path):
    """Chunks drawn by two spawned processes are the chunks one process draws (each chunk has its
    own generator), saved in order after the cached ones."""
    cache = PoolCache(tmp_path)
    head, _ = draw_prior(prior, 256, PARAMS, seed=6, cache=cache)
    phases: list[tuple[str, int | None, int | None]] = []

    def status(phase: str, done: int | None = None, total: int | None = None) -> None:
        phases.append((phase, done, total))

    grown, seconds = draw_prior(prior, 1024, PARAMS, seed=6, cache=cache, workers=2, status=status)
    alone, _ = draw_prior(prior, 1024, PARAMS, seed=6)
    assert seconds > 0 and grown.samples.texts == alone.samples.texts
    assert grown.samples.texts[:256] == head.samples.texts
    assert torch.equal(grown.uniform, alone.uniform)
    assert torch.allclose(grown.log_a, alone.log_a, atol=1e-5)
    assert [(done, total) for _, done, total in phases if total] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "2 processes" in phases[-1][0]
    cached, _ = cache.load(pool_key(prior, PARAMS, None, 6))
    assert cached.samples.texts == alone.samples.texts


def test_cache_is_keyed_by_what_the_draws_depend_on(prior, policy):
    key = pool_key(prior, PARAMS, None, 0)
    assert key != pool_key(prior, PARAMS, None, 1)
    assert key != pool_key(prior, SamplingParams(max_new_tokens=3), None, 0)
    assert key != pool_key(policy, PARAMS, None, 0)  # other weights
    assert key != pool_key(prior, PARAMS, ["a", "b"], 0)


def test_edited_cache_is_redrawn_not_reused(prior, tmp_path):
    cache = PoolCache(tmp_path)
    first, _ = draw_prior(prior, 256, PARAMS, seed=5, cache=cache)
    texts = cache.folder(pool_key(prior, PARAMS, None, 5)) / "texts.jsonl"
    texts.write_text(texts.read_text().replace('"text": "', '"text": "edited ', 1))
    loaded, why = cache.load(pool_key(prior, PARAMS, None, 5))
    assert loaded is None and "checksum" in why
    again, _ = draw_prior(prior, 256, PARAMS, seed=5, cache=cache)
    assert again.samples.texts == first.samples.texts  # redrawn, same seed


# -- conditional targets -------------------------------------------------------------------------
def test_per_context_pools_match_exact(prior):
    contexts = ["a", "b c"]
    target = Target.pointwise(prior, [WordScorer(("b",), name="has_b")])
    exact_log_z = [
        ExactTarget.build(target, SequenceSpace(prior, PARAMS.max_new_tokens, context=c)).log_z
        for c in contexts
    ]
    draws, _ = draw_prior(prior, 512, PARAMS, seed=0, contexts=contexts)
    assert len(draws) == 1024 and draws.samples.contexts.count("a") == 512
    estimate = PosteriorPool(target, draws).log_z()
    assert abs(estimate.value - sum(exact_log_z) / 2) < 3 * estimate.stderr


# -- the frontier ---------------------------------------------------------------------------------
def test_boolean_frontier_is_reached_by_the_tilt_and_by_nothing_below(prior, policy):
    """On the exact space: the tilt a·exp(λb) sits on the frontier (excess 1); a random π above."""
    target = make_target("constraint", prior)
    exact = ExactTarget.build(target, SequenceSpace(prior, PARAMS.max_new_tokens))
    b = exact.evidence.satisfied.double()
    z = (exact.log_a.exp() * b).sum().item()
    frontier = Frontier(b, boolean=True)
    frontier.prior_mean = z  # the exact prior mean (the space's values are not prior samples)
    for lam in (0.5, 1.0, 3.0):
        log_tilt = exact.log_a + lam * b
        log_tilt = log_tilt - torch.logsumexp(log_tilt, 0)
        s = (log_tilt.exp() * b).sum().item()
        assert frontier.excess(s, kl(log_tilt, exact.log_a)) == pytest.approx(1.0, rel=1e-4)
    log_pi = SequenceSpace(prior, PARAMS.max_new_tokens).log_prob(policy)
    s_pi = (log_pi.exp() * b).sum().item()
    assert kl(log_pi, exact.log_a) > boolean_kl(s_pi, z)


def test_sampled_frontier_matches_the_closed_form():
    values = (torch.rand(20000, generator=torch.Generator().manual_seed(0)) < 0.3).double()
    tilted = Frontier(values, boolean=False)
    closed = Frontier(values, boolean=True)
    for mean in (0.4, 0.6, 0.9):
        assert tilted.kl(mean) == pytest.approx(closed.kl(mean), rel=1e-6)
    assert math.isnan(tilted.kl(1.5))  # beyond the largest value seen: no tilt reaches it
    assert math.isnan(closed.excess(closed.prior_mean, 0.1))  # at the prior: KL* = 0, no ratio
    assert closed.excess(0.9, 0.1) == pytest.approx(0.1 / closed.kl(0.9))


def test_paired_gain_over_the_prior_matches_exact_and_is_tighter(seeded):
    _, exact, log_pi, pools = seeded
    exact_gain = kl(exact.log_p, exact.log_a) - kl(exact.log_p, log_pi)
    gains = [pool.kl_gain(lp) for pool, lp in pools]
    check_calibrated(gains, exact_gain)
    kls = [pool.kl_p_model(lp) for pool, lp in pools]
    assert sum(g.stderr for g in gains) < sum(k.stderr for k in kls)  # pairing removes log Ẑ's noise


def test_the_prior_is_scored_on_the_pool_by_its_own_log_a(prior, policy, tmp_path, monkeypatch):
    """Evaluating π = a (a separate model with the prior's weights, as before the first update)
    spends no forward pass on the pool's p-samples: log π there is the pool's log a, so KL(p‖π) is
    KL(p‖a) exactly. A π that differs from a is still scored by its own forward pass."""
    import copy

    from bayesalign.evaluator import Evaluator
    from bayesalign.models import LanguageModel

    monkeypatch.setenv("BAYESALIGN_CACHE", str(tmp_path))
    target = make_target("constraint", prior)
    phases: list[tuple[str, int | None, int | None]] = []

    def status(phase: str, done: int | None = None, total: int | None = None) -> None:
        phases.append((phase, done, total))

    evaluator = Evaluator(
        target, samples=64, sampling=PARAMS, micro=64, pool_samples=512, pool_holdout=0.5, status=status
    )
    same = copy.deepcopy(prior)
    scored: list[int] = []
    original = LanguageModel.log_prob_frozen

    def counting(self, samples, **kwargs):
        scored.append(len(samples))
        return original(self, samples, **kwargs)

    monkeypatch.setattr(LanguageModel, "log_prob_frozen", counting)
    metrics = evaluator.evaluate(same)
    n_p = evaluator.pool.n_accepted
    assert sum(scored) < n_p  # no forward over the held-out p-samples
    assert metrics["pool_kl_p_pi"] == metrics["pool_kl_p_a"]
    assert not [p for p in phases if p[0].startswith("scoring")]
    scored.clear()
    other = evaluator.evaluate(policy)
    assert sum(scored) >= n_p and abs(other["pool_kl_p_pi"] - other["pool_kl_p_a"]) > 1e-3
    counted = [(done, total) for phase, done, total in phases if phase.startswith("scoring")]
    assert counted == [(start, n_p) for start in range(0, n_p, 32)]  # π scored in counted pieces of 32
