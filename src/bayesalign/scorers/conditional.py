"""Conditional scorers b(x, c): evidence about an output x given its source c (translation,
summarisation), in the spirit of the CDPG paper's constraints. Both are lexical and offline."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
)
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
# each number word on its own ("two hundred" asks for "2" and "100"): a simple offline version
NUMBER_WORDS = {w: str(v) for v, w in enumerate(_UNITS.split())} | {w: str(v) for w, v in _TENS.items()}
NUMBER_WORDS |= {"hundred": "100", "thousand": "1000"}

_WORD = re.compile(r"[A-Za-z]+")
_NUMBER = re.compile(r"\d+")
_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+\b")


def _require_contexts(name: str, texts: Sequence[str], contexts: Sequence[str] | None) -> Sequence[str]:
    if contexts is None or len(contexts) != len(texts):
        raise ValueError(f"scorer {name!r} is conditional, b(x, c): it needs one context per text")
    return contexts


@dataclass(frozen=True)
class NumbersAsDigitsScorer:
    """b(x, c) = 1 iff every number word of the source c ("three", "twenty") appears in the
    output x written as digits ("3", "20"). Sources without number words are satisfied."""

    name: str = "numbers_as_digits"
    boolean: bool = field(default=True, init=False)

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        contexts = _require_contexts(self.name, texts, contexts)
        out = []
        for text, context in zip(texts, contexts, strict=True):
            wanted = {NUMBER_WORDS[w.lower()] for w in _WORD.findall(context) if w.lower() in NUMBER_WORDS}
            out.append(float(wanted <= set(_NUMBER.findall(text))))
        return torch.tensor(out, dtype=torch.float64)


@dataclass(frozen=True)
class NamesSubsetScorer:
    """b(x, c) = 1 iff every capitalised word of x that does not start a sentence also occurs in
    c: the output names nothing (no person, place, product) that its source does not. A simple
    offline stand-in for "the output's named entities are a subset of the source's"."""

    name: str = "names_subset"
    boolean: bool = field(default=True, init=False)

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        contexts = _require_contexts(self.name, texts, contexts)
        out = []
        for text, context in zip(texts, contexts, strict=True):
            source = set(_WORD.findall(context))
            out.append(float(set(_CAPITALISED.findall(text)) <= source))
        return torch.tensor(out, dtype=torch.float64)
