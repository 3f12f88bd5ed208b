"""Conditional targets P_c(x) = a(x|c)·b(x, c) and CDPG, on an enumerable conditional space.

Three contexts of a toy model whose normalisers differ 15-fold (Z_c = 0.77, 0.32, 0.05): each
context's p_c is enumerated exactly, so the mean per-context KL(p_c‖π) that CDPG should drive
down, and the worse fit of a DPG that uses one global Z, are exact numbers, not estimates.
"""

from __future__ import annotations

import copy
import json
import math
import sys

import pytest
import torch

from bayesalign.config import ConfigError, apply_overrides, parse_config
from bayesalign.config.build import build_models, build_objective
from bayesalign.contexts import ContextError, group_by_context, load_contexts, step_contexts
from bayesalign.exact import ExactTarget, SequenceSpace
from bayesalign.metrics import bleu
from bayesalign.models import make_policy
from bayesalign.objectives import CDPG, Batch, PolicyOutput
from bayesalign.proposals import propose
from bayesalign.scorers import CallableScorer
from bayesalign.scorers.conditional import NamesSubsetScorer, NumbersAsDigitsScorer
from bayesalign.targets import Target
from bayesalign.toy import toy_model
from bayesalign.training import RunFolder, Trainer

CONTEXTS = ["a", "b b", "c c c"]


def enough(text: str, context: str) -> bool:
    """b(x, c): x repeats c's word at least as often as c does ("c c c": three c's in ≤ 4 tokens)."""
    words = context.split()
    return text.split().count(words[0]) >= len(words)


ENOUGH = CallableScorer(enough, boolean=True, takes_context=True, name="enough")

BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "contexts": {"train": CONTEXTS, "per_step": 3},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},  # replaced by b(x, c) below
    "training": {
        "method": "cdpg",
        "steps": 150,
        "batch_size": 192,
        "lr": 1e-2,
        "proposal": {"update": "fixed"},
    },
    "eval": {"every": 50, "samples": 96, "exact": True},
}


def make_trainer(*overrides: str, run: RunFolder | None = None) -> Trainer:
    cfg = parse_config(apply_overrides(copy.deepcopy(BASE), overrides))
    policy, prior = build_models(cfg.model, cfg.prompt, cfg.training.seed)
    target = Target.pointwise(prior, [ENOUGH])
    return Trainer(policy, target, build_objective(cfg.training, target), cfg, run)


def test_the_contexts_normalisers_differ_by_more_than_ten_fold():
    prior = toy_model(["a", "b", "c"], seed=1)
    target = Target.pointwise(prior, [ENOUGH])
    z = [math.exp(ExactTarget.build(target, SequenceSpace(prior, 4, context=c)).log_z) for c in CONTEXTS]
    assert max(z) / min(z) > 10, z


# -- CDPG against a global Z ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs() -> dict[str, list[dict]]:
    return {method: make_trainer(f"training.method={method}").fit() for method in ("cdpg", "dpg")}


def test_cdpg_drives_the_mean_per_context_kl_towards_zero(runs):
    first, last = runs["cdpg"][0], runs["cdpg"][-1]
    assert first["exact_kl_p_pi"] > 1.0
    assert last["exact_kl_p_pi"] < 0.15, [r["exact_kl_p_pi"] for r in runs["cdpg"]]
    assert last["exact_kl_p_pi_max"] < 0.3  # every context, the hardest included


def test_a_global_z_fits_the_contexts_worse(runs):
    """Plain DPG on (c, x) pairs weights each context's samples by P_c/(Z·q) with one mixture Z:
    the contexts with a large Z_c dominate the gradient. Measured here: about twice CDPG's KL."""
    cdpg, dpg = runs["cdpg"][-1], runs["dpg"][-1]
    assert dpg["exact_kl_p_pi"] > 1.5 * cdpg["exact_kl_p_pi"], (dpg["exact_kl_p_pi"], cdpg["exact_kl_p_pi"])


def test_per_context_estimates_are_averaged_over_the_evaluation_contexts(runs):
    record = runs["cdpg"][0]  # at step 0, π = a: KL(p_c‖a) = −log Z_c, estimated per context
    prior = toy_model(["a", "b", "c"], seed=1)
    target = Target.pointwise(prior, [ENOUGH])
    mean_log_z = (
        sum(ExactTarget.build(target, SequenceSpace(prior, 4, context=c)).log_z for c in CONTEXTS) / 3
    )
    assert record["exact_kl_p_pi"] == pytest.approx(-mean_log_z, rel=1e-5)
    assert abs(record["log_z"] - mean_log_z) < 4 * record["log_z_stderr"] + 0.05
    assert record["eval_contexts_without_support"] == 0


# -- the weights ---------------------------------------------------------------------------------------
def context_batch(prior, n_per_context: int, seed: int) -> Batch:
    target = Target.pointwise(prior, [ENOUGH])
    contexts = [c for c in CONTEXTS for _ in range(n_per_context)]
    draw = propose(
        target, prior, len(contexts), generator=torch.Generator().manual_seed(seed), contexts=contexts
    )
    return Batch(draw.samples, draw.log_q, draw.log_target, draw.evidence, float("nan"))


def test_on_policy_normalised_weights_average_one_per_context():
    prior = toy_model(["a", "b", "c"], seed=1)
    batch = context_batch(prior, 64, seed=0)
    objective = CDPG()
    weights = objective.prepare(batch, PolicyOutput.of_sequences(batch.log_q)).extras["weight"]
    for context, rows in group_by_context(batch.samples.contexts).items():
        assert weights[rows].mean().item() == pytest.approx(1.0, rel=1e-12), context
        satisfied = batch.evidence.satisfied[rows]
        assert (weights[rows][~satisfied] == 0).all()
        # the running normaliser is this context's own mean P/q, not the batch's
        assert objective.log_z(context) == pytest.approx(
            math.log((batch.log_target[rows] - batch.log_q[rows]).exp().mean().item()), rel=1e-9
        )


def test_recurring_contexts_share_a_running_normaliser_and_it_survives_a_checkpoint():
    prior = toy_model(["a", "b", "c"], seed=1)
    first, second = context_batch(prior, 16, seed=0), context_batch(prior, 16, seed=1)
    objective = CDPG()
    for batch in (first, second):
        objective.prepare(batch, PolicyOutput.of_sequences(batch.log_q))
    for context in CONTEXTS:
        log_w = torch.cat(
            [
                b.log_target[r] - b.log_q[r]
                for b in (first, second)
                for r in [group_by_context(b.samples.contexts)[context]]
            ]
        )
        assert objective.log_z(context) == pytest.approx(
            torch.logsumexp(log_w, 0).item() - math.log(32), rel=1e-9
        )
    restored = CDPG()
    restored.load_state_dict(objective.state_dict())
    assert [restored.log_z(c) for c in CONTEXTS] == [objective.log_z(c) for c in CONTEXTS]
    assert math.isnan(restored.log_z("never seen"))


def test_cdpg_refuses_samples_without_contexts():
    prior = toy_model(["a", "b", "c"], seed=1)
    target = Target.pointwise(prior, [CallableScorer(lambda t: "b" in t, boolean=True)])
    draw = propose(target, prior, 8, generator=torch.Generator().manual_seed(0))
    batch = Batch(draw.samples, draw.log_q, draw.log_target, draw.evidence, 0.0)
    with pytest.raises(ValueError, match="cdpg needs samples with contexts"):
        CDPG().prepare(batch, PolicyOutput.of_sequences(batch.log_q))


# -- contexts: files, steps and config ----------------------------------------------------------------
def test_contexts_load_from_text_and_jsonl_files(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("def f(x):\n\n  two words  \n")
    assert load_contexts(text) == ["def f(x):", "  two words  "]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps({"src": "one"}) + "\n" + json.dumps({"src": "two"}) + "\n")
    assert load_contexts(jsonl, field="src") == ["one", "two"]
    assert load_contexts(["x", "y"]) == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"src": "one"}\nnot json\n', r"c\.jsonl:2: not JSON"),
        ('{"text": "one"}\n', r"c\.jsonl:1: no field 'src' \(set contexts\.field\)"),
        ('{"src": ""}\n', "context 0 is not a non-empty string"),
        ("\n\n", "holds no context"),
    ],
)
def test_bad_contexts_files_are_named(tmp_path, content, pattern):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(ContextError, match=pattern):
        load_contexts(path, field="src")
    with pytest.raises(ContextError, match="does not exist"):
        load_contexts(tmp_path / "missing.txt")


def test_a_step_draws_distinct_contexts_with_equal_shares():
    contexts = [f"c{i}" for i in range(10)]
    chosen = step_contexts(contexts, 4, 12, torch.Generator().manual_seed(0))
    groups = group_by_context(chosen)
    assert len(groups) == 4 and all(len(rows) == 3 for rows in groups.values())
    with pytest.raises(ContextError, match="only 10 contexts"):
        step_contexts(contexts, 11, 11, torch.Generator())


def test_config_ties_contexts_to_batches_and_methods():
    raw = copy.deepcopy(BASE)
    with pytest.raises(ConfigError, match="must be a multiple of contexts.per_step 3"):
        parse_config(apply_overrides(raw, ["training.batch_size=100"]))
    no_contexts = copy.deepcopy(BASE)
    del no_contexts["contexts"]
    with pytest.raises(ConfigError, match="method 'cdpg' needs a contexts section"):
        parse_config(no_contexts)
    with pytest.raises(ConfigError, match="unknown key 'per_steps'; did you mean 'per_step'"):
        parse_config(apply_overrides(copy.deepcopy(BASE), ["contexts.per_steps=2"]))


# -- conditional scorers ------------------------------------------------------------------------------
def test_numbers_as_digits_needs_every_number_word_of_the_source():
    scorer = NumbersAsDigitsScorer()
    sources = ["Il a trois chats: three cats and twenty dogs", "three", "no number here", "Eleven"]
    outputs = ["He has 3 cats and 20 dogs", "three", "anything", "11 players"]
    assert scorer(outputs, sources).tolist() == [1.0, 0.0, 1.0, 1.0]
    assert scorer(["20 dogs and 3 cats"], [sources[0]]).tolist() == [1.0]  # order does not matter
    assert scorer(["23 cats"], ["three"]).tolist() == [0.0]  # digits as a whole number, not a substring
    with pytest.raises(ValueError, match="conditional, b\\(x, c\\): it needs one context per text"):
        scorer(["3"])


def test_names_subset_refuses_names_the_source_lacks():
    scorer = NamesSubsetScorer()
    sources = ["Alice et Bob à Paris", "Alice et Bob", "Le chat dort. Bob aussi."]
    outputs = ["Alice met Bob in Paris.", "Alice met Carol.", "The cat sleeps. So does Bob."]
    # "The" and "So" start sentences: not names; "Carol" is not in the source
    assert scorer(outputs, sources).tolist() == [1.0, 0.0, 1.0]


# -- encoder-decoder (seq2seq) models: the context is the encoder's input ---------------------------
@pytest.fixture(scope="module")
def seq2seq():
    return toy_model(["a", "b", "c"], seed=1, architecture="t5")


def test_seq2seq_log_probs_normalise_and_match_the_sampling_pass(seq2seq):
    distributions = []
    for context in CONTEXTS:
        log_p = SequenceSpace(seq2seq, 4, context=context).log_prob(seq2seq)
        assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-6)
        distributions.append(log_p)
    assert (distributions[0] - distributions[2]).abs().max() > 0.5  # the context matters
    contexts = [c for c in CONTEXTS for _ in range(8)]
    samples = seq2seq.sample(len(contexts), contexts=contexts, generator=torch.Generator().manual_seed(0))
    assert samples.contexts == contexts
    torch.testing.assert_close(samples.log_q, seq2seq.log_prob_frozen(samples), rtol=0, atol=1e-5)


def test_cdpg_trains_a_seq2seq_model_towards_every_context_target():
    records = make_trainer(
        "model.toy={architecture: t5, words: [a, b, c], seed: 1}", "training.steps=100"
    ).fit()
    assert records[0]["exact_kl_p_pi"] > 3.0
    assert records[-1]["exact_kl_p_pi"] < 0.35, [r["exact_kl_p_pi"] for r in records]


def test_lora_on_a_seq2seq_model_keeps_the_prior_intact(seq2seq):
    prior = toy_model(["a", "b", "c"], seed=1, architecture="t5")
    space = SequenceSpace(prior, 3, context="b b")
    before = space.log_prob(prior)
    policy = make_policy(prior, dict(r=2, lora_alpha=4, target_modules=["q", "v"]))
    assert policy.has_adapters and prior.adapters_disabled
    with torch.no_grad():  # move π: the prior (adapters disabled) must not move with it
        for name, p in policy.module.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    torch.testing.assert_close(space.log_prob(prior), before, rtol=0, atol=1e-6)
    assert (space.log_prob(policy) - before).abs().max() > 1e-3


def test_reference_nll_is_the_per_token_loss_of_the_references(tmp_path):
    eval_file = tmp_path / "heldout.jsonl"
    rows = [{"context": "a", "reference": "b b"}, {"context": "c c c", "reference": "c c c a"}]
    eval_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run = RunFolder(tmp_path / "run").create()
    trainer = make_trainer(
        f"contexts={{train: [a, b b, c c c], eval: {eval_file}, per_step: 3, reference_field: reference, "
        "bleu: true}",
        "training.steps=2",
        "eval.every=2",
        "eval.samples=8",
        "eval.exact=false",
        run=run,
    )
    records = trainer.fit()
    # BLEU of π's samples (4 per eval context, saved in order) against their context's reference
    texts = [
        json.loads(line)["text"] for line in (run.samples / "step_000002.jsonl").read_text().splitlines()
    ]
    assert records[-1]["bleu_pi"] == pytest.approx(bleu(texts, ["b b"] * 4 + ["c c c a"] * 4))
    prior = toy_model(["a", "b", "c"], seed=1)
    references = prior.encode_continuations(["a", "c c c"], ["b b", "c c c a"])
    assert references.lengths.tolist() == [2, 4]
    expected = -prior.log_prob_frozen(references).sum().item() / 6
    assert records[0]["reference_nll_pi"] == pytest.approx(expected, rel=1e-6)  # π = a at step 0
    assert records[-1]["reference_nll_a"] == pytest.approx(expected, rel=1e-6)
    assert records[-1]["reference_nll_pi"] != pytest.approx(expected, rel=1e-6)  # π has moved


def test_bleu_names_its_extra_and_needs_references(monkeypatch):
    with pytest.raises(ConfigError, match="contexts.bleu needs contexts.reference_field"):
        parse_config(apply_overrides(copy.deepcopy(BASE), ["contexts.bleu=true"]))
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    with pytest.raises(ImportError, match=r"pip install 'bayesalign\[translation\]'"):
        bleu(["a"], ["a"])
