"""The scorer schema: one spec per scorer type, the explicit registry of types (`SCORERS`) and
`ScorerSpec`, the union a config field holds. Each spec's ``build()`` makes its scorer.

Training configs (target, misalignment) and pretraining configs both use it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from bayesalign.config.base import Section, closest
from bayesalign.scorers import (
    CallableScorer,
    RegexScorer,
    Scorer,
    SentimentScorer,
    WordScorer,
    import_callable,
)
from bayesalign.scorers.classifier import ClassifierScorer
from bayesalign.scorers.code import CompilesScorer, Pep8LineScorer, Pep8Scorer
from bayesalign.scorers.combinators import AllOf, AnyOf, Not, WeightedSum
from bayesalign.scorers.conditional import NamesSubsetScorer, NumbersAsDigitsScorer
from bayesalign.scorers.offensive import OffensiveScorer, toxicity_scorer
from bayesalign.scorers.parallel import ParallelScorer
from bayesalign.scorers.pii import DEFAULT_KINDS, PIIKind, PIIScorer
from bayesalign.tasks.code_completion import CompletionCompiles, CompletionPep8


class WordSpec(Section):
    type: Literal["word"]
    words: list[str]
    require_all: bool = False
    case_sensitive: bool = False
    name: str = "word"

    def build(self) -> Scorer:
        return WordScorer(tuple(self.words), self.require_all, self.case_sensitive, self.name)


class RegexSpec(Section):
    type: Literal["regex"]
    pattern: str
    count: bool = False
    ignore_case: bool = False
    name: str = "regex"

    def build(self) -> Scorer:
        return RegexScorer(self.pattern, self.count, self.ignore_case, self.name)


class SentimentSpec(Section):
    type: Literal["sentiment"]
    threshold: float | None = None
    name: str = "sentiment"

    def build(self) -> Scorer:
        return SentimentScorer(self.threshold, self.name)


class CallableSpec(Section):
    type: Literal["callable"]
    function: str = Field(description="'package.module:function', the user's own code")
    boolean: bool = False
    batched: bool = False
    takes_context: bool = False
    columns: list[str] = Field(
        [], description="columns of each sample's context row, passed to the function as keyword arguments"
    )
    name: str = "callable"

    def build(self) -> Scorer:
        fn = import_callable(self.function)
        return CallableScorer(
            fn, self.boolean, self.batched, self.takes_context, self.name, tuple(self.columns)
        )


class NumbersAsDigitsSpec(Section):
    """b(x, c): every number word of the source c appears as digits in x (conditional)."""

    type: Literal["numbers_as_digits"]
    name: str = "numbers_as_digits"

    def build(self) -> Scorer:
        return NumbersAsDigitsScorer(self.name)


class NamesSubsetSpec(Section):
    """b(x, c): x names nothing (capitalised words) that the source c does not (conditional)."""

    type: Literal["names_subset"]
    name: str = "names_subset"

    def build(self) -> Scorer:
        return NamesSubsetScorer(self.name)


class CompletionCompilesSpec(Section):
    """b(x, c): the function whose fenced signature is c, completed by x, compiles (tasks/)."""

    type: Literal["completion_compiles"]
    name: str = "compiles"

    def build(self) -> Scorer:
        return CompletionCompiles(self.name)


class CompletionPep8Spec(Section):
    """PEP8 violations per character of the function completed from a fenced signature (tasks/)."""

    type: Literal["completion_pep8"]
    boolean: bool = Field(False, description="b(x, c) = 1 iff no violation")
    name: str = "pep8"

    def build(self) -> Scorer:
        return CompletionPep8(self.boolean, self.name)


class Pep8Spec(Section):
    """pycodestyle violations per character (lower is better); boolean: b(x) = 1 iff none."""

    type: Literal["pep8"]
    boolean: bool = False
    ignore_truncation: bool = Field(
        False, description="do not count what only says the text was cut at its end (W292, W391, ...)"
    )
    name: str = "pep8"

    def build(self) -> Scorer:
        return Pep8Scorer(self.boolean, self.ignore_truncation, self.name)


class Pep8LinesSpec(Pep8Spec):
    """pep8 scored line by line within each file, as the PHF paper's line-level misalignment
    (pretraining corpora, corpus.unit: lines); samples are scored as a whole, like pep8, and
    ``ignore_truncation`` applies to them only."""

    type: Literal["pep8_lines"]
    name: str = "pep8_lines"

    def build(self) -> Scorer:
        return Pep8LineScorer(self.boolean, self.ignore_truncation, self.name)


class CompilesSpec(Section):
    """b(x) = 1 iff prefix + (context) + x compiles as Python; never executed."""

    type: Literal["compiles"]
    prefix: str = Field("", description="prepended before compiling, e.g. a function signature")
    context_as_prefix: bool = Field(False, description="prepend each sample's context (after prefix)")
    name: str = "compiles"

    def build(self) -> Scorer:
        return CompilesScorer(self.prefix, self.context_as_prefix, self.name)


class PIISpec(Section):
    """PII items (scrubadub) per character (lower is better); boolean: b(x) = 1 iff none."""

    type: Literal["pii"]
    kinds: list[PIIKind] = list(DEFAULT_KINDS)
    boolean: bool = False
    locale: str = Field("en_US", description="region of the phone numbers")
    name: str = "pii"

    def build(self) -> Scorer:
        return PIIScorer(tuple(self.kinds), self.boolean, self.locale, self.name)


class OffensiveSpec(Section):
    """alt-profanity-check probability (lower is better); threshold: b(x) = 1 iff below it."""

    type: Literal["offensive"]
    threshold: float | None = Field(None, gt=0, le=1)
    name: str = "offensive"

    def build(self) -> Scorer:
        return OffensiveScorer(self.threshold, self.name)


class ClassifierSpec(Section):
    """p(label | x) of a local Hugging Face sequence classifier (a folder with safetensors)."""

    type: Literal["classifier"]
    path: str
    label: str | int
    threshold: float | None = Field(None, gt=0, le=1, description="boolean: p(label) >= threshold")
    batch_size: int = Field(64, gt=0)
    trust_remote_code: bool = False
    name: str = "classifier"

    def build(self) -> Scorer:
        return ClassifierScorer(
            self.path,
            self.label,
            self.threshold,
            self.batch_size,
            trust_remote_code=self.trust_remote_code,
            name=self.name,
        )


class ToxicitySpec(Section):
    """Detoxify's toxicity: p(label | x) of unitary/toxic-bert from a local folder (sigmoid)."""

    type: Literal["toxicity"]
    path: str = Field(description="a local folder holding unitary/toxic-bert (safetensors)")
    label: str = Field("toxic", description="toxic, severe_toxic, obscene, threat, insult, identity_hate")
    threshold: float | None = Field(None, gt=0, le=1, description="boolean: p(label) >= threshold")
    batch_size: int = Field(64, gt=0)
    name: str = "toxicity"

    def build(self) -> Scorer:
        return toxicity_scorer(self.path, self.label, self.threshold, self.batch_size, self.name)


class AllSpec(Section):
    """b(x) = 1 iff every scorer in ``of`` holds (boolean scorers)."""

    type: Literal["all"]
    of: list[ScorerSpec]
    name: str = "all"

    _types = field_validator("of", mode="before")(lambda cls, v: [check_scorer_type(x) for x in v])

    def build(self) -> Scorer:
        return AllOf(tuple(spec.build() for spec in self.of), self.name)


class AnySpec(Section):
    """b(x) = 1 iff at least one scorer in ``of`` holds (boolean scorers)."""

    type: Literal["any"]
    of: list[ScorerSpec]
    name: str = "any"

    _types = field_validator("of", mode="before")(lambda cls, v: [check_scorer_type(x) for x in v])

    def build(self) -> Scorer:
        return AnyOf(tuple(spec.build() for spec in self.of), self.name)


class NotSpec(Section):
    """b(x) = 1 − scorer(x) (a boolean scorer)."""

    type: Literal["not"]
    scorer: ScorerSpec
    name: str = "not"

    _types = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))

    def build(self) -> Scorer:
        return Not(self.scorer.build(), self.name)


class ParallelSpec(Section):
    """Any scorer, run in worker processes behind a cache of scores keyed by text (for slow
    pure-Python scorers such as pep8 or pii; scorers/parallel.py)."""

    type: Literal["parallel"]
    scorer: ScorerSpec
    workers: int = Field(2, ge=0, description="processes; 0 = this process, cache only")
    cache_size: int = Field(100_000, ge=0)

    _types = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))

    def build(self) -> Scorer:
        return ParallelScorer(self.scorer.build, self.workers, self.cache_size)


class WeightedTerm(Section):
    weight: float
    scorer: ScorerSpec

    _types = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))


class SumSpec(Section):
    """r(x) = Σ weight·scorer(x): a reward or feature from several scorers."""

    type: Literal["sum"]
    terms: list[WeightedTerm]
    name: str = "sum"

    def build(self) -> Scorer:
        parts = tuple(t.scorer.build() for t in self.terms)
        return WeightedSum(parts, tuple(t.weight for t in self.terms), self.name)


SCORERS: dict[str, type[Section]] = {
    "word": WordSpec,
    "regex": RegexSpec,
    "sentiment": SentimentSpec,
    "callable": CallableSpec,
    "numbers_as_digits": NumbersAsDigitsSpec,
    "names_subset": NamesSubsetSpec,
    "completion_compiles": CompletionCompilesSpec,
    "completion_pep8": CompletionPep8Spec,
    "pep8": Pep8Spec,
    "pep8_lines": Pep8LinesSpec,
    "compiles": CompilesSpec,
    "pii": PIISpec,
    "offensive": OffensiveSpec,
    "classifier": ClassifierSpec,
    "toxicity": ToxicitySpec,
    "all": AllSpec,
    "any": AnySpec,
    "not": NotSpec,
    "sum": SumSpec,
    "parallel": ParallelSpec,
}
ScorerSpec = Annotated[
    WordSpec
    | RegexSpec
    | SentimentSpec
    | CallableSpec
    | NumbersAsDigitsSpec
    | NamesSubsetSpec
    | CompletionCompilesSpec
    | CompletionPep8Spec
    | Pep8Spec
    | Pep8LinesSpec
    | CompilesSpec
    | PIISpec
    | OffensiveSpec
    | ClassifierSpec
    | ToxicitySpec
    | AllSpec
    | AnySpec
    | NotSpec
    | SumSpec
    | ParallelSpec,
    Field(discriminator="type"),
]
for _combinator in (AllSpec, AnySpec, NotSpec, WeightedTerm, SumSpec, ParallelSpec):  # they nest ScorerSpec
    _combinator.model_rebuild()


def check_scorer_type(spec: Any) -> Any:
    if isinstance(spec, dict):
        kind = spec.get("type")
        if kind is None:
            raise ValueError(f"a scorer needs a 'type'; {closest('', SCORERS)}")
        if kind not in SCORERS:
            raise ValueError(f"unknown scorer {kind!r}; {closest(str(kind), SCORERS)}")
    return spec
