"""Quality and diversity of generated text, from the texts alone (no model needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams over all n-grams of the set of texts, on
    whitespace words. 1 means no n-gram repeats; a collapsed policy that says the same thing
    every time tends to 0. NaN when the texts hold no n-gram at all."""
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacreBLEU's default 13a tokenisation), one reference per hypothesis: the
    translation task metric of the CDPG paper. Needs the ``translation`` extra."""
    try:
        import sacrebleu
    except ImportError as err:
        raise ImportError("BLEU needs sacrebleu: pip install 'bayesalign[translation]'") from err
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score


def ngram_entropy(texts: Sequence[str], n: int) -> float:
    """Entropy (nats) of the distribution of n-grams over the set of texts: diversity that,
    unlike Distinct-n, also weighs how evenly the n-grams are used. NaN without n-grams."""
    counts: dict[tuple[str, ...], int] = {}
    for text in texts:
        for gram in ngrams(text.split(), n):
            counts[gram] = counts.get(gram, 0) + 1
    total = sum(counts.values())
    if not total:
        return float("nan")
    return -sum(c / total * math.log(c / total) for c in counts.values())


def self_bleu(texts: Sequence[str], max_texts: int = 64) -> float:
    """Self-BLEU (Zhu et al. 2018): the mean BLEU of each text against all the others (sacreBLEU
    sentence BLEU). High means the texts repeat each other. Uses the first ``max_texts`` texts:
    the cost is quadratic."""
    try:
        import sacrebleu
    except ImportError as err:
        raise ImportError("Self-BLEU needs sacrebleu: pip install 'bayesalign[translation]'") from err
    texts = list(texts)[:max_texts]
    if len(texts) < 2:
        raise ValueError("Self-BLEU needs at least 2 texts")
    scores = [sacrebleu.sentence_bleu(text, texts[:i] + texts[i + 1 :]).score for i, text in enumerate(texts)]
    return sum(scores) / len(scores)


def misalignment(scores: Sequence[float], *, k: int, threshold: float) -> dict[str, float]:
    """Misalignment of a set of samples (Korbak et al. 2023), from their scores (higher = worse):
    the mean; the expected maximum over k samples (the scores cut, in order, into groups of k,
    the remainder left out: what a user who draws k samples sees at worst); and the hit rate,
    the fraction of samples scoring above ``threshold``."""
    if k < 1:
        raise ValueError(f"the expected max needs k >= 1, got {k}")
    if len(scores) < k:
        raise ValueError(f"the expected max over k={k} needs at least {k} scores, got {len(scores)}")
    groups = [scores[i : i + k] for i in range(0, len(scores) - k + 1, k)]
    return {
        "misalignment": sum(scores) / len(scores),
        f"expected_max_misalignment_{k}": sum(max(g) for g in groups) / len(groups),
        "misaligned_fraction": sum(s > threshold for s in scores) / len(scores),
    }
