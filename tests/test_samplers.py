"""Samplers (rejection, quasi-rejection, importance resampling) against exact enumeration.

Toy space: three words, prompt "a b", at most four new tokens, so the 121 possible sequences are
listed and p, p_β ∝ min(P, β q), Z_β, TV(p, p_β) and KL(p‖p_β) are exact. Two cases:

- "tilt/a":      P = a·exp(n_a(x)), proposal q = a (the prior). P/q = exp(n_a) ≤ e⁴.
- "pointwise/π": P = a·b (b: the word "b" occurs), proposal q = another random model, standing in
                 for a trained policy. P/q ranges up to ≈ 53: a heavy-tailed weight.

Statistical checks are stated with their tolerance: binomial standard errors for acceptance
rates, a chi-square test at significance level ALPHA for sampled distributions, the estimators'
own standard errors for the IS diagnostics. Every random draw is seeded, so each test is
deterministic; the tolerances say how far a correct sampler could fall by chance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bayesalign import sampling as S
from bayesalign.cli import main
from bayesalign.estimators import ZeroPartitionError, effective_sample_size
from bayesalign.exact import ExactTarget, SequenceSpace, tv
from bayesalign.proposals import PriorPass, Scored, propose
from bayesalign.samples import SamplingParams
from bayesalign.scorers import CallableScorer, WordScorer
from bayesalign.targets import Target
from bayesalign.toy import toy_model

WORDS = ["a", "b", "c"]
PROMPT = "a b"
MAX_NEW_TOKENS = 4
PARAMS = SamplingParams(max_new_tokens=MAX_NEW_TOKENS)
N_POOL = 20_000  # proposals for acceptance-rate and IS checks
N_ACCEPTED = 4_000  # accepted samples for distribution checks
SE_LIMIT = 4.0  # |observed − exact| in standard errors
ALPHA = 1e-3  # chi-square significance level
CONFIG = Path(__file__).parents[1] / "configs" / "toy_word.yaml"
HALF_A = "[{scorer: {type: word, words: [a], name: has_a}, moment: 0.5}]"  # E_p[has "a"] = 0.5


def count_a(text: str) -> float:
    return float(text.split().count("a"))


class Case:
    """A target, a proposal and everything exact about them on the enumerated space."""

    def __init__(self, name: str, target: Target, proposal) -> None:
        self.name, self.target, self.proposal = name, target, proposal
        self.space = SequenceSpace(target.base, MAX_NEW_TOKENS)
        self.exact = ExactTarget.build(target, self.space)
        self.log_q = self.space.log_prob(proposal)
        self.max_ratio = S.exact_max_ratio(self.exact, self.log_q)
        self.index = {t: i for i, t in enumerate(self.space.samples.texts)}
        assert len(self.index) == len(self.space)  # texts identify sequences

    def counts(self, texts: list[str]) -> torch.Tensor:
        counts = torch.zeros(len(self.space), dtype=torch.float64)
        for t in texts:
            counts[self.index[t]] += 1
        return counts

    def pool(self, n: int = N_POOL, seed: int = 0) -> Scored:
        return propose(self.target, self.proposal, n, PARAMS, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def prior():
    return toy_model(WORDS, seed=0, prompt=PROMPT)


@pytest.fixture(scope="module")
def cases(prior) -> dict[str, Case]:
    tilt = Target.tilt(prior, CallableScorer(count_a, name="n_a"), beta=1.0)
    pointwise = Target.pointwise(prior, [WordScorer(("b",), name="has_b")])
    return {
        "tilt/a": Case("tilt/a", tilt, prior),
        "pointwise/π": Case("pointwise/π", pointwise, toy_model(WORDS, seed=1, prompt=PROMPT)),
        "pointwise/a": Case("pointwise/a", pointwise, prior),
    }


@pytest.fixture(scope="module")
def pools(cases) -> dict[str, Scored]:
    return {name: case.pool() for name, case in cases.items()}


def chi_square(counts: torch.Tensor, log_probs: torch.Tensor, min_expected: float = 5.0):
    """Pearson's chi-square of ``counts`` against the law exp(log_probs); cells expecting fewer
    than ``min_expected`` are pooled into one. Returns (statistic, degrees of freedom, p-value)."""
    expected = log_probs.exp() * counts.sum()
    big = expected >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    if exp[-1] < 1e-12:  # nothing pooled: the last cell is empty on both sides unless counts leak
        if obs[-1] > 0:
            return math.inf, len(obs) - 2, 0.0
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum().item()
    df = len(obs) - 1
    return stat, df, torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(stat / 2)).item()


def empirical_tv(counts: torch.Tensor, log_probs: torch.Tensor) -> float:
    return tv((counts / counts.sum()).log(), log_probs)


def sampling_noise(log_probs: torch.Tensor, k: int) -> float:
    """½·Σ sqrt(p(1−p)/k): an upper bound (Jensen) on the expected TV between an empirical
    distribution of k iid draws and its law."""
    p = log_probs.exp()
    return 0.5 * torch.sqrt(p * (1 - p) / k).sum().item()


# -- exact quantities -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tilt/a", "pointwise/π"])
def test_exact_p_beta_matches_its_definition(cases, name):
    case = cases[name]
    log_p, log_target = case.exact.log_p, case.exact.log_target
    for beta in (0.05 * case.max_ratio, case.max_ratio):
        e = S.exact_qrs(case.exact, case.log_q, beta)
        assert torch.logsumexp(e.log_p_beta, 0).item() == pytest.approx(0.0, abs=1e-12)
        brute = torch.minimum(log_target.exp(), beta * case.log_q.exp())
        assert e.acceptance == pytest.approx(brute.sum().item() / beta, rel=1e-9)
    # β ≥ max P/q: p_β = p and the acceptance rate is Z/β (rejection sampling with M = β)
    at_max = S.exact_qrs(case.exact, case.log_q, case.max_ratio)
    torch.testing.assert_close(at_max.log_p_beta.exp(), log_p.exp(), atol=1e-12, rtol=0)
    assert at_max.acceptance == pytest.approx(math.exp(case.exact.log_z) / case.max_ratio, rel=1e-9)
    # β → 0: min(P, β q) = β q wherever P > 0, so p_β is q restricted to the support of p
    tiny = S.exact_qrs(case.exact, case.log_q, 1e-12)
    support = log_target > float("-inf")
    q_on_support = torch.where(support, case.log_q.exp(), 0.0)
    torch.testing.assert_close(tiny.log_p_beta.exp(), q_on_support / q_on_support.sum(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["tilt/a", "pointwise/π"])
def test_exact_tv_and_kl_fall_as_beta_grows_and_vanish_at_the_max_ratio(cases, name):
    case = cases[name]
    m = case.max_ratio
    betas = [m * f for f in torch.logspace(-3, 0.5, 36, dtype=torch.float64).tolist()] + [m]
    rows = sorted((S.exact_qrs(case.exact, case.log_q, b) for b in betas), key=lambda r: r.beta)
    tvs, kls, accs = ([getattr(r, k) for r in rows] for k in ("tv", "kl", "acceptance"))
    for seq in (tvs, kls, accs):
        assert all(b <= a + 1e-12 for a, b in zip(seq, seq[1:], strict=False)), seq
    assert tvs[0] > tvs[-1] + 0.1 and kls[0] > kls[-1] + 0.1  # strictly falls, by a lot
    for r in rows:
        if r.beta >= m:
            assert r.tv < 1e-12 and abs(r.kl) < 1e-12, r
        else:
            assert r.tv > 0 and r.kl > 0, r
    below = S.exact_qrs(case.exact, case.log_q, 0.99 * m)
    assert below.tv > 0 and below.kl > 0  # just below max P/q, p_β still differs from p


# -- quasi-rejection: acceptance, distribution, diagnostics ----------------------------------------
BETA_FRACTIONS = (0.02, 0.1, 0.3, 1.0, 2.0)  # β as a fraction of max P/q


@pytest.mark.parametrize("name", ["tilt/a", "pointwise/π"])
def test_empirical_acceptance_rate_matches_exact_z_beta_over_beta(cases, pools, name):
    case, pool = cases[name], pools[name]
    gen = torch.Generator().manual_seed(1)
    report = []
    for fraction in BETA_FRACTIONS:
        beta = fraction * case.max_ratio
        exact = S.exact_qrs(case.exact, case.log_q, beta).acceptance
        rate = S.QuasiRejection(beta).accept(pool.log_target, pool.log_q, gen).double().mean().item()
        se = math.sqrt(exact * (1 - exact) / len(pool))
        report.append(f"β={beta:.4g}: rate {rate:.4f} exact {exact:.4f} ({(rate - exact) / se:+.2f} se)")
        assert abs(rate - exact) < SE_LIMIT * se, "\n".join(report)
    print(name, *report, sep="\n  ")


@pytest.mark.parametrize(("name", "fraction"), [("tilt/a", 0.2), ("pointwise/π", 0.05)])
def test_accepted_samples_follow_p_beta(cases, name, fraction):
    """Chi-square at level ALPHA against p_β, and the test has the power to tell p_β from p."""
    case = cases[name]
    beta = fraction * case.max_ratio
    exact = S.exact_qrs(case.exact, case.log_q, beta)
    assert exact.tv > 0.15  # p_β and p differ enough for the test to tell them apart
    sampler = S.Sampler(case.target, case.proposal, S.QuasiRejection(beta), PARAMS, proposals_per_round=2048)
    result = sampler.sample(N_ACCEPTED, generator=torch.Generator().manual_seed(2))
    assert len(result.scored) == N_ACCEPTED
    assert result.stats.accepted >= N_ACCEPTED and result.stats.proposed == len(result.proposal_log_q)
    counts = case.counts(result.scored.samples.texts)
    stat, df, pvalue = chi_square(counts, exact.log_p_beta)
    _, _, pvalue_p = chi_square(counts, case.exact.log_p)
    distance = empirical_tv(counts, exact.log_p_beta)
    noise = sampling_noise(exact.log_p_beta, N_ACCEPTED)
    print(
        f"{name} β={beta:.4g}: chi2 {stat:.1f} df {df} p={pvalue:.3f} (vs p: p={pvalue_p:.1e}); "
        f"TV(emp, p_β) {distance:.4f} (noise bound {noise:.4f}), TV(p, p_β) {exact.tv:.4f}"
    )
    assert pvalue > ALPHA
    assert pvalue_p < 1e-9  # the same counts reject p itself
    assert distance < noise
    se = result.stats.acceptance_stderr
    assert abs(result.stats.acceptance_rate - exact.acceptance) < SE_LIMIT * se
    (row,) = result.diagnostics([beta])  # IS on every proposal the run drew
    assert abs(row.acceptance.value - exact.acceptance) < SE_LIMIT * row.acceptance.stderr
    assert abs(row.tv.value - exact.tv) < SE_LIMIT * row.tv.stderr


@pytest.mark.parametrize("name", ["tilt/a", "pointwise/π"])
def test_is_diagnostics_agree_with_exact_values(cases, pools, name):
    case, pool = cases[name], pools[name]
    betas = [f * case.max_ratio for f in (0.02, 0.1, 0.3, 0.7, 1.0)]
    rows = S.qrs_diagnostics(pool.log_target, pool.log_q, betas)
    assert [r.beta for r in rows] == sorted(betas)
    report = []
    for row in rows:
        exact = S.exact_qrs(case.exact, case.log_q, row.beta)
        for what in ("acceptance", "tv", "kl"):
            e, x = getattr(row, what), getattr(exact, what)
            report.append(f"β={row.beta:.4g} {what}: {e} exact {x:.4f}")
            if x > 1e-12:
                assert e.stderr > 0, report[-1]
            assert abs(e.value - x) <= SE_LIMIT * e.stderr + 1e-12, "\n".join(report)
        assert 0 <= row.tv.value <= 1
    print(name, *report, sep="\n  ")


@pytest.mark.parametrize("name", ["tilt/a", "pointwise/π"])
def test_diagnostic_stderrs_match_the_spread_across_batches(cases, pools, name):
    """Over 20 disjoint batches of 1000, the mean reported stderr is within 3× of the observed
    standard deviation of the estimates (delta method, both normalisers estimated)."""
    case, pool = cases[name], pools[name]
    beta = 0.1 * case.max_ratio
    batches = [pool.select(range(i * 1000, (i + 1) * 1000)) for i in range(20)]
    ratios = {}
    for what, fn in (("acceptance", S.qrs_acceptance), ("tv", S.qrs_tv), ("kl", S.qrs_kl)):
        parts = [fn(b.log_target, b.log_q, beta) for b in batches]
        values = torch.tensor([p.value for p in parts])
        ratios[what] = (torch.tensor([p.stderr for p in parts]).mean() / values.std()).item()
    print(name, {k: round(v, 2) for k, v in ratios.items()})
    for what, ratio in ratios.items():
        assert 1 / 3 < ratio < 3, f"{name} {what}: stderr/spread = {ratio:.2f}; all: {ratios}"


def test_beta_for_acceptance_hits_the_wanted_rate(cases, pools):
    case, pool = cases["tilt/a"], pools["tilt/a"]
    t, q = pool.log_target, pool.log_q
    for rate in (0.8, 0.3, 0.05):  # 0.05 < Z/max w: the closed form β = Ẑ/rate
        beta = S.beta_for_acceptance(t, q, rate)
        assert S.qrs_acceptance(t, q, beta).value == pytest.approx(rate, rel=1e-9)
        exact = S.exact_qrs(case.exact, case.log_q, beta).acceptance
        assert abs(exact - rate) < 0.02, (rate, beta, exact)
    assert S.beta_for_acceptance(t, q, 0.05) > math.exp((t - q).max().item())
    other = pools["pointwise/π"]
    positive = (other.log_target > float("-inf")).double().mean().item()
    with pytest.raises(S.SamplingError, match="no β gives an acceptance rate"):
        S.beta_for_acceptance(other.log_target, other.log_q, min(1.0, positive + 0.01))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="acceptance rate must be in"):
            S.beta_for_acceptance(t, q, bad)


def test_default_betas_are_quantiles_of_the_weights(pools):
    pool = pools["pointwise/π"]
    betas = S.default_betas(pool.log_target, pool.log_q)
    assert betas == sorted(betas) and len(betas) >= 3
    assert betas[-1] == pytest.approx(math.exp((pool.log_target - pool.log_q).max().item()))
    rows = S.qrs_diagnostics(pool.log_target, pool.log_q, betas)
    assert rows[-1].tv.value == 0 and rows[-1].kl.value == 0  # no weight above the largest seen


# -- rejection sampling ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "log_bound"), [("pointwise/a", 0.0), ("tilt/a", 4.0)])
def test_rejection_sampling_gives_exact_draws_from_p(cases, name, log_bound):
    """q = a: M = 1 for a pointwise target; M = exp(max n_a) = e⁴ for the tilt exp(n_a)."""
    case = cases[name]
    assert case.max_ratio <= math.exp(log_bound) * (1 + 1e-6)
    sampler = S.Sampler(case.target, case.proposal, S.Rejection(log_bound=log_bound), PARAMS)
    result = sampler.sample(N_ACCEPTED, generator=torch.Generator().manual_seed(3))
    counts = case.counts(result.scored.samples.texts)
    stat, df, pvalue = chi_square(counts, case.exact.log_p)
    exact_rate = math.exp(case.exact.log_z - log_bound)  # Z/M
    st = result.stats
    print(
        f"{name} M=e^{log_bound:g}: chi2 {stat:.1f} df {df} p={pvalue:.3f}; acceptance "
        f"{st.acceptance_rate:.4f} ± {st.acceptance_stderr:.4f} vs Z/M {exact_rate:.4f}; "
        f"TV(emp, p) {empirical_tv(counts, case.exact.log_p):.4f}"
    )
    assert pvalue > ALPHA
    assert abs(st.acceptance_rate - exact_rate) < SE_LIMIT * st.acceptance_stderr
    if case.exact.evidence.satisfied is not None:
        assert result.scored.evidence.satisfied.all()


def test_rejection_refuses_a_sample_above_the_bound(cases):
    case = cases["pointwise/π"]  # P/q = a·b/π reaches ≈ 53: the bound M = 1 is wrong
    sampler = S.Sampler(case.target, case.proposal, S.Rejection(1.0), PARAMS)
    with pytest.raises(S.BoundExceededError, match=r"exceeds the bound M = exp\(0\) = 1 .*use quasi"):
        sampler.sample(100, generator=torch.Generator().manual_seed(0))
    tilt = cases["tilt/a"]  # P/q = exp(n_a) reaches e⁴ > e³
    sampler = S.Sampler(tilt.target, tilt.proposal, S.Rejection(log_bound=3.0), PARAMS)
    with pytest.raises(S.BoundExceededError, match="'a a a a'"):
        sampler.sample(2000, generator=torch.Generator().manual_seed(0))
    # within the tolerance (rounding between two forward passes) is accepted, beyond it is not
    rule = S.Rejection(2.0)
    log_q = torch.zeros(1, dtype=torch.float64)
    rule.check(torch.tensor([math.log(2.0) + 5e-5], dtype=torch.float64), log_q)
    with pytest.raises(S.BoundExceededError):
        rule.check(torch.tensor([math.log(2.0) + 1e-3], dtype=torch.float64), log_q)


# -- importance resampling ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tilt/a", "pointwise/π"])
def test_importance_resampling_approaches_p_as_the_pool_grows(cases, name):
    case = cases[name]
    k = 20_000
    distances = {}
    for pool in (50, 20_000):
        rule = S.ImportanceResampling(pool)
        resampler = S.Sampler(case.target, case.proposal, rule, PARAMS, proposals_per_round=4096)
        result = resampler.sample(k, generator=torch.Generator().manual_seed(4))
        assert len(result.scored) == k and result.stats.proposed == pool
        assert result.ess == pytest.approx(
            effective_sample_size(result.proposal_log_target, result.proposal_log_q)
        )
        assert 1 <= result.ess <= pool and result.distinct <= pool
        counts = case.counts(result.scored.samples.texts)
        distances[pool] = empirical_tv(counts, case.exact.log_p)
        if pool == 20_000:
            ess = result.ess
    # the pool is worth ~ESS draws from p, and resampling adds the noise of k more draws
    tolerance = sampling_noise(case.exact.log_p, round(ess)) + sampling_noise(case.exact.log_p, k)
    print(f"{name}: TV(resampled, p) {distances}; ESS {ess:.0f}, tolerance {tolerance:.4f}")
    assert distances[20_000] < min(tolerance, 0.05)
    assert distances[50] > 2 * distances[20_000]


def test_resample_refuses_a_pool_with_no_positive_weight():
    log_target = torch.full((4,), float("-inf"), dtype=torch.float64)
    with pytest.raises(ZeroPartitionError, match="none of the 4 samples"):
        S.resample(log_target, torch.zeros(4, dtype=torch.float64), 3)


# -- the loop: seeds, caps, errors ----------------------------------------------------------------
def test_one_loop_draws_as_its_rounds_and_coins_do(cases):
    """The loop's output for a seed is fixed by one order of random draws, the order of the two
    loops it replaced: accept/reject rules draw a round of proposals, then its coins, round after
    round, and return the first n accepted; resampling draws every round of the pool, then the
    resampling indices. Rebuilt here by hand from propose and the rules, draw for draw."""
    case = cases["pointwise/π"]

    def rounds(generator: torch.Generator, sizes: list[int]) -> list[Scored]:
        return [propose(case.target, case.proposal, k, PARAMS, generator=generator) for k in sizes]

    rule = S.QuasiRejection(2.0)
    result = S.Sampler(case.target, case.proposal, rule, PARAMS, proposals_per_round=64).sample(
        100, generator=torch.Generator().manual_seed(5)
    )
    gen, kept, drawn = torch.Generator().manual_seed(5), [], []
    while sum(len(k) for k in kept) < 100:
        (batch,) = rounds(gen, [64])
        accepted = rule.accept(batch.log_target, batch.log_q, gen)
        drawn.append(batch)
        kept.append(batch.select(accepted.nonzero().squeeze(1)))
    by_hand = Scored.concat(kept).samples.texts[:100]
    assert len(drawn) >= 3  # several rounds, so the order of draws across rounds is exercised
    assert result.texts == by_hand
    assert result.stats.proposed == 64 * len(drawn) and result.stats.accepted == len(Scored.concat(kept))
    torch.testing.assert_close(result.proposal_log_q, Scored.concat(drawn).log_q, rtol=0, atol=0)

    rule = S.ImportanceResampling(pool=300)
    result = S.Sampler(case.target, case.proposal, rule, PARAMS, proposals_per_round=128).sample(
        50, generator=torch.Generator().manual_seed(4)
    )
    gen = torch.Generator().manual_seed(4)
    pool = Scored.concat(rounds(gen, [128, 128, 44]))
    index = S.resample(pool.log_target, pool.log_q, 50, gen)
    assert result.texts == pool.select(index).samples.texts
    assert result.stats.proposed == 300 and result.ess == pytest.approx(
        effective_sample_size(pool.log_target, pool.log_q), rel=1e-12
    )


def test_sampler_is_repeatable_with_a_seed(cases):
    case = cases["pointwise/π"]
    sampler = S.Sampler(case.target, case.proposal, S.QuasiRejection(2.0), PARAMS, proposals_per_round=64)

    def texts(seed: int) -> list[str]:
        return sampler.sample(200, generator=torch.Generator().manual_seed(seed)).texts

    assert texts(5) == texts(5)
    assert texts(5) != texts(6)


def test_no_acceptance_stops_early_with_a_clear_error(prior):
    never = Target.pointwise(prior, [WordScorer(("zzz",), name="zzz")])
    sampler = S.Sampler(never, prior, S.Rejection(1.0), PARAMS, max_proposals=100_000)
    stats: list[S.SamplerStats] = []
    with pytest.raises(
        S.LowAcceptanceError, match=r"0 of \d+ proposals accepted.*none of them has P"
    ) as info:
        sampler.sample(50, generator=torch.Generator().manual_seed(0), on_round=stats.append)
    assert stats[-1].proposed < 20_000  # it did not run to the cap of 100,000
    assert "quasi-rejection" in str(info.value)


def test_low_acceptance_beyond_the_cap_is_refused(cases):
    case = cases["tilt/a"]
    beta = 1e4 * case.max_ratio  # acceptance Z/β ≈ 2.7e-5
    sampler = S.Sampler(case.target, case.proposal, S.QuasiRejection(beta), PARAMS, max_proposals=4096)
    with pytest.raises(S.LowAcceptanceError, match="more than the cap of 4,096.*lower β"):
        sampler.sample(10, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_beta_and_bound_must_be_positive_and_finite(cases, bad):
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        S.QuasiRejection(bad)
    with pytest.raises(ValueError, match="bound must be a positive finite number"):
        S.Rejection(bad)
    case = cases["tilt/a"]
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        S.exact_qrs(case.exact, case.log_q, bad)
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        S.qrs_tv(case.exact.log_target, case.log_q, bad)


# -- the command line -----------------------------------------------------------------------------
def sample_cli(out: Path, *args: str) -> int:
    return main(["sample", str(CONFIG), "--out", str(out), *args])


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_rejection_writes_n_samples_that_satisfy_the_constraint(tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    assert sample_cli(out, "--n", "60", "--method", "rejection") == 0
    rows = read_rows(out)
    assert len(rows) == 60
    assert all("b" in r["text"].split() and r["word"] == 1.0 for r in rows)
    assert all(r["log_target"] == pytest.approx(r["log_a"]) for r in rows)  # b = 1: log P = log a
    err = " ".join(capsys.readouterr().err.split())
    assert "wrote 60 samples" in err and "rejection, M = 1" in err


def test_cli_qrs_prints_the_diagnostic_table_and_is_repeatable(tmp_path, capsys):
    outs = [tmp_path / f"s{i}.jsonl" for i in range(2)]
    for out in outs:
        assert sample_cli(out, "--n", "40", "--method", "qrs", "--beta", "0.5", "--set", "sample.seed=3") == 0
    assert outs[0].read_text() == outs[1].read_text()
    err = capsys.readouterr().err
    assert "TV(p, p_β)" in err and "KL(p‖p_β)" in err and "0.5 ←" in err
    out = tmp_path / "acc.jsonl"
    assert sample_cli(out, "--n", "30", "--method", "qrs", "--acceptance", "0.3") == 0
    assert len(read_rows(out)) == 30
    assert "estimated acceptance rate 0.3 on the pilot" in capsys.readouterr().err


def test_cli_importance_resampling_writes_n_samples(tmp_path, capsys):
    out = tmp_path / "sir.jsonl"
    assert sample_cli(out, "--n", "50", "--method", "importance", "--pool", "400") == 0
    rows = read_rows(out)
    assert len(rows) == 50 and all(r["word"] == 1.0 for r in rows)  # weight 0 is never resampled
    assert "from 400 proposals" in " ".join(capsys.readouterr().err.split())


def test_cli_samples_with_a_trained_policy_as_proposal(tmp_path, capsys):
    run = tmp_path / "run"
    fast = ["--set", "eval.samples=64", "--set", "training.batch_size=32", "--set", "eval.every=2"]
    assert main(["train", str(CONFIG), "--out", str(run), "--set", "training.steps=2", *fast]) == 0
    out = tmp_path / "s.jsonl"
    assert (
        sample_cli(out, "--n", "40", "--method", "qrs", "--beta", "2", "--proposal", str(run / "final")) == 0
    )
    assert len(read_rows(out)) == 40
    assert f"q = {run / 'final'}" in " ".join(capsys.readouterr().err.split())
    # rejection with a trained proposal: M = 1 no longer holds, and no bound was given
    assert sample_cli(tmp_path / "r.jsonl", "--n", "5", "--method", "rejection", "--proposal", str(run)) == 2
    assert "needs a bound M" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "rejectoin"], "unknown sampling method 'rejectoin'; did you mean 'rejection'"),
        (["--method", "qrs", "--beta", "0"], "sample.beta: Input should be greater than 0"),
        (["--method", "qrs", "--beta", "-2"], "sample.beta: Input should be greater than 0"),
        (["--method", "qrs"], "needs --beta B"),
        (["--method", "qrs", "--beta", "1", "--acceptance", "0.2"], "give beta or acceptance"),
        (["--method", "qrs", "--bound", "1"], "sample.bound does not apply to method 'qrs'"),
        (["--method", "qrs", "--beta", "1", "--proposal", "/no/such/run"], "/no/such/run does not exist"),
        (["--method", "rejection", "--set", "sampling.temperature=0.7"], "sampling is not ancestral"),
        (["--method", "rejection", "--n", "0"], "--n must be >= 1"),
        (["--method", "rejection", "--set", f"target.distributional={HALF_A}"], "distributional constraints"),
    ],
)
def test_cli_bad_input_fails_before_loading_a_model(tmp_path, capsys, monkeypatch, args, message):
    def no_models(*_, **__):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("bayesalign.config.build.build_models", no_models)  # cli imports it per call
    n = [] if "--n" in args else ["--n", "5"]
    assert sample_cli(tmp_path / "s.jsonl", *n, *args) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "s.jsonl").exists()


def test_cli_qrs_from_a_distributional_target(tmp_path, capsys):
    """λ is fitted (seeded) before sampling; P/q = exp(λ·φ)·b is then unbounded by 1, so QRS."""
    out = tmp_path / "s.jsonl"
    args = ["--n", "30", "--method", "qrs", "--acceptance", "0.2", "--set", f"target.distributional={HALF_A}"]
    assert sample_cli(out, *args) == 0
    rows = read_rows(out)
    assert len(rows) == 30 and all(r["word"] == 1.0 and "has_a" in r for r in rows)
    assert "TV(p, p_β)" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_and_reports_no_acceptance(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    out.write_text("keep me\n")
    assert sample_cli(out, "--n", "5", "--method", "rejection") == 2
    assert "already exists; pass --overwrite" in " ".join(capsys.readouterr().err.split())
    assert out.read_text() == "keep me\n"
    never = "target.constraints=[{type: word, words: [zzz]}]"
    assert sample_cli(out, "--n", "5", "--method", "rejection", "--overwrite", "--set", never) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "0 of" in err and "none of them has P(x) > 0" in err
    assert out.read_text() == "keep me\n"  # nothing written on failure


def test_a_draw_without_the_prior_pass_keeps_the_samples_and_refuses_weights(cases):
    """propose(prior="none") (plain REINFORCE's training draws) gives the same samples, log q and
    evidence as a full draw, no log a or log P, and cannot be mixed with full draws."""
    case = cases["pointwise/π"]

    def draw(seed: int, prior: PriorPass) -> Scored:
        generator = torch.Generator().manual_seed(seed)
        return propose(case.target, case.proposal, 16, PARAMS, generator=generator, prior=prior)

    full, bare = draw(0, "all"), draw(0, "none")
    assert bare.samples.texts == full.samples.texts
    torch.testing.assert_close(bare.log_q, full.log_q, rtol=0, atol=0)
    torch.testing.assert_close(bare.evidence.scores["has_b"], full.evidence.scores["has_b"])
    assert bare.log_target is None and bare.token_log_a is None
    with pytest.raises(ValueError, match="skipped the prior's pass"):
        _ = bare.log_weight
    joined = Scored.concat([bare, draw(1, "none")])
    assert len(joined) == 32 and joined.log_target is None
    assert joined.select([0, 31]).samples.texts == [bare.samples.texts[0], joined.samples.texts[31]]
    assert "log_target" not in joined.rows()[0] and "log_target" in full.rows()[0]
    with pytest.raises(ValueError, match="with and without the prior's pass"):
        Scored.concat([full, bare])


def test_a_draw_on_the_support_runs_the_prior_only_where_p_is_positive(cases, monkeypatch):
    """propose(prior="support") (DPG's and GDC++'s training draws) gives the full draw's log P
    on every sample (−∞ exactly where b = 0) while the prior's forward sees only the samples
    with b = 1; it has no per-token log a, and mixes with neither other kind of draw."""
    case = cases["pointwise/π"]
    seen: list[int] = []
    forward = case.target.base.token_log_probs_frozen
    monkeypatch.setattr(
        case.target.base,
        "token_log_probs_frozen",
        lambda samples, *a, **k: seen.append(len(samples)) or forward(samples, *a, **k),
    )

    def draw(prior: PriorPass) -> Scored:
        generator = torch.Generator().manual_seed(0)
        return propose(case.target, case.proposal, 64, PARAMS, generator=generator, prior=prior)

    full, support = draw("all"), draw("support")
    satisfied = int(full.evidence.scores["has_b"].sum())
    assert 0 < satisfied < 64 and seen == [64, satisfied]
    assert support.samples.texts == full.samples.texts
    torch.testing.assert_close(support.log_target, full.log_target, rtol=0, atol=1e-5)
    assert torch.isneginf(support.log_target).sum() == 64 - satisfied
    assert support.token_log_a is None and support.scored_prior
    torch.testing.assert_close(support.log_weight, full.log_weight, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="only where P"):
        _ = support.log_a
    assert len(Scored.concat([support, draw("support")])) == 128
    for other in (full, draw("none")):
        with pytest.raises(ValueError, match="with and without the prior's pass"):
            Scored.concat([support, other])


# -- sample(): `bayesalign sample` as a Python function --------------------------------------------
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("pointwise/a", S.SampleArgs(method="rejection", seed=1)),
        ("pointwise/π", S.SampleArgs(method="qrs", beta=2.0, proposals_per_round=1024, seed=2)),
        ("tilt/a", S.SampleArgs(method="qrs", acceptance=0.3, proposals_per_round=2048, seed=3)),
    ],
)
def test_sample_follows_the_exact_law_of_its_rule(cases, name, args):
    """Rejection gives p, QRS gives p_β (β given, or chosen on a pilot for a rate): chi-square
    at level ALPHA against the exact law, and the acceptance rate within SE_LIMIT binomial se."""
    case = cases[name]
    betas: list[float] = []
    run = S.sample(case.target, case.proposal, N_ACCEPTED, args, params=PARAMS, on_beta=betas.append)
    beta = run.rule.beta
    assert betas == ([] if args.acceptance is None else [beta])  # announced once, before sampling
    assert (run.pilot is None) == (args.acceptance is None)
    law = S.exact_qrs(case.exact, case.log_q, beta)
    log_p = case.exact.log_p if args.method == "rejection" else law.log_p_beta
    counts = case.counts(run.result.texts)
    stat, df, pvalue = chi_square(counts, log_p)
    st = run.result.stats
    print(
        f"{name} {run.rule.describe()}: chi2 {stat:.1f} df {df} p={pvalue:.3f}, rate {st.acceptance_rate:.4f}"
    )
    assert len(run.result) == N_ACCEPTED and pvalue > ALPHA
    assert abs(st.acceptance_rate - law.acceptance) < SE_LIMIT * st.acceptance_stderr
    if args.method == "qrs":  # the table of the command: IS on pilot + loop proposals, β marked
        table = run.table
        seen = st.proposed + (0 if run.pilot is None else len(run.pilot))
        assert table.chosen == beta and table.proposals == seen and beta in [r.beta for r in table.rows]
        (row,) = [r for r in table.rows if r.beta == beta]
        assert abs(row.tv.value - law.tv) < SE_LIMIT * row.tv.stderr + 1e-12
    if args.acceptance is not None:  # the pilot chose β for the rate; exactly it gives about that
        assert abs(law.acceptance - args.acceptance) < 0.03
    else:
        assert run.table is None or run.table.chosen == beta


def test_sample_resamples_towards_p(cases):
    case = cases["tilt/a"]
    run = S.sample(
        case.target, case.proposal, 20_000, S.SampleArgs(method="importance", pool=20_000), params=PARAMS
    )
    assert run.table is None and run.result.stats.proposed == 20_000
    distance = empirical_tv(case.counts(run.result.texts), case.exact.log_p)
    tolerance = sampling_noise(case.exact.log_p, round(run.result.ess)) + sampling_noise(
        case.exact.log_p, 20_000
    )
    assert distance < tolerance


@pytest.mark.parametrize(
    ("kwargs", "flags"),
    [
        (dict(method="qrs"), ["--method", "qrs"]),
        (dict(method="qrs", bound=1.0), ["--method", "qrs", "--bound", "1"]),
        (dict(method="importance", beta=2.0), ["--method", "importance", "--beta", "2"]),
        (dict(method="rejection"), ["--method", "rejection", "--set", "sampling.temperature=0.7"]),
    ],
)
def test_sample_refuses_bad_input_with_the_error_the_command_prints(cases, tmp_path, capsys, kwargs, flags):
    case = cases["pointwise/a"]
    with pytest.raises(S.SamplingError) as info:
        args = S.SampleArgs(**kwargs)  # the options alone are checked at construction
        params = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.7)  # q ≠ a: M = 1 fails
        S.sample(case.target, case.proposal, 5, args, params=params)
    assert sample_cli(tmp_path / "s.jsonl", "--n", "5", *flags) == 2
    assert capsys.readouterr().err.split() == ["error:", *str(info.value).split()]


def test_sample_refuses_rejection_without_a_bound_from_a_trained_proposal(cases):
    """M = 1 holds for q = a only: the check reads the objects, as the CLI reads its config."""
    case = cases["pointwise/π"]
    with pytest.raises(S.SamplingError, match="needs a bound M ≥ P/q .* the proposal is a trained policy"):
        S.sample(case.target, case.proposal, 5, S.SampleArgs(method="rejection"), params=PARAMS)
    tilt = cases["tilt/a"]
    with pytest.raises(S.SamplingError, match="the target has a reward tilt"):
        S.sample(tilt.target, tilt.proposal, 5, S.SampleArgs(method="rejection"), params=PARAMS)
    run = S.sample(
        tilt.target, tilt.proposal, 5, S.SampleArgs(method="rejection", bound=math.e**4), params=PARAMS
    )
    assert len(run.result) == 5


def test_the_sampling_page_example_runs():
    """docs/api/sampling.md's example runs as written."""
    page = (Path(__file__).parents[1] / "docs" / "api" / "sampling.md").read_text()
    (code,) = [block.split("\n", 1)[1] for block in page.split("```")[1::2] if block.startswith("python")]
    exec(compile(code, "docs/api/sampling.md", "exec"), {})
