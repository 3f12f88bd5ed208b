"""Any Python function as a scorer."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


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
        return torch.as_tensor(out, dtype=torch.float64)


def import_callable(path: str) -> Callable:
    """Resolve "package.module:function" (the user's own code, named in their config)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"callable {path!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import callable {path!r}: {err}") from err
    if not callable(fn):
        raise ValueError(f"{path!r} is not callable")
    return fn
