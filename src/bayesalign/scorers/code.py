"""Code scorers: PEP 8 style (pycodestyle) and compilability (``compile()``).

Neither ever runs the code it scores: pycodestyle tokenizes the text in-process (``Checker``
accepts the lines, so no file is written), and ``compile()`` only turns source into bytecode.

``Pep8Scorer`` is the misalignment score of the PEP 8 task of Korbak et al. (2023), "Pretraining
language models with human preferences": pycodestyle violations per character, lower is better.
As a constraint (``boolean=True``), b(x) = 1 iff the text has no violation: as everywhere in the
library, b(x) = 1 means the preference holds.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bayesalign.scorers.base import per_character

# End-of-file codes: a text cut by the length limit ends without a newline (W292) or after blank
# lines (W391), so both only ever say where the text stopped.
END_OF_TEXT_CODES = frozenset({"W292", "W391"})
# pycodestyle reports a tokenizer error as E901, at the line where the unclosed bracket or
# string opens, which can be far from the end; only its EOF errors come from a cut (checked on
# Python 3.10 to 3.13; 3.12 added "unexpected " before "EOF in multi-line statement").
_CUT_STATEMENT = re.compile(r"E901 TokenError: (unexpected )?EOF in multi-line (statement|string)")


_SOURCE_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def source_lines(text: str) -> list[str]:
    """The lines of ``text`` as Python's tokenizer sees them, each with its line break: split at
    \\n, \\r\\n and \\r only. ``str.splitlines`` also splits at form feeds and other separators
    that are not line ends in Python source (the stdlib has form feeds), and pycodestyle given
    such lines misnumbers its reports or fails."""
    return _SOURCE_LINE.findall(text)


def _pycodestyle() -> Any:
    try:
        import pycodestyle
    except ImportError as err:
        raise ImportError("the pep8 scorer needs pycodestyle: pip install 'bayesalign[code]'") from err
    return pycodestyle


def _violation_report(pycodestyle: Any) -> type:
    """A pycodestyle report that keeps (line, column, message) of each violation instead of printing."""

    class ViolationLog(pycodestyle.BaseReport):
        def init_file(self, filename: str, lines: list[str], expected: Any, line_offset: int) -> None:
            super().init_file(filename, lines, expected, line_offset)
            self.found: dict[tuple[int, int, str], None] = {}

        def error(self, line_number: int, offset: int, text: str, check: Any) -> str | None:
            code = super().error(line_number, offset, text, check)
            if code:  # a set (ordered): after a tokenizer error, the last line is checked twice
                self.found[line_number, offset, text] = None
            return code

    return ViolationLog


def is_truncation_artefact(line: int, message: str, lines: Sequence[str]) -> bool:
    """Whether a violation can be caused by the text being cut at its end (mid-line or
    mid-block) rather than by its style: the end-of-text codes W292/W391, anything on a last
    line that has no line break (cut mid-line: W291/W293 after a cut in the indentation,
    E225/E231 after a cut operator, E115/E305 on a cut first token), and E901 EOF errors of the
    tokenizer (a bracket or triple-quoted string still open where the text stops).

    Measured on 3,600 cuts of 120 stdlib modules (half at random points, half at line ends):
    of the 4,100 violations that the cuts added, all but one (an E201 before a string cut on the
    next line) are of these kinds, and none of the 11,900 on the lines that the cut left whole is
    dropped. A cut after a block opener ("def f():\\n") adds none: E112 needs a next line.
    (E999 is flake8's compile check, not pycodestyle's; pycodestyle's syntax errors are E901.)
    """
    cut_mid_line = bool(lines) and not lines[-1].endswith(("\n", "\r"))
    return (
        message[:4] in END_OF_TEXT_CODES
        or (cut_mid_line and line >= len(lines))
        or _CUT_STATEMENT.match(message) is not None
    )


@dataclass(frozen=True)
class Pep8Scorer:
    """pycodestyle violations per character of x (0 for the empty text); with ``boolean``,
    b(x) = 1 iff there is none.

    pycodestyle's own defaults are used (79 columns; the "controversial" codes E121, E123, E126,
    E226, E24, E704, W503, W504 ignored), pinned so that a user's ~/.config/pycodestyle cannot
    change the scores. With ``ignore_truncation``, violations that only say the text was cut
    where it ends are not counted (:func:`is_truncation_artefact`): use it for samples stopped by
    a token limit. The denominator stays the length of the whole text.
    """

    boolean: bool = False
    ignore_truncation: bool = False
    name: str = "pep8"

    def __post_init__(self) -> None:
        pycodestyle = _pycodestyle()
        report = _violation_report(pycodestyle)
        defaults, _ = pycodestyle.get_parser().parse_args([])  # overrides what config files set
        options = pycodestyle.StyleGuide({**vars(defaults), "reporter": report}).options
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_checker", pycodestyle.Checker)
        object.__setattr__(self, "_report", report)

    def violations(self, text: str) -> list[tuple[int, int, str]]:
        """(line, column, "CODE message") of every violation counted in ``text``."""
        lines = source_lines(text)
        found = self._all_violations(lines)
        if self.ignore_truncation:
            found = [(n, c, m) for n, c, m in found if not is_truncation_artefact(n, m, lines)]
        return found

    def _all_violations(self, lines: list[str]) -> list[tuple[int, int, str]]:
        checker = self._checker(lines=lines, options=self._options, report=self._report(self._options))
        try:
            checker.check_all()
        except (IndexError, KeyError, ValueError, TypeError) as err:
            # pycodestyle's checks assume the tokens of nearly valid Python; on some broken texts
            # (a string left open after a line continuation, say) they fail. Such a text is not
            # Python: what was found so far counts, plus one violation for the failure.
            checker.report.found[len(lines), 0, f"E901 pycodestyle failed: {type(err).__name__}"] = None
        return list(checker.report.found)

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        return per_character([len(self.violations(t)) for t in texts], texts, self.boolean)


@dataclass(frozen=True)
class Pep8LineScorer(Pep8Scorer):
    """The line-level PEP 8 misalignment of the PHF paper: each line of a file scores its
    pycodestyle violations per character.

    A line cannot be checked on its own: out of its file, an indented line raises E113
    (unexpected indentation) and the blank-line rules (E30x) cannot see the lines around it.
    :meth:`score_segments` therefore checks the whole file once and assigns each violation to
    the line pycodestyle reports it on. A file is complete, so every violation counts there,
    including W292/W391 at its end; ``ignore_truncation`` applies to :meth:`__call__` only,
    which scores samples (whole texts) as :class:`Pep8Scorer` does.
    """

    name: str = "pep8_lines"

    def score_segments(self, segments: Sequence[str]) -> torch.Tensor:
        """Violations per character of each line of one document, ``segments`` being its lines
        in order, each with its line break (:func:`source_lines`)."""
        lines = source_lines("".join(segments))
        if lines != list(segments):
            raise ValueError(
                f"scorer {self.name!r} scores the lines of a document: every segment must be one line "
                "(corpus.unit: lines)"
            )
        counts = [0] * len(lines)
        for line, _, _ in self._all_violations(lines):
            counts[min(max(line, 1), len(lines)) - 1] += 1  # an EOF error may point past the end
        return per_character(counts, lines, self.boolean)


def compiles(source: str) -> bool:
    """True iff ``source`` compiles as a Python module. Nothing is executed: compile() only
    builds bytecode (its constant folding is size-limited, so ``"a" * 10**9`` stays unfolded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes is not an error
            compile(source, "<sample>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        # ValueError: null bytes (3.11); RecursionError/MemoryError: pathological nesting
        return False
    return True


@dataclass(frozen=True)
class CompilesScorer:
    """b(x) = 1 iff ``prefix`` + (the sample's context, with ``context_as_prefix``) + x compiles
    as Python. A prefix such as a signature lets a sample that is a function body count:
    ``prefix="def f(a, b):\\n"`` with x = "    return a + b\\n". For the stdlib completion task,
    whose contexts are fenced, use the ``completion_compiles`` scorer instead."""

    prefix: str = ""
    context_as_prefix: bool = False
    name: str = "compiles"
    boolean: bool = field(default=True, init=False)

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        if not self.context_as_prefix:
            contexts = [""] * len(texts)
        elif contexts is None or len(contexts) != len(texts):
            raise ValueError(f"scorer {self.name!r} has context_as_prefix: it needs one context per text")
        return torch.tensor(
            [float(compiles(self.prefix + c + t)) for t, c in zip(texts, contexts, strict=True)],
            dtype=torch.float64,
        )
