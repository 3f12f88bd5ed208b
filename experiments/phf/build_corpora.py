"""Build the two PHF corpora offline from this machine's Python standard library.

pep8: a fixed sample of the stdlib's .py files (one file = one document; lines are scored in
      their file by the pep8_lines scorer), copied to data/pep8/.
pii:  English text: the documentation topics shipped in pydoc_data, the docstrings of modules,
      classes and functions, the comment blocks of the source, and the e-mail messages of the
      email package's tests (which hold real-looking addresses), shuffled into data/pii.jsonl
      (one {"text": ...} record per document).
pii_dense: 4 MB, half of it documents from the same English sources as pii, half entries of the
      Debian changelogs installed on this machine (/usr/share/doc/*/changelog.Debian.gz: release
      notes that each end with the maintainer's name and e-mail), shuffled into
      data/pii_dense.jsonl. About 12 % of its sentences hold PII against 1.9 % in pii, so that
      small models write PII often enough for the objectives to differ measurably. The
      changelogs present depend on the installed packages: the list used goes to
      data/pii_dense_sources.txt.

Prints each corpus's size and the fraction of segments the task's scorer flags.

    python experiments/phf/build_corpora.py
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import pydoc_data.topics
import random
import re
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
PII_DENSE_BYTES = 4_000_000  # about 1.2M tokens: its runs train on 1M tokens without repeats
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


def english_documents() -> list[str]:
    """pydoc_data's topics, the email package's test messages, and the stdlib's docstrings and
    comment blocks, in a fixed order."""
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
    return documents


def take(documents: list[str], size: int) -> list[str]:
    """The first documents whose total reaches ``size`` bytes."""
    kept, total = [], 0
    for doc in documents:
        if total >= size:
            break
        kept.append(doc)
        total += len(doc.encode())
    return kept


def write_jsonl(path: Path, documents: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": doc}) + "\n" for doc in documents)


def build_pii(rng: random.Random) -> list[str]:
    documents = english_documents()
    rng.shuffle(documents)
    kept = take(documents, PII_BYTES)
    write_jsonl(DATA / "pii.jsonl", kept)
    return kept


def debian_changelog_entries() -> tuple[list[str], list[Path]]:
    """Every entry (a version's notes and its " -- Name <e-mail>  date" sign-off) of the
    installed packages' Debian changelogs, with the files read."""
    files = sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz"))
    entries = []
    for path in files:
        text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        entries += [e.strip() for e in re.split(r"\n(?=\S)", text) if " -- " in e and len(e) > 150]
    return entries, files


def build_pii_dense(rng: random.Random) -> list[str]:
    entries, files = debian_changelog_entries()
    if not entries:
        raise SystemExit("no /usr/share/doc/*/changelog.Debian.gz here: pii_dense needs a Debian system")
    english = english_documents()
    rng.shuffle(english)
    rng.shuffle(entries)
    documents = take(english, PII_DENSE_BYTES // 2) + take(entries, PII_DENSE_BYTES // 2)
    rng.shuffle(documents)
    write_jsonl(DATA / "pii_dense.jsonl", documents)
    (DATA / "pii_dense_sources.txt").write_text("".join(f"{p}\n" for p in files))
    return documents


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
    pii = build_pii(random.Random(0))
    stats = [
        describe("pep8", build_pep8(random.Random(0)), Pep8LineScorer(), "lines"),
        describe("pii", pii, PIIScorer(), "sentences"),
        describe("pii_dense", build_pii_dense(random.Random(0)), PIIScorer(), "sentences"),
    ]
    (DATA / "corpus_stats.json").write_text(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
