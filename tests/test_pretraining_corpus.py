"""The PHF corpus: PEP 8 scores of each line checked in its file (not alone), the document-level
scoring path of the pretraining data, and documents read from local files with `datasets`."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from bayesalign.cli import main
from bayesalign.pretraining.config import PretrainConfig
from bayesalign.pretraining.corpus import CorpusError, load_documents
from bayesalign.pretraining.data import score_document, segments
from bayesalign.pretraining.trainer import Pretrainer
from bayesalign.scorers.code import Pep8LineScorer, Pep8Scorer, source_lines

# every violation of this file, by line (pycodestyle defaults):
#   3 "def f(x) :"  E302 expected 2 blank lines, E203 whitespace before ':'
#   4 "  return x"  E111 indentation is not a multiple of 4 (alone it would also be E113)
#   5 "class A:"    E302
#  11 "y=1"         E303 too many blank lines (4), E225 missing whitespace around operator
FILE = "import os\nimport sys\ndef f(x) :\n  return x\nclass A:\n    pass\n\n\n\n\ny=1\n"
VIOLATIONS = {3: 2, 4: 1, 5: 1, 11: 2}


def expected_line_scores(text: str) -> list[float]:
    lines = source_lines(text)
    return [VIOLATIONS.get(i + 1, 0) / len(line) for i, line in enumerate(lines)]


def test_pep8_line_scores_are_the_files_violations_per_character_of_each_line():
    lines = segments(FILE, "lines")
    assert len(lines) == 11
    assert score_document(Pep8LineScorer(), lines) == pytest.approx(expected_line_scores(FILE))
    # checked alone, the indented line gets E113 as well, and the blank-line rules see nothing
    alone = score_document(Pep8Scorer(), lines)
    assert alone[3] == pytest.approx(2 / len(lines[3])) and alone[2] == pytest.approx(1 / len(lines[2]))
    boolean = score_document(Pep8LineScorer(boolean=True), lines)
    assert boolean == [0.0 if i + 1 in VIOLATIONS else 1.0 for i in range(11)]


def test_pep8_lines_are_python_source_lines_and_a_whole_text_scores_as_pep8():
    text = "x = 1\x0c\ny = 2\n"  # a form feed is no line break in Python source
    assert source_lines(text) == ["x = 1\x0c\n", "y = 2\n"] == segments(text, "lines")
    assert Pep8LineScorer()([FILE]).tolist() == pytest.approx([6 / len(FILE)])
    with pytest.raises(ValueError, match="every segment must be one line"):
        Pep8LineScorer().score_segments(["x = 1\ny = 2\n"])


def test_pycodestyle_failing_on_a_broken_text_counts_a_violation_instead_of_crashing():
    broken = "a [' b\ncompiler x',\\\nanana t='"  # pycodestyle 2.x raises IndexError on this
    found = Pep8Scorer().violations(broken)
    assert any("pycodestyle failed" in message for _, _, message in found)


def pretrain_config(files: list[str], scorer: dict, **corpus) -> dict:
    return {
        "corpus": {"files": files, "unit": "lines", "heldout": 0.3, **corpus},
        "scorer": scorer,
        "model": {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 16, "vocab_size": 300},
        "training": {"tokens": 64, "batch_size": 1},
        "eval": {"samples": 2, "max_new_tokens": 2, "max_k": 1},
    }


def test_the_training_tokens_carry_the_scores_of_their_lines_checked_in_their_file(tmp_path):
    files = []
    for i in range(4):
        path = tmp_path / f"m{i}.py"
        path.write_text(FILE)
        files.append(str(path))
    trainer = Pretrainer(PretrainConfig.model_validate(pretrain_config(files, {"type": "pep8_lines"})))
    token_scores = {round(s, 6) for s in trainer.scores.flatten().tolist()}
    assert token_scores <= {round(s, 6) for s in expected_line_scores(FILE)}
    assert round(1 / len("  return x\n"), 6) in token_scores  # E111 only: no E113
    with pytest.raises(ValidationError, match="use scorer type pep8_lines"):
        PretrainConfig.model_validate(pretrain_config(files, {"type": "pep8"}))


# -- corpus files ------------------------------------------------------------------------------------
@pytest.fixture
def corpus_dir(tmp_path):
    (tmp_path / "a.txt").write_text("First line.\nStill first.\n\nSecond paragraph.\n")
    (tmp_path / "b.txt").write_text("Third paragraph.\n")
    records = [{"body": "doc one", "id": 1}, {"body": "", "id": 2}, {"body": "doc three", "id": 3}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_files_are_documents_and_globs_expand_in_sorted_order(corpus_dir):
    docs = load_documents([str(corpus_dir / "*.txt")])
    assert docs == ["First line.\nStill first.\n\nSecond paragraph.\n", "Third paragraph.\n"]
    assert load_documents([str(corpus_dir / "*.txt")], max_documents=1) == docs[:1]


@pytest.mark.parametrize("streaming", [False, True])
def test_text_and_json_files_through_datasets(corpus_dir, streaming):
    pattern = str(corpus_dir / "*.txt")
    paragraphs = load_documents([pattern], "text", streaming=streaming)
    assert paragraphs == ["First line.\nStill first.", "Second paragraph.\n", "Third paragraph.\n"]
    lines = load_documents([pattern], "text", sample_by="line", streaming=streaming)
    assert lines == ["First line.", "Still first.", "Second paragraph.", "Third paragraph."]
    jsonl = [str(corpus_dir / "c.jsonl")]
    assert load_documents(jsonl, "json", field="body", streaming=streaming) == ["doc one", "doc three"]
    assert load_documents(jsonl, "json", field="body", streaming=streaming, max_documents=1) == ["doc one"]


def test_corpus_errors_name_the_file_or_the_field(corpus_dir):
    with pytest.raises(CorpusError, match="nothing.jsonl' does not exist"):
        load_documents([str(corpus_dir / "nothing.jsonl")], "json")
    with pytest.raises(CorpusError, match=r"matches no file"):
        load_documents([str(corpus_dir / "*.csv")])
    jsonl = [str(corpus_dir / "c.jsonl")]
    with pytest.raises(
        CorpusError, match=r"field 'text' is not in the JSON records; their fields: \['body', 'id'\]"
    ):
        load_documents(jsonl, "json", streaming=True)
    with pytest.raises(CorpusError, match="field 'id' must hold text, got int"):
        load_documents(jsonl, "json", field="id")


def test_cli_pretrain_refuses_a_missing_file_or_field_before_any_run_folder(corpus_dir, tmp_path, capsys):
    raw = pretrain_config([str(corpus_dir / "missing.txt")], {"type": "regex", "pattern": "x"})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "missing.txt' does not exist" in capsys.readouterr().err
    raw["corpus"] |= {"files": [str(corpus_dir / "c.jsonl")], "format": "json", "field": "title"}
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "field 'title' is not in the JSON records" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
