"""The scorer protocol: evidence about a batch of texts, as one number per text.

A *boolean* scorer returns b(x) ∈ {0, 1} (a pointwise constraint); a real-valued one returns a
feature φ(x) or a reward r(x). Scorers are batched because the useful ones (classifiers, linters
in worker processes) are much faster on a batch than one text at a time. Conditional scorers
b(x, c) receive the contexts; unconditional ones ignore them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Scorer(Protocol):
    name: str
    boolean: bool

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        """One score per text, as a float64 tensor of shape [len(texts)]."""
        ...


class ScorerError(ValueError):
    """A scorer that failed or returned something other than one finite number per text; the
    message names the scorer (and the text), since a traceback into user code rarely does."""


def checked_scores(scorer: Scorer, texts: Sequence[str], contexts: Sequence[str] | None) -> torch.Tensor:
    """Call ``scorer`` and check what it returned, naming the scorer in every error."""
    try:
        scores = torch.as_tensor(scorer(texts, contexts), dtype=torch.float64)
    except ScorerError:
        raise  # from a part of a combinator, already named
    except Exception as err:  # the scorer may be the user's own code: any failure is its own
        raise ScorerError(f"scorer {scorer.name!r} failed: {type(err).__name__}: {err}") from err
    if scores.shape != (len(texts),):
        raise ScorerError(
            f"scorer {scorer.name!r} returned shape {tuple(scores.shape)} for {len(texts)} texts"
        )
    bad = ~torch.isfinite(scores)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ScorerError(
            f"scorer {scorer.name!r} returned {scores[i].item()} for text {texts[i]!r}; scores must be finite"
        )
    if scorer.boolean and not ((scores == 0) | (scores == 1)).all():
        i = int(((scores != 0) & (scores != 1)).nonzero()[0])
        raise ScorerError(
            f"boolean scorer {scorer.name!r} returned {scores[i].item()} for text {texts[i]!r}; "
            "a constraint b(x) must be 0 or 1"
        )
    return scores


def per_character(counts: Sequence[int], texts: Sequence[str], boolean: bool) -> torch.Tensor:
    """Misalignment as in the PHF paper: ``counts`` (violations, PII items) per character of
    each text (0 for the empty text); with ``boolean``, b(x) = 1 iff the count is 0."""
    if boolean:
        return torch.tensor([float(c == 0) for c in counts], dtype=torch.float64)
    return torch.tensor([c / max(len(t), 1) for c, t in zip(counts, texts, strict=True)], dtype=torch.float64)
