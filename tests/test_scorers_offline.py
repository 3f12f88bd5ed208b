"""Offline scorers on real inputs: PEP 8 (pycodestyle), compilability, PII (scrubadub) and
offensive language (alt-profanity-check); their config specs; the error for a missing extra."""

from __future__ import annotations

import re
import socket
import sys
import uuid

import pytest
import torch

from bayesalign.config import ConfigError, parse_config
from bayesalign.scorers import checked_scores
from bayesalign.scorers.code import CompilesScorer, Pep8Scorer
from bayesalign.scorers.offensive import OffensiveScorer
from bayesalign.scorers.pii import PIIScorer, luhn_valid

CLEAN_CODE = "def add(a, b):\n    return a + b\n"
INSULT = "You are a stupid idiot and I hate you."
NEUTRAL = "The weather is nice today, so we walked to the library."


@pytest.fixture(scope="module")
def pep8() -> Pep8Scorer:
    return Pep8Scorer()


@pytest.fixture(scope="module")
def pii() -> PIIScorer:
    return PIIScorer()


# -- PEP 8 ----------------------------------------------------------------------------------------
def test_pep8_counts_violations_per_character(pep8):
    # line 1: E401 (two imports on one line); line 2: E302 (no blank lines before a def) and E203
    # (space before ':'); line 3: E111 (2-space indentation); "x+1" would be E226, which
    # pycodestyle ignores by default
    four = "import os, sys\ndef f(x) :\n  return x+1\n"
    # W291 (trailing space), E231 (no space after ','), E711 (== None)
    three = "x = 1 \ny = [1,2]\nif y == None:\n    pass\n"
    scores = pep8([four, three, CLEAN_CODE, ""])
    assert scores.tolist() == pytest.approx([4 / len(four), 3 / len(three), 0.0, 0.0])
    assert not pep8.boolean and scores.dtype == torch.float64
    assert [m[:4] for _, _, m in pep8.violations(four)] == ["E401", "E302", "E203", "E111"]


def test_pep8_boolean_means_no_violation():
    scorer = Pep8Scorer(boolean=True)
    assert scorer.boolean
    assert checked_scores(scorer, [CLEAN_CODE, "x=1\n", "x = 1"], None).tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("def f():\n    return 1", ["W292"]),  # cut mid-line: no newline at the end
        ("import os\n\n\n", ["W391"]),  # cut after blank lines
        ("def f():\n    x = (1,\n", ["E901"]),  # cut inside brackets: the tokenizer hits EOF
        ('def f():\n    """Doc\n\n    more', ["E901", "W292"]),  # inside a docstring
        ("x = 1\n  ", ["W292", "W293"]),  # cut in the indentation of the next line
        ("x = 1\nif x:\n# c", ["W292", "E115"]),  # cut after a comment that should be indented
    ],
)
def test_ignore_truncation_drops_what_only_the_cut_causes(pep8, text, codes):
    assert sorted(m[:4] for _, _, m in pep8.violations(text)) == sorted(codes)
    assert Pep8Scorer(ignore_truncation=True).violations(text) == []


def test_ignore_truncation_keeps_real_violations():
    scorer = Pep8Scorer(ignore_truncation=True)
    # E225 on a complete line stays; only W292 of the cut last line goes
    assert [m[:4] for _, _, m in scorer.violations("x=1\ny = 2")] == ["E225"]
    # a complete last line (it ends in a newline) is checked like any other
    assert [m[:4] for _, _, m in scorer.violations("x = 1\ny=2\n")] == ["E225"]
    # only the tokenizer's EOF errors are cuts: a dedent to no enclosing level stays (E117 too)
    assert [m[:4] for _, _, m in scorer.violations("if x:\n        y = 1\n    z = 2\n")] == ["E117", "E901"]
    text = "x=1\ny = 2"
    assert scorer([text]).tolist() == [1 / len(text)]  # the denominator is the whole text


def test_pep8_ignores_the_users_pycodestyle_config(tmp_path, monkeypatch):
    import pycodestyle

    config = tmp_path / "pycodestyle"
    config.write_text("[pycodestyle]\nignore = E225\nmax-line-length = 10\n")
    monkeypatch.setattr(pycodestyle, "USER_CONFIG", str(config))
    scorer = Pep8Scorer()
    assert [m[:4] for _, _, m in scorer.violations("x=1\nlong_name_here = 1\n")] == ["E225"]


# -- compiles -------------------------------------------------------------------------------------
def test_compiles_valid_and_invalid_code():
    scorer = CompilesScorer()
    texts = [CLEAN_CODE, "x = [i * i for i in range(3)]", "def f(:\n    pass\n", "return 1\n", "x = 1\x00\n"]
    # "return" outside a function parses but does not compile; a null byte is a ValueError (3.11)
    assert checked_scores(scorer, texts, None).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_compiles_survives_pathological_nesting():
    deep = ["(" * 10_000 + ")" * 10_000, "-" * 200_000 + "1", "a" + "+a" * 100_000]
    assert CompilesScorer()(deep).tolist() == [0.0, 0.0, 0.0]


def test_compiles_with_a_signature_prefix():
    scorer = CompilesScorer(prefix="def add(a, b):\n")
    bodies = ["    return a + b\n", "return a + b\n", "    return a +\n", "    return a + b"]
    assert scorer(bodies).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert CompilesScorer()(bodies[:1]).tolist() == [0.0]  # an indented body alone does not compile


def test_compiles_with_each_samples_context():
    scorer = CompilesScorer(context_as_prefix=True)
    contexts = ["def f(x):\n", "x = 1\n", "class A:\n"]
    texts = ["    return x\n", "    return x\n", "    def g(self):\n        return 1\n"]
    assert scorer(texts, contexts).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="context_as_prefix: it needs one context per text"):
        scorer(texts)


def test_scoring_code_never_runs_it(tmp_path):
    marker = tmp_path / f"SHOULD_NOT_EXIST_{uuid.uuid4().hex}"
    code = f"__import__('os').system('touch {marker}')\n"
    assert CompilesScorer()([code]).tolist() == [1.0]
    assert CompilesScorer(prefix="import os\n", context_as_prefix=True)(
        [code], [f"open('{marker}', 'w')\n"]
    ).tolist() == [1.0]
    assert [m[:4] for _, _, m in Pep8Scorer().violations(code)] == ["E501"]  # a long tmp path
    assert not marker.exists()


# -- PII ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "item"),
    [
        ("Please send the report to john.smith@example.com today.", "email", "john.smith@example.com"),
        ("Call me at (650) 253-0000 after lunch.", "phone", "(650) 253-0000"),
        (
            "The slides are at https://www.example.org/talks/42 now.",
            "url",
            "https://www.example.org/talks/42",
        ),
        ("My card is 4111 1111 1111 1111, expiry 12/27.", "credit_card", "4111 1111 1111 1111"),
        ("4111-1111-1111-1111 was charged twice.", "credit_card", "4111-1111-1111-1111"),
    ],
)
def test_pii_finds_each_kind(pii, text, kind, item):
    assert pii.found(text) == [(kind, item)]
    assert pii([text]).tolist() == [1 / len(text)]
    assert PIIScorer(boolean=True)([text]).tolist() == [0.0]


def test_pii_counts_items_per_character(pii):
    text = "Mail ann@example.com or bob@example.net, or see www.python.org."
    assert pii([text]).tolist() == [3 / len(text)]


def test_pii_finds_nothing_in_clean_text(pii):
    clean = [
        "The meeting is at 10:30 on 12 March 2024 in room 42.",
        "The year 2023 had 365 days, and pi is about 3.14159265358979.",
        "Our order number 4111 1111 1111 1112 fails the check digit.",  # not a card: Luhn fails
        "",
    ]
    assert pii(clean).tolist() == [0.0] * 4
    assert PIIScorer(boolean=True)(clean).tolist() == [1.0] * 4


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


def test_pii_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="kinds must be some of"):
        PIIScorer(kinds=("emial",))


# -- offensive ------------------------------------------------------------------------------------
def test_offensive_ranks_an_insult_above_a_neutral_sentence():
    scores = OffensiveScorer()([INSULT, NEUTRAL])
    assert scores[0] > 0.9 and scores[1] < 0.2
    assert OffensiveScorer(threshold=0.5)([INSULT, NEUTRAL]).tolist() == [0.0, 1.0]
    assert OffensiveScorer()([]).shape == (0,)


def test_offensive_threshold_must_be_a_probability():
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        OffensiveScorer(threshold=0.0)


# -- offline, config, missing extras --------------------------------------------------------------
def test_scorers_work_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert Pep8Scorer()([CLEAN_CODE]).tolist() == [0.0]
    assert PIIScorer(boolean=True)(["call (650) 253-0000", NEUTRAL]).tolist() == [0.0, 1.0]
    assert OffensiveScorer(threshold=0.5)([INSULT]).tolist() == [0.0]


def _config(spec: dict) -> dict:
    return {"model": {"name": "toy"}, "target": {"constraints": [spec]}}


@pytest.mark.parametrize(
    ("spec", "cls", "text", "score"),
    [
        ({"type": "pep8", "boolean": True, "ignore_truncation": True}, Pep8Scorer, "x = 1", 1.0),
        ({"type": "compiles", "prefix": "def f(a):\n"}, CompilesScorer, "    return a\n", 1.0),
        ({"type": "pii", "kinds": ["email"], "boolean": True}, PIIScorer, "me@example.com", 0.0),
        ({"type": "offensive", "threshold": 0.5}, OffensiveScorer, NEUTRAL, 1.0),
    ],
)
def test_specs_build_from_config(spec, cls, text, score):
    scorer = parse_config(_config(spec)).target.constraints[0].build()
    assert isinstance(scorer, cls) and scorer.boolean
    assert checked_scores(scorer, [text], None).tolist() == [score]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "pep8", "ignore_truncaton": True},
            "unknown key 'ignore_truncaton'; did you mean 'ignore_truncation'",
        ),
        ({"type": "compiles", "prefx": ""}, "unknown key 'prefx'; did you mean 'prefix'"),
        ({"type": "pii", "kinds": ["emial"]}, "invalid value 'emial'; did you mean 'email'"),
        ({"type": "offensive", "treshold": 0.5}, "unknown key 'treshold'; did you mean 'threshold'"),
        ({"type": "pep"}, "unknown scorer 'pep'; did you mean 'pep8'"),
    ],
)
def test_unknown_options_name_the_closest(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(spec))


@pytest.mark.parametrize(
    ("module", "spec", "extra"),
    [
        ("pycodestyle", {"type": "pep8"}, "bayesalign[code]"),
        ("scrubadub", {"type": "pii"}, "bayesalign[pii]"),
        ("profanity_check", {"type": "offensive"}, "bayesalign[offensive]"),
    ],
)
def test_missing_package_names_the_extra(monkeypatch, module, spec, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    config = parse_config(_config(spec))  # validating needs no package; building does
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        config.target.constraints[0].build()
