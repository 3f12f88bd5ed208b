"""Scorers made of scorers: and / or / not of constraints, and weighted sums of rewards. Each
part scores the whole batch once (so a slow scorer is not called per text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bayesalign.scorers.base import Scorer, checked_scores


def _boolean_parts(kind: str, parts: Sequence[Scorer]) -> None:
    if not parts:
        raise ValueError(f"{kind} needs at least one scorer")
    real = [p.name for p in parts if not p.boolean]
    if real:
        raise ValueError(f"{kind} combines constraints; {real} are real-valued (give them a threshold)")


@dataclass(frozen=True)
class AllOf:
    """b(x) = 1 iff every part holds."""

    parts: tuple[Scorer, ...]
    name: str = "all"
    boolean: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _boolean_parts("all", self.parts)

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        return torch.stack([checked_scores(p, texts, contexts) for p in self.parts]).min(0).values


@dataclass(frozen=True)
class AnyOf:
    """b(x) = 1 iff at least one part holds."""

    parts: tuple[Scorer, ...]
    name: str = "any"
    boolean: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _boolean_parts("any", self.parts)

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        return torch.stack([checked_scores(p, texts, contexts) for p in self.parts]).max(0).values


@dataclass(frozen=True)
class Not:
    """b(x) = 1 − part(x)."""

    part: Scorer
    name: str = "not"
    boolean: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _boolean_parts("not", [self.part])

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        return 1.0 - checked_scores(self.part, texts, contexts)


@dataclass(frozen=True)
class WeightedSum:
    """r(x) = Σ_i w_i·s_i(x): a reward (or feature) from several scorers, boolean or not."""

    parts: tuple[Scorer, ...]
    weights: tuple[float, ...]
    name: str = "sum"
    boolean: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not self.parts or len(self.parts) != len(self.weights):
            raise ValueError("sum needs one weight per scorer, and at least one scorer")

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        total = torch.zeros(len(texts), dtype=torch.float64)
        for weight, part in zip(self.weights, self.parts, strict=True):
            total = total + weight * checked_scores(part, texts, contexts)
        return total
