"""Code completion from function signatures of the Python standard library (CDPG's code task,
built offline): the context is a fenced signature with its docstring, the model writes the
body, and the constraint is b(x, c) = "the body is there and signature + body compiles". Code is compiled with
``compile()`` only, never executed.

SmolLM2-Instruct stays in code mode only inside a ```python fence, so each context is
"```python\\n<def line(s)>\\n<docstring>\\n<indentation>" and a sample ends at the closing
fence. Ending the context in the body's indentation costs PEP8 warnings (E111/E117, a token
boundary artefact) but not compilation; without it, SmolLM2 writes at column 0 and 0 of 32
samples complete the function (measured; with it, 6% at T = 1 and 12% at T = 0.7, 64 tokens).
"""

from __future__ import annotations

import ast
import functools
import json
import random
import sysconfig
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bayesalign.scorers.code import Pep8Scorer, compiles

OPEN_FENCE = "```python\n"
CLOSE_FENCE = "```"


def stdlib_functions(min_body_lines: int = 2, max_body_lines: int = 8) -> list[dict[str, str]]:
    """Top-level, undecorated functions of the standard library's own modules that have a
    docstring and a short body: {"context", "reference", "source"} each, in a stable order."""
    return [dict(f) for f in _parse_stdlib(min_body_lines, max_body_lines)]


@functools.cache
def _parse_stdlib(min_body_lines: int, max_body_lines: int) -> tuple[dict[str, str], ...]:
    """Parsing ~170 modules takes seconds: once per process."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(root.glob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.decorator_list or not ast.get_docstring(node):
                continue
            rest = node.body[1:]
            if (
                not rest
                or not min_body_lines <= rest[-1].end_lineno - node.body[0].end_lineno <= max_body_lines
            ):
                continue
            head = "\n".join(lines[node.lineno - 1 : node.body[0].end_lineno])
            body = "\n".join(lines[node.body[0].end_lineno : rest[-1].end_lineno])
            indent = body[: len(body) - len(body.lstrip(" \t"))]
            if not indent:  # the body starts with a blank line
                continue
            entry = {  # the context ends in the body's indentation: the model starts writing code
                "context": f"{OPEN_FENCE}{head}\n{indent}",
                "reference": f"{body[len(indent) :]}\n{CLOSE_FENCE}",
                "source": f"{path.name}:{node.name}",
            }
            if completes_body(entry["context"], entry["reference"]):  # e.g. no column-0 strings
                found.append(entry)
    return tuple(found)


def write_splits(out: str | Path, heldout: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Shuffle the functions with ``seed`` and write train.jsonl and heldout.jsonl to ``out``."""
    functions = stdlib_functions()
    if heldout >= len(functions):
        raise ValueError(f"only {len(functions)} functions: cannot hold out {heldout}")
    random.Random(seed).shuffle(functions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "heldout.jsonl"
    for path, part in zip(paths, (functions[heldout:], functions[:heldout]), strict=True):
        path.write_text("".join(json.dumps(f) + "\n" for f in part))
    return paths


def completed_function(context: str, sample: str) -> str:
    """The code a sample completes: the context without its opening fence, then the sample up
    to its closing fence (what follows the fence is prose, not code). A sample that never
    closes the fence was cut by the length limit: its last, unfinished line is dropped."""
    code, fence, _ = sample.partition(CLOSE_FENCE)
    if not fence and not code.endswith("\n"):
        code = code[: code.rfind("\n") + 1]
    return context.removeprefix(OPEN_FENCE) + code


def completes_body(context: str, sample: str) -> bool:
    """The sample writes a body (at least one line, every line indented, so inside the
    function: a docstring alone is already a valid body, and code at column 0 would compile as
    module code) and the completed function compiles."""
    head = context.removeprefix(OPEN_FENCE).rstrip(" \t")  # a context may end in indentation
    body = completed_function(context, sample)[len(head) :]
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines or not all(line[0] in " \t" for line in lines):
        return False
    return compiles(completed_function(context, sample))


@dataclass(frozen=True)
class CompletionCompiles:
    """b(x, c) = 1 iff sample x completes the function of context c with a body that compiles
    (:func:`completes_body`)."""

    name: str = "compiles"
    boolean: bool = field(default=True, init=False)

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        if contexts is None or len(contexts) != len(texts):
            raise ValueError(f"scorer {self.name!r} needs the signature (context) of every sample")
        return torch.tensor(
            [float(completes_body(c, t)) for t, c in zip(texts, contexts, strict=True)],
            dtype=torch.float64,
        )


@dataclass(frozen=True)
class CompletionPep8:
    """s(x, c) = pycodestyle violations per character of the function that sample x completes
    from context c (signature + body; lower is better), or with ``boolean`` b(x, c) = 1 iff
    there is none. Contexts ending in indentation cost E111/E117 on the first body line only
    when the model indents again; a body cut by the length limit is judged on its whole lines."""

    boolean: bool = False
    name: str = "pep8"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pep8", Pep8Scorer(self.boolean, ignore_truncation=True, name=self.name))

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        if contexts is None or len(contexts) != len(texts):
            raise ValueError(f"scorer {self.name!r} needs the signature (context) of every sample")
        return self._pep8([completed_function(c, t) for t, c in zip(texts, contexts, strict=True)])
