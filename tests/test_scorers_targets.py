"""Scorers (lexical, callable, sentiment), the checks on what they return, and Target."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from bayesalign.samples import Samples
from bayesalign.scorers import (
    CallableScorer,
    RegexScorer,
    Scorer,
    SentimentScorer,
    WordScorer,
    checked_scores,
    import_callable,
)
from bayesalign.targets import Constraint, Target, Tilt
from bayesalign.toy import toy_model

INF = float("-inf")


def text_samples(texts: list[str], contexts: list[str] | None = None) -> Samples:
    """Samples carrying only texts (targets read texts and contexts, never the ids)."""
    n = len(texts)
    return Samples(
        prompt_ids=torch.zeros(n, 1, dtype=torch.long),
        prompt_mask=torch.ones(n, 1, dtype=torch.bool),
        ids=torch.zeros(n, 1, dtype=torch.long),
        mask=torch.ones(n, 1, dtype=torch.bool),
        token_log_q=torch.zeros(n, 1),
        texts=texts,
        contexts=contexts,
    )


class FixedScorer:
    """Returns whatever it was given, to exercise checked_scores."""

    def __init__(self, values, *, boolean: bool, name: str = "fixed") -> None:
        self.values = values
        self.boolean = boolean
        self.name = name

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None):
        return self.values


@pytest.fixture(scope="module")
def base():
    return toy_model(["a", "b", "c"], seed=0)


# -- WordScorer -----------------------------------------------------------------------------------
def test_word_scorer_matches_whole_words_only():
    scorer = WordScorer(("amazing",))
    texts = ["amazing", "it was amazing.", "amazingly good", "unamazing", "(amazing)", "amaze"]
    assert scorer(texts).tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert scorer(texts).dtype == torch.float64


def test_word_scorer_case_insensitive_by_default():
    assert WordScorer(("Amazing",))(["AMAZING day", "amazing", "AmAzInG"]).tolist() == [1, 1, 1]
    sensitive = WordScorer(("Amazing",), case_sensitive=True)
    assert sensitive(["AMAZING day", "amazing", "Amazing!"]).tolist() == [0, 0, 1]


def test_word_scorer_any_versus_require_all():
    texts = ["good food", "good service", "good food and good service", "bad food", "foodservice"]
    any_of = WordScorer(("food", "service"))
    all_of = WordScorer(("food", "service"), require_all=True)
    assert any_of(texts).tolist() == [1, 1, 1, 1, 0]
    assert all_of(texts).tolist() == [0, 0, 1, 0, 0]
    assert any_of.boolean and all_of.boolean


def test_word_scorer_escapes_regex_characters_and_rejects_empty_words():
    assert WordScorer(("c++",))(["I write c++ daily", "I write c daily"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="non-empty"):
        WordScorer(())
    with pytest.raises(ValueError, match="non-empty"):
        WordScorer(("ok", "  "))


# -- RegexScorer ----------------------------------------------------------------------------------
def test_regex_scorer_presence_and_count():
    texts = ["abc 12 and 345", "no digits here", "7"]
    present = RegexScorer(r"\d+")
    counted = RegexScorer(r"\d+", count=True)
    assert present.boolean and not counted.boolean
    assert present(texts).tolist() == [1, 0, 1]
    assert counted(texts).tolist() == [2, 0, 1]
    assert RegexScorer("ABC", ignore_case=True)(["abc", "xyz"]).tolist() == [1, 0]
    assert RegexScorer("ABC")(["abc", "ABC"]).tolist() == [0, 1]


def test_regex_scorer_invalid_pattern_raises_value_error_naming_it():
    with pytest.raises(ValueError, match=r"my_rx.*invalid regex '\(unclosed'"):
        RegexScorer("(unclosed", name="my_rx")


# -- CallableScorer and import_callable -----------------------------------------------------------
def test_callable_scorer_per_text_without_contexts():
    scorer = CallableScorer(fn=lambda t: len(t.split()), name="n_words")
    out = scorer(["one", "one two three", ""], contexts=["ignored"] * 3)
    assert out.tolist() == [1, 3, 0] and out.dtype == torch.float64


def test_callable_scorer_per_text_with_contexts():
    def continues(text, context):
        return float(context is not None and text.startswith(context[-1]))

    scorer = CallableScorer(fn=continues, boolean=True, takes_context=True, name="continues")
    assert scorer(["xa", "ya", "zb"], contexts=["x", "x", "ab"]).tolist() == [1, 0, 0]
    # without contexts the function receives None for each text
    assert scorer(["xa", "ya"]).tolist() == [0, 0]


def test_callable_scorer_batched_with_and_without_contexts():
    calls = []

    def lengths(texts):
        calls.append(list(texts))
        return [len(t) for t in texts]

    batched = CallableScorer(fn=lengths, batched=True)
    assert batched(["ab", "abcd"]).tolist() == [2, 4]
    assert calls == [["ab", "abcd"]]  # called once with the whole batch

    def same_length(texts, contexts):
        return torch.tensor([len(t) == len(c) for t, c in zip(texts, contexts, strict=True)])

    conditional = CallableScorer(fn=same_length, batched=True, boolean=True, takes_context=True)
    assert conditional(["ab", "abc"], ["xy", "x"]).tolist() == [1, 0]


def test_import_callable_resolves_and_rejects_bad_paths():
    assert import_callable("math:sqrt") is math.sqrt
    with pytest.raises(ValueError, match="package.module:function"):
        import_callable("math.sqrt")
    with pytest.raises(ValueError, match="package.module:function"):
        import_callable(":sqrt")
    with pytest.raises(ValueError, match="cannot import callable 'no_such_module_xyz:f'"):
        import_callable("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="cannot import callable 'math:no_such_fn'"):
        import_callable("math:no_such_fn")
    with pytest.raises(ValueError, match="'math:pi' is not callable"):
        import_callable("math:pi")


# -- checked_scores -------------------------------------------------------------------------------
def test_checked_scores_accepts_valid_scores():
    out = checked_scores(FixedScorer([0.0, 1.0, 1.0], boolean=True), ["a", "b", "c"], None)
    assert out.dtype == torch.float64 and out.tolist() == [0, 1, 1]
    real = checked_scores(FixedScorer([-2.5, 3.0], boolean=False), ["a", "b"], None)
    assert real.tolist() == [-2.5, 3.0]


def test_checked_scores_rejects_nan_and_inf_naming_the_scorer():
    with pytest.raises(ValueError, match=r"scorer 'toxicity' returned nan for text 'b'"):
        checked_scores(FixedScorer([0.1, math.nan], boolean=False, name="toxicity"), ["a", "b"], None)
    with pytest.raises(ValueError, match="scorer 'toxicity'.*finite"):
        checked_scores(FixedScorer([math.inf, 0.0], boolean=False, name="toxicity"), ["a", "b"], None)


def test_checked_scores_rejects_non_binary_boolean_scores():
    with pytest.raises(ValueError, match=r"boolean scorer 'flag' returned 0.5 for text 'b'"):
        checked_scores(FixedScorer([1.0, 0.5, 0.0], boolean=True, name="flag"), ["a", "b", "c"], None)
    # the same values are fine from a real-valued scorer
    values = checked_scores(FixedScorer([1.0, 0.5, 0.0], boolean=False), ["a", "b", "c"], None)
    assert values.tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("values", [[1.0, 0.0], [[1.0], [0.0], [1.0]], 1.0, []])
def test_checked_scores_rejects_wrong_shape(values):
    with pytest.raises(ValueError, match=r"scorer 'shape' returned shape .* for 3 texts"):
        checked_scores(FixedScorer(values, boolean=False, name="shape"), ["a", "b", "c"], None)


def test_builtin_scorers_satisfy_the_protocol():
    for scorer in (WordScorer(("x",)), RegexScorer("x"), CallableScorer(fn=len), SentimentScorer()):
        assert isinstance(scorer, Scorer)


# -- SentimentScorer ------------------------------------------------------------------------------
def test_sentiment_scorer_positive_versus_negative():
    positive = "I love this place, the food was wonderful and the staff were amazing!"
    negative = "This was terrible. I hate it, the worst meal of my life."
    compound = SentimentScorer()
    assert not compound.boolean
    scores = compound([positive, negative])
    assert scores[0] > 0.5 and scores[1] < -0.5
    assert ((scores >= -1) & (scores <= 1)).all()
    flag = SentimentScorer(threshold=0.5)
    assert flag.boolean
    assert flag([positive, negative]).tolist() == [1.0, 0.0]
    # the threshold is strict: a text scoring exactly the threshold is not accepted
    exact = SentimentScorer(threshold=float(scores[0]))
    assert exact([positive]).tolist() == [0.0]


# -- Target ---------------------------------------------------------------------------------------
def test_pointwise_target_log_prob_and_satisfied(base):
    food = WordScorer(("food",), name="food")
    good = WordScorer(("good",), name="good")
    target = Target.pointwise(base, [food, good])
    texts = ["good food", "good service", "bad food", "nothing", "Food was GOOD"]
    evidence = target.evidence(text_samples(texts))
    assert set(evidence.scores) == {"food", "good"}
    assert evidence.scores["food"].tolist() == [1, 0, 1, 0, 1]
    assert evidence.satisfied.tolist() == [True, False, False, False, True]
    log_a = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0])
    log_p = target.log_prob(log_a, evidence)
    assert log_p.dtype == torch.float64
    assert log_p.tolist() == [-1.0, INF, INF, INF, -5.0]
    assert target.describe() == "a(x) · b[food] · b[good]"


def test_tilt_target_adds_reward_over_beta(base):
    reward = CallableScorer(fn=lambda t: float(len(t)), name="length")
    target = Target.tilt(base, reward, beta=0.5)
    evidence = target.evidence(text_samples(["", "ab", "abcd"]))
    assert evidence.satisfied is None
    log_a = torch.tensor([-1.0, -2.0, -3.0])
    torch.testing.assert_close(
        target.log_prob(log_a, evidence), torch.tensor([-1.0, 2.0, 5.0], dtype=torch.float64)
    )


def test_constraint_and_tilt_combined(base):
    target = Target(
        base,
        [
            Constraint(WordScorer(("ok",), name="ok")),
            Tilt(RegexScorer("!", count=True, name="bangs"), beta=2.0),
        ],
    )
    evidence = target.evidence(text_samples(["ok!!", "no!!", "ok"]))
    assert evidence.satisfied.tolist() == [True, False, True]
    log_p = target.log_prob(torch.zeros(3), evidence)
    assert log_p.tolist() == [1.0, INF, 0.0]


def test_target_passes_contexts_to_scorers(base):
    def echoes(text, context):
        return float(context in text)

    target = Target.pointwise(
        base, [CallableScorer(fn=echoes, boolean=True, takes_context=True, name="echo")]
    )
    evidence = target.evidence(text_samples(["say hi", "say no"], contexts=["hi", "hi"]))
    assert evidence.satisfied.tolist() == [True, False]


def test_target_propagates_scorer_errors_by_name(base):
    bad = FixedScorer([0.5, 1.0], boolean=True, name="half")
    target = Target.pointwise(base, [bad])
    with pytest.raises(ValueError, match="boolean scorer 'half' returned 0.5"):
        target.evidence(text_samples(["a", "b"]))


def test_constraint_rejects_real_valued_scorer():
    with pytest.raises(ValueError, match="'sentiment' is real-valued"):
        Constraint(SentimentScorer())
    with pytest.raises(ValueError, match="'n' is real-valued"):
        Constraint(RegexScorer("x", count=True, name="n"))
    Constraint(SentimentScorer(threshold=0.5))  # with a threshold it is boolean


@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan])
def test_tilt_rejects_non_positive_beta(base, beta):
    reward = CallableScorer(fn=len, name="r")
    with pytest.raises(ValueError, match="beta must be > 0"):
        Tilt(reward, beta=beta)
    with pytest.raises(ValueError, match="beta must be > 0"):
        Target.tilt(base, reward, beta=beta)


def test_target_rejects_duplicate_names_and_empty_terms(base):
    with pytest.raises(ValueError, match=r"repeated: \['word'\]"):
        Target.pointwise(base, [WordScorer(("a",)), WordScorer(("b",))])
    with pytest.raises(ValueError, match="at least one"):
        Target(base, [])


def test_callable_scorer_does_not_pass_context_into_a_defaulted_parameter():
    scorer = CallableScorer(fn=lambda text, min_len=3: float(len(text) >= min_len))
    assert scorer(["abcd", "ab"]).tolist() == [1.0, 0.0]
