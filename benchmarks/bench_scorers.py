"""Texts per second of the offline scorers, batched, on one thread.

    .venv/bin/python benchmarks/bench_scorers.py [--texts 1000] [--repeats 3]

Code scorers read 12-line windows of standard-library modules (real code, about 400
characters); text scorers read templated English sentences (about 60 characters), a third of
them carrying an e-mail address, a phone number, a URL or a card number. Each row is the best
of ``--repeats`` timed passes over the whole batch, after one untimed pass (imports, caches).

The HF classifier row is a randomly initialised GPT-2 sequence classifier of DistilBERT's size
(6 layers, width 768) with SmolLM2's 49k-token tokenizer (cached by the library): its speed is
that of a local classifier of that size; its scores mean nothing. The parallel rows run the
PEP8 scorer in 2 worker processes, first on texts it has not seen, then again (all cache hits).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits  # comes with scikit-learn

from bayesalign.builtin_models import cache_root
from bayesalign.scorers.classifier import ClassifierScorer
from bayesalign.scorers.code import CompilesScorer, Pep8Scorer
from bayesalign.scorers.offensive import OffensiveScorer
from bayesalign.scorers.parallel import ParallelScorer
from bayesalign.scorers.pii import PIIScorer
from bayesalign.scorers.sentiment import SentimentScorer
from bayesalign.scorers.text import RegexScorer, WordScorer

SUBJECTS = ["The committee", "My neighbour", "Our new intern", "That referee", "The support team"]
VERBS = ["said the report was", "thought the match was", "called the idea", "found the movie"]
OBJECTS = ["brilliant", "a total waste of time", "stupid and useless", "fine, if a bit long", "awful"]
PII = [
    "Write to ann.lee@example.com.",
    "Call (650) 253-0000.",
    "See https://example.org/a.",
    "Card 4111 1111 1111 1111.",
]


def code_windows(n: int, lines: int = 12) -> list[str]:
    """``n`` windows of ``lines`` lines from the stdlib's own modules, in a fixed order."""
    out: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        out += ["".join(source[i : i + lines]) for i in range(0, len(source) - lines, 10 * lines)]
        if len(out) >= n:
            return out[:n]
    return out


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
        out.append(f"{text} {rng.choice(PII)}" if i % 3 == 0 else text)
    return out


def distilbert_sized_classifier(folder: Path) -> ClassifierScorer | None:
    """A random GPT-2 classifier of DistilBERT's size with SmolLM2's tokenizer, saved to
    ``folder``; None when the built-in model has not been cached yet (make demo caches it)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tokenizer_folder = cache_root() / "models" / "smollm2-135m-instruct"
    if not (tokenizer_folder / "tokenizer.json").exists():
        return None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=768,
        n_layer=6,
        n_head=12,
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    GPT2ForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return ClassifierScorer(str(folder), "positive")


def best_rates(
    score: Callable[[Sequence[str]], object], texts: list[str], repeats: int
) -> tuple[float, float]:
    """Texts per wall second and per CPU second (other jobs on the machine slow the first only)."""
    score(texts)
    wall, cpu = min(_timed(score, texts) for _ in range(repeats))
    return len(texts) / wall, len(texts) / cpu


def _timed(score: Callable[[Sequence[str]], object], texts: list[str]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    score(texts)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's and scikit-learn's BLAS/OpenMP pools
    code, text = code_windows(args.texts), sentences(args.texts)
    offensive = OffensiveScorer()
    parallel = ParallelScorer(Pep8Scorer, workers=2)
    calls = itertools.count()

    def unseen(texts: list[str]) -> list[str]:  # new texts on every call: no cache hit
        n = next(calls)
        return [f"{t}# call {n}\n" for t in texts]

    rows = [
        ("word (3 words)", WordScorer(("brilliant", "awful", "waste")), text),
        ("regex (e-mail)", RegexScorer(r"[\w.]+@[\w.]+"), text),
        ("pep8", Pep8Scorer(), code),
        ("pep8 ignore_truncation", Pep8Scorer(ignore_truncation=True), code),
        ("compiles", CompilesScorer(), code),
        ("pii", PIIScorer(), text),
        ("offensive (batched)", offensive, text),
        (
            "offensive (one per call)",
            lambda ts: [offensive([t]) for t in ts],
            text[: max(1, len(text) // 10)],
        ),
        ("sentiment (VADER)", SentimentScorer(), text),
        ("pep8, 2 workers, cold cache", lambda ts: parallel(unseen(ts)), code),
        ("pep8, 2 workers, cache hits", parallel, code),
    ]
    with tempfile.TemporaryDirectory() as folder:
        classifier = distilbert_sized_classifier(Path(folder))
    if classifier is not None:
        rows.append(("HF classifier, DistilBERT size", classifier, text))
    print(f"{'scorer':<30} {'texts':>6} {'chars/text':>10} {'texts/s':>10} {'texts/CPU s':>12}")
    for label, scorer, texts in rows:
        wall, cpu = best_rates(scorer, texts, args.repeats)
        chars = sum(map(len, texts)) / len(texts)
        print(f"{label:<30} {len(texts):>6} {chars:>10.0f} {wall:>10,.0f} {cpu:>12,.0f}")
    parallel.close()


if __name__ == "__main__":
    main()
