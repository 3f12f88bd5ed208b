"""Lexical scorers: whole-word presence and regular expressions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class WordScorer:
    """b(x) = 1 iff any of ``words`` (or all of them, with ``require_all``) occurs as a whole word.

    "Whole word" means delimited by non-word characters, so "amazing" does not match
    "amazingly". Matching ignores case unless ``case_sensitive``.
    """

    words: tuple[str, ...]
    require_all: bool = False
    case_sensitive: bool = False
    name: str = "word"
    boolean: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if not self.words or any(not w.strip() for w in self.words):
            raise ValueError(f"scorer {self.name!r}: words must be non-empty strings, got {self.words!r}")
        flags = 0 if self.case_sensitive else re.IGNORECASE
        whole = [rf"(?<!\w){re.escape(w)}(?!\w)" for w in self.words]
        # "any" is one alternation (one scan per text); "all" needs one pattern per word
        patterns = whole if self.require_all else ["|".join(whole)]
        object.__setattr__(self, "_patterns", tuple(re.compile(p, flags) for p in patterns))

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        return torch.tensor(
            [float(all(p.search(t) for p in self._patterns)) for t in texts],
            dtype=torch.float64,
        )


@dataclass(frozen=True)
class RegexScorer:
    """b(x) = 1 iff ``pattern`` matches somewhere in x; with ``count``, φ(x) = number of matches."""

    pattern: str
    count: bool = False
    ignore_case: bool = False
    name: str = "regex"

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)
        except re.error as err:
            raise ValueError(f"scorer {self.name!r}: invalid regex {self.pattern!r}: {err}") from err
        object.__setattr__(self, "_compiled", compiled)

    @property
    def boolean(self) -> bool:
        return not self.count

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        if self.count:
            values = [len(self._compiled.findall(t)) for t in texts]
        else:
            values = [self._compiled.search(t) is not None for t in texts]
        return torch.tensor(values, dtype=torch.float64)
