"""The twisted prior π ∝ a·σ(u_θ) (twisted.py) and its fit by regression on samples of a
(twist_fit.py), checked exactly on an enumerated space: π = a at the start, the fit brings
KL(p‖π) near 0, the KV-cached sampling pass gives the same log π as scoring, a saved model loads
back to the same distribution, and targets a twist cannot represent are refused."""

from __future__ import annotations

import pytest
import torch

from bayesalign.exact import ExactTarget, SequenceSpace, kl
from bayesalign.models import LanguageModel, make_policy
from bayesalign.objectives.twist import twist_terms
from bayesalign.runs.saved_policy import load_proposal
from bayesalign.samples import SamplingParams
from bayesalign.scorers import WordScorer
from bayesalign.targets import Target
from bayesalign.toy import toy_model
from bayesalign.twist_fit import TwistFitSettings, TwistFitter

LENGTH = 4


LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "fan_in_fan_out": True}


@pytest.fixture(
    scope="module",
    params=[
        {"head": "vocabulary"},
        {"head": "embedding"},
        {"head": "embedding", "lora": LORA},
        {"head": "embedding", "trunk": "prior"},
    ],
    ids=["vocabulary", "embedding", "embedding-lora", "embedding-prior-trunk"],
)
def fitted(request):
    prior = toy_model(["a", "b", "c"], seed=3)  # stops early often: the sampling pass compacts
    target = Target.pointwise(prior, [WordScorer(("b",))])
    exact = ExactTarget.build(target, SequenceSpace(prior, LENGTH))
    settings = TwistFitSettings(
        lr=1e-2, batch_size=64, minibatch_size=64, updates_per_step=2, **request.param
    )
    fitter = TwistFitter(target, SamplingParams(LENGTH), settings)
    start = fitter.model.log_prob_frozen(exact.space.samples).double()
    for _ in range(50):
        fitter.step()
    return fitter, exact, start


def test_the_twist_starts_at_the_prior(fitted):
    _, exact, start = fitted
    torch.testing.assert_close(start, exact.log_a, atol=1e-5, rtol=0)


def test_the_fit_brings_pi_close_to_the_posterior(fitted):
    fitter, exact, _ = fitted
    log_pi = fitter.model.log_prob_frozen(exact.space.samples).double()
    assert torch.logsumexp(log_pi, 0).item() == pytest.approx(0.0, abs=1e-5)  # π is normalised
    before, after = kl(exact.log_p, exact.log_a), kl(exact.log_p, log_pi)
    assert before > 2.5  # b is rare under a: −log Z ≈ 3.0
    # 3.01 → 0.015–0.10 after 50 steps of 64 samples; a head on the random toy's own states
    # cannot represent Q as well (measured 0.41: the toy's states are not a pretrained model's)
    assert after < (0.2 if fitter.settings.trunk == "prior" else 0.1) * before, after
    assert fitter.steps == 50 and len(fitter.labels) == 50 * 64


def test_the_targets_are_b_at_the_end_and_the_next_tokens_expected_twist_before(fitted):
    """Bellman's equation under a, checked against the model's own next-token logits: the
    twisted logits log a + log σ(u) at the position after x_t sum (in probability) to V(x≤t)."""
    fitter, _, _ = fitted
    draw = fitter.target.base.sample(40, SamplingParams(LENGTH), generator=torch.Generator().manual_seed(5))
    labels = fitter.target.evidence(draw).log_factor.exp().float()
    terms = twist_terms(fitter.model.module, draw, labels)
    u, targets = terms.logits, terms.targets
    with torch.no_grad():
        logits = fitter.model.generated_logits(draw)[0]  # position t predicts x_t
    lengths = draw.mask.sum(1)
    # on the way, log π at each drawn token: the scored model's own
    scored = torch.log_softmax(logits, -1).gather(-1, draw.ids[..., None]).squeeze(-1) * draw.mask
    torch.testing.assert_close(terms.token_log_probs, scored, atol=1e-5, rtol=0)
    assert labels.min() == 0 and labels.max() == 1
    for row in range(len(draw)):
        end = lengths[row] - 1
        assert targets[row, end] == labels[row]
        expected = logits[row, 1 : end + 1].logsumexp(-1).exp()
        torch.testing.assert_close(targets[row, :end], expected, atol=1e-5, rtol=0)
        twist = logits[row, torch.arange(end + 1), draw.ids[row, : end + 1]]  # log a + log σ(u) at x_t
        log_a = fitter.target.base.token_log_probs_frozen(draw.select([row]))[0, : end + 1]
        torch.testing.assert_close(
            torch.nn.functional.logsigmoid(u[row, : end + 1]), twist - log_a, atol=1e-5, rtol=0
        )


def test_sampling_log_q_is_the_scored_log_pi(fitted):
    """The sampling pass (both KV caches, rows leaving it as they stop) and a scoring pass agree."""
    fitter, _, _ = fitted
    draw = fitter.model.sample(300, SamplingParams(LENGTH), generator=torch.Generator().manual_seed(4))
    stopped = (~draw.mask[:, -1]).sum().item()
    assert stopped > 60, stopped  # enough rows stopped early to compact the pass
    torch.testing.assert_close(draw.log_q, fitter.model.log_prob_frozen(draw), atol=1e-5, rtol=0)


def test_a_saved_twisted_model_loads_back_as_the_same_distribution(fitted, tmp_path):
    fitter, exact, _ = fitted
    fitter.model.save_pretrained(tmp_path / "pi")
    files = {p.name for p in (tmp_path / "pi").rglob("*")}
    assert {"twisted.json", "head.safetensors", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = LanguageModel.from_pretrained(tmp_path / "pi")
    torch.testing.assert_close(
        loaded.log_prob_frozen(exact.space.samples), fitter.model.log_prob_frozen(exact.space.samples)
    )
    # what `bayesalign eval --policy` and `bayesalign sample --proposal` load
    proposal = load_proposal(tmp_path / "pi", fitter.target.base)
    torch.testing.assert_close(
        proposal.log_prob_frozen(exact.space.samples), fitter.model.log_prob_frozen(exact.space.samples)
    )


def test_targets_and_priors_a_twist_cannot_represent_are_refused():
    prior = toy_model(["a", "b", "c"], seed=1)
    tilt = Target.tilt(prior, WordScorer(("b",)), beta=1.0)
    with pytest.raises(ValueError, match="pointwise constraints only.*Tilt"):
        TwistFitter(tilt, SamplingParams(LENGTH))
    make_policy(prior, lora={"r": 2, "target_modules": ["c_attn"]})
    with pytest.raises(ValueError, match="no LoRA"):
        TwistFitter(Target.pointwise(prior, [WordScorer(("b",))]), SamplingParams(LENGTH))
    with pytest.raises(ValueError, match="updates_per_step must be ≥ 1"):
        TwistFitSettings(updates_per_step=0)
    with pytest.raises(ValueError, match="minibatch_size must be ≥ 1"):
        TwistFitSettings(minibatch_size=0)
    with pytest.raises(ValueError, match="unknown twist head 'linear'"):
        TwistFitSettings(head="linear")


def test_a_step_adds_a_batch_of_a_and_updates_on_minibatches_of_the_buffer(monkeypatch):
    prior = toy_model(["a", "b", "c"], seed=3)
    target = Target.pointwise(prior, [WordScorer(("b",))])
    settings = TwistFitSettings(batch_size=32, minibatch_size=12, updates_per_step=3)
    fitter = TwistFitter(target, SamplingParams(LENGTH), settings)
    seen: list[torch.Tensor] = []
    update = fitter.update
    monkeypatch.setattr(fitter, "update", lambda index: seen.append(index) or update(index))
    for _ in range(2):
        fitter.step()
    assert len(fitter.labels) == 64 and [len(i) for i in seen] == [12] * 6
    assert max(i.max().item() for i in seen[:3]) < 32  # the first updates only know the first batch
