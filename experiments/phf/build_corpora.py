"""Build the two PHF corpora offline from this machine's Python standard library.

pep8: a fixed sample of the stdlib's .py files (one file = one document; lines are scored in
      their file by the pep8_lines scorer), copied to data/pep8/.
pii:  English text: the documentation topics shipped in pydoc_data, the docstrings of modules,
      classes and functions, the comment blocks of the source, and the e-mail messages of the
      email package's tests (which hold real-looking addresses), shuffled into data/pii.jsonl
      (one {"text": ...} record per document).

Prints each corpus's size and the fraction of segments the task's scorer flags.

    python experiments/phf/build_corpora.py
"""

from __future__ import annotations

import ast
import io
import json
import pydoc_data.topics
import random
import sysconfig
import tokenize
import warnings
from pathlib import Path

from bayesalign.pretraining.data import score_document, segments
from bayesalign.scorers.code import Pep8LineScorer
from bayesalign.scorers.pii import PIIScorer

DATA = Path(__file__).parent / "data"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
PEP8_BYTES = 1_200_000  # about 350k tokens: more than one run's budget, so no epoch repeats
PII_BYTES = 1_200_000
MAX_FILE_BYTES = 40_000  # no single file dominates the sample


def stdlib_sources() -> list[Path]:
    return sorted(p for p in STDLIB.rglob("*.py") if "site-packages" not in p.parts)


def build_pep8(rng: random.Random) -> list[str]:
    files = [p for p in stdlib_sources() if 500 < p.stat().st_size <= MAX_FILE_BYTES]
    rng.shuffle(files)
    out = DATA / "pep8"
    out.mkdir(parents=True, exist_ok=True)
    documents, total = [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if "\ufffd" in text or "badsyntax" in path.name:
            continue
        name = "_".join(path.relative_to(STDLIB).parts)
        (out / name).write_text(text, encoding="utf-8")
        documents.append(text)
        total += len(text.encode())
        if total >= PEP8_BYTES:
            break
    return documents


def docstrings(tree: ast.AST) -> list[str]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds))
    return [d for d in found if d and len(d) >= 200]


def comment_blocks(source: str) -> list[str]:
    """Runs of comment lines on consecutive lines, joined into one paragraph each."""
    blocks, current, last = [], [], -2
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        text = token.string.lstrip("#").strip()
        if token.start[0] != last + 1 and current:
            blocks.append(" ".join(current))
            current = []
        current.append(text)
        last = token.start[0]
    if current:
        blocks.append(" ".join(current))
    return [b for b in blocks if len(b) >= 150]


def build_pii(rng: random.Random) -> list[str]:
    documents = list(pydoc_data.topics.topics.values())
    mail = sorted((STDLIB / "test" / "test_email" / "data").glob("*.txt"))
    documents += [p.read_text(encoding="utf-8", errors="replace") for p in mail]
    for path in stdlib_sources():
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                documents += docstrings(ast.parse(source))
            documents += comment_blocks(source)
        except (SyntaxError, ValueError, tokenize.TokenError, IndentationError):
            continue  # the deliberately broken test files
    rng.shuffle(documents)
    kept, total = [], 0
    for doc in documents:
        kept.append(doc)
        total += len(doc.encode())
        if total >= PII_BYTES:
            break
    DATA.mkdir(parents=True, exist_ok=True)
    with (DATA / "pii.jsonl").open("w", encoding="utf-8") as f:
        for doc in kept:
            f.write(json.dumps({"text": doc}) + "\n")
    return kept


def describe(task: str, documents: list[str], scorer, unit: str) -> dict:
    scores = [score_document(scorer, segments(d, unit)) for d in documents]
    flat = [s for doc in scores for s in doc]
    means = sorted(sum(s) / len(s) for s in scores if s)
    stats = {
        "task": task,
        "documents": len(documents),
        "bytes": sum(len(d.encode()) for d in documents),
        "segments": len(flat),
        "flagged_segment_fraction": sum(s > 0 for s in flat) / len(flat),
        "mean_segment_score": sum(flat) / len(flat),
        "flagged_document_fraction": sum(m > 0 for m in means) / len(means),
        "median_document_mean_score": means[len(means) // 2],
    }
    print(json.dumps(stats))
    return stats


def main() -> None:
    stats = [
        describe("pep8", build_pep8(random.Random(0)), Pep8LineScorer(), "lines"),
        describe("pii", build_pii(random.Random(0)), PIIScorer(), "sentences"),
    ]
    (DATA / "corpus_stats.json").write_text(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
