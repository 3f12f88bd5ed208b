"""Any Python function as a scorer."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bayesalign.scorers.base import ScorerError


@dataclass(frozen=True)
class CallableScorer:
    """Wraps ``fn``. With ``batched``, fn(texts[, contexts]) returns one score per text;
    otherwise fn(text[, context]) is called per text. Contexts are passed only when
    ``takes_context`` says so (guessing from the signature would feed them into any
    defaulted second parameter)."""

    fn: Callable
    boolean: bool = False
    batched: bool = False
    takes_context: bool = False
    name: str = "callable"

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        if self.batched:
            out = self.fn(texts, contexts) if self.takes_context else self.fn(texts)
        elif self.takes_context:
            ctx = contexts if contexts is not None else [None] * len(texts)
            out = [self.fn(t, c) for t, c in zip(texts, ctx, strict=True)]
        else:
            out = [self.fn(t) for t in texts]
        for i, value in enumerate([] if isinstance(out, torch.Tensor) else out):
            if value is None or isinstance(value, str | bytes):  # torch's own error names neither
                raise ScorerError(
                    f"scorer {self.name!r} returned {value!r} "
                    f"({type(value).__name__}) for text {texts[i]!r}; a score must be a number"
                )
        return torch.as_tensor(out, dtype=torch.float64)


def import_callable(path: str) -> Callable:
    """Resolve "package.module:function" (the user's own code, named in their config). Any
    failure of that code while importing is reported as the scorer's, naming the path."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ScorerError(f"callable {path!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except Exception as err:
        raise ScorerError(f"cannot import callable {path!r}: {type(err).__name__}: {err}") from err
    if not callable(fn):
        raise ScorerError(f"{path!r} is not callable")
    return fn
