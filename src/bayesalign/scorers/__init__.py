"""Evidence about preferences: scorers that map texts to b(x), φ(x) or r(x)."""

from bayesalign.scorers.base import Scorer, ScorerError, checked_scores
from bayesalign.scorers.python_callable import CallableScorer, import_callable
from bayesalign.scorers.sentiment import SentimentScorer
from bayesalign.scorers.text import RegexScorer, WordScorer

__all__ = [
    "CallableScorer",
    "RegexScorer",
    "Scorer",
    "ScorerError",
    "SentimentScorer",
    "WordScorer",
    "checked_scores",
    "import_callable",
]
