"""Sentiment with VADER (a lexicon that ships inside its package: works offline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SentimentScorer:
    """VADER compound score in [-1, 1]; with ``threshold``, b(x) = 1 iff compound > threshold."""

    threshold: float | None = None
    name: str = "sentiment"

    def __post_init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as err:
            raise ImportError(
                "the sentiment scorer needs vaderSentiment: pip install 'bayesalign[sentiment]'"
            ) from err
        object.__setattr__(self, "_analyzer", SentimentIntensityAnalyzer())

    @property
    def boolean(self) -> bool:
        return self.threshold is not None

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        compound = torch.tensor(
            [self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=torch.float64
        )
        return compound if self.threshold is None else (compound > self.threshold).double()
