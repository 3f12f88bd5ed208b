"""Any Python function as a scorer."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bayesalign.scorers.base import ScorerError


@dataclass(frozen=True)
class CallableScorer:
    """Wraps ``fn``. With ``batched``, fn(texts[, contexts]) returns one score per text;
    otherwise fn(text[, context]) is called per text. Contexts are passed only when
    ``takes_context`` says so (guessing from the signature would feed them into any
    defaulted second parameter). Likewise ``columns``: those columns of each text's context
    row (`bayesalign.contexts.Context`) are passed as keyword arguments, one value per text
    (a list of them when batched), as TRL passes a dataset's columns to reward functions."""

    fn: Callable
    boolean: bool = False
    batched: bool = False
    takes_context: bool = False
    name: str = "callable"
    columns: tuple[str, ...] = ()

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        rows = self._columns(contexts)
        if self.batched:
            out = self.fn(texts, contexts, **rows) if self.takes_context else self.fn(texts, **rows)
        else:
            ctx = contexts if contexts is not None else [None] * len(texts)
            out = [
                self.fn(*((t, c) if self.takes_context else (t,)), **{k: v[i] for k, v in rows.items()})
                for i, (t, c) in enumerate(zip(texts, ctx, strict=True))
            ]
        for i, value in enumerate([] if isinstance(out, torch.Tensor) else out):
            if value is None or isinstance(value, str | bytes):  # torch's own error names neither
                raise ScorerError(
                    f"scorer {self.name!r} returned {value!r} "
                    f"({type(value).__name__}) for text {texts[i]!r}; a score must be a number"
                )
        return torch.as_tensor(out, dtype=torch.float64)

    def _columns(self, contexts: Sequence[str] | None) -> dict[str, list]:
        """Each asked column's value in every text's context row."""
        if not self.columns:
            return {}
        if contexts is None:
            raise ScorerError(
                f"scorer {self.name!r} asks for columns {list(self.columns)}, which come with contexts: "
                "these texts have none"
            )
        values: dict[str, list] = {k: [] for k in self.columns}
        for context in contexts:
            row = getattr(context, "columns", {})
            for k in self.columns:
                if k not in row:
                    raise ScorerError(
                        f"scorer {self.name!r} asks for column {k!r}, which context {context!r} lacks "
                        f"(its other columns: {', '.join(row) or 'none'})"
                    )
                values[k].append(row[k])
        return values


def import_callable(path: str, folder: str | Path | None = None) -> Callable:
    """Resolve "module:function" (the user's own code, named in their config).

    ``folder`` (the config file's folder) is put first on the import path, as Python does for a
    script's own folder, so that a module beside the config imports without ``PYTHONPATH``. It
    stays there: the function may import its neighbours when it is called."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ScorerError(f"callable {path!r} must look like 'package.module:function'")
    where = "on the Python path"
    if folder is not None:
        folder = str(Path(folder).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
        where = f"in {folder} and on the Python path"
    cannot = f"cannot import callable {path!r}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ScorerError(f"{cannot}: looked for module {module_name!r} {where}: {err}") from err
    except Exception as err:  # the user's module failed while it ran: say so, in one line
        raise ScorerError(f"{cannot}: importing {module_name!r} raised {type(err).__name__}: {err}") from err
    fn = getattr(module, attr, None)
    if fn is None:
        raise ScorerError(f"{cannot}: module {module_name!r} ({module.__file__}) has no {attr!r}")
    if not callable(fn):
        raise ScorerError(f"{path!r} is not callable")
    return fn
