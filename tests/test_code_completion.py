"""The offline code-completion task: standard-library signatures as contexts, "compiles" as
b(x, c), checked with compile() only."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from bayesalign.config import parse_config
from bayesalign.config.build import build_target
from bayesalign.scorers.code import Pep8Scorer
from bayesalign.tasks.code_completion import (
    CompletionCompiles,
    CompletionPep8,
    compiles,
    completed_function,
    stdlib_functions,
    write_splits,
)
from bayesalign.toy import toy_model

CONTEXT = '```python\ndef double(x):\n    """Twice x."""\n'


def test_every_reference_completes_its_signature_into_code_that_compiles():
    functions = stdlib_functions()
    assert len(functions) > 100
    assert len({f["source"] for f in functions}) == len(functions)
    contexts = [f["context"] for f in functions]
    assert all(c.startswith("```python\ndef ") and c.rstrip(" \t").endswith("\n") for c in contexts)
    scores = CompletionCompiles()([f["reference"] for f in functions], contexts)
    assert scores.sum().item() == len(functions)
    assert all(not f["reference"][0].isspace() for f in functions)  # the context holds the indent


def test_a_sample_is_cut_at_the_closing_fence():
    sample = "    return 2 * x\n```\nThis doubles x. It is not code ("
    assert completed_function(CONTEXT, sample) == 'def double(x):\n    """Twice x."""\n    return 2 * x\n'
    assert completed_function(CONTEXT, "    y = 2 * x\n    return y + (") == completed_function(
        CONTEXT, "    y = 2 * x\n"
    )
    samples = [sample, "This doubles x (", "return x\n```", "```\nNo body at all.", "\n    \n```"]
    # not indented: outside the function (it would compile as module code); no body; blank body
    assert CompletionCompiles()(samples, [CONTEXT] * 5).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_code_is_compiled_never_run():
    marker = Path("/tmp") / f"bayesalign-must-not-exist-{uuid.uuid4().hex}"
    body = f"    __import__('os').system('touch {marker}')\n    open('{marker}', 'w')\n```"
    assert CompletionCompiles()([body], [CONTEXT]).tolist() == [1.0]
    assert not marker.exists()
    assert not compiles("x = 1\0")  # a null byte: ValueError, counted as not compiling
    assert not compiles("(" * 1000 + ")" * 1000)  # too deeply nested for the parser


def test_splits_are_disjoint_and_reproducible(tmp_path):
    train, heldout = write_splits(tmp_path, heldout=10, seed=3)
    rows = [json.loads(line) for line in heldout.read_text().splitlines()]
    assert len(rows) == 10 and set(rows[0]) == {"context", "reference", "source"}
    train_sources = {json.loads(line)["source"] for line in train.read_text().splitlines()}
    assert not train_sources & {r["source"] for r in rows}
    again, _ = write_splits(tmp_path / "again", heldout=10, seed=3)
    assert again.read_text() == train.read_text()
    with pytest.raises(ValueError, match="cannot hold out"):
        write_splits(tmp_path, heldout=10**6)


def test_the_constraint_builds_from_a_config():
    raw = {"model": {"name": "toy"}, "target": {"constraints": [{"type": "completion_compiles"}]}}
    cfg = parse_config(raw)
    target = build_target(cfg.target, toy_model(["a"]))
    assert target.describe() == "a(x) · b[compiles]"


def test_pep8_of_the_completed_function():
    clean = "    return 2 * x\n```"
    messy = "    return 2*x  ;y=1\n```"  # whitespace before ';', two statements on one line, y=1
    scorer = CompletionPep8()
    scores = scorer([clean, messy], [CONTEXT, CONTEXT])
    assert scores[0].item() == 0.0
    code = completed_function(CONTEXT, messy)
    expected = len(Pep8Scorer().violations(code)) / len(code)
    assert scores[1].item() == pytest.approx(expected) and expected > 0
    assert CompletionPep8(boolean=True)([clean, messy], [CONTEXT, CONTEXT]).tolist() == [1.0, 0.0]
    raw = {
        "model": {"name": "toy"},
        "target": {"constraints": [{"type": "completion_pep8", "boolean": True}]},
    }
    assert build_target(parse_config(raw).target, toy_model(["a"])).describe() == "a(x) · b[pep8]"
