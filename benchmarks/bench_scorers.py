"""Texts per second of the offline scorers, batched, on one thread.

    .venv/bin/python benchmarks/bench_scorers.py [--texts 1000] [--repeats 3]

Code scorers read 12-line windows of standard-library modules (real code, about 400
characters); text scorers read templated English sentences (about 60 characters), a third of
them carrying an e-mail address, a phone number, a URL or a card number. Each row is the best
of ``--repeats`` timed passes over the whole batch, after one untimed pass (imports, caches).
"""

from __future__ import annotations

import argparse
import random
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits  # comes with scikit-learn

from bayesalign.scorers.code import CompilesScorer, Pep8Scorer
from bayesalign.scorers.offensive import OffensiveScorer
from bayesalign.scorers.pii import PIIScorer
from bayesalign.scorers.sentiment import SentimentScorer

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
    rows = [
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
        ("sentiment (VADER, for scale)", SentimentScorer(), text),
    ]
    print(f"{'scorer':<30} {'texts':>6} {'chars/text':>10} {'texts/s':>10} {'texts/CPU s':>12}")
    for label, scorer, texts in rows:
        wall, cpu = best_rates(scorer, texts, args.repeats)
        chars = sum(map(len, texts)) / len(texts)
        print(f"{label:<30} {len(texts):>6} {chars:>10.0f} {wall:>10,.0f} {cpu:>12,.0f}")


if __name__ == "__main__":
    main()
