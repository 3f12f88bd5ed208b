"""The YAML configuration: pydantic models, and the single place where names become objects.

Every section rejects unknown keys with the closest valid one; scorer types and methods come
from explicit registries (no lookups by name in globals()).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bayesalign.builtin_models import resolve_model_name
from bayesalign.contexts import load_contexts
from bayesalign.evaluator import Evaluator
from bayesalign.models import LanguageModel, SamplingParams, make_policy
from bayesalign.moments import MomentFit, MomentFitError
from bayesalign.objectives import (
    CDPG,
    DPG,
    FDPG,
    PPO,
    Divergence,
    GDCPlusPlus,
    KLController,
    KLReinforce,
    Objective,
    Reinforce,
)
from bayesalign.objectives.reward_maximisation import Baseline, KLEstimator, Placement
from bayesalign.preflight import PreflightError, check_model_name, hub_allowed
from bayesalign.runs import RunFolder
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
from bayesalign.targets import Constraint, Feature, Target, Term, Tilt
from bayesalign.tasks.code_completion import CompletionCompiles, CompletionPep8
from bayesalign.training.args import CheckpointArgs, SamplingArgs, TrainArgs
from bayesalign.training.distributed import Distributed
from bayesalign.training.trainer import Trainer


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and the closest valid value."""


def closest(name: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean {match[0]!r}? " if match else ""
    return f"{hint}valid: {', '.join(valid)}"


class Section(BaseModel):
    """Base of every config section: frozen, and an unknown key names the closest valid one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(f"unknown key {key!r}; {closest(str(key), cls.model_fields)}")
        return data


# -- scorers -----------------------------------------------------------------------------------
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
    name: str = "callable"

    def build(self) -> Scorer:
        fn = import_callable(self.function)
        return CallableScorer(fn, self.boolean, self.batched, self.takes_context, self.name)


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


class RewardSpec(Section):
    scorer: ScorerSpec
    beta: float = Field(gt=0, description="temperature of the tilt a(x)·exp(r(x)/β)")

    _scorer_type = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))


class DistributionalSpec(Section):
    """A distributional constraint E_p[φ] = moment on a feature φ (boolean or real-valued)."""

    scorer: ScorerSpec
    moment: float = Field(description="the wanted expectation of the feature under the target p")

    _scorer_type = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))


class MomentFitSection(Section):
    """How λ of the distributional constraints is fitted (moments.py), before training starts."""

    samples: int = Field(4096, gt=1, description="samples drawn from the prior a to fit λ on")
    max_iter: int = Field(100, gt=0, description="Newton iterations at most")
    tol: float = Field(1e-6, gt=0, description="largest accepted |E_p[φ] − moment| on the fit samples")
    seed: int = Field(0, description="seed of the fit samples (the same target for any training seed)")


class TargetSection(Section):
    constraints: list[ScorerSpec] = []
    reward: RewardSpec | None = None
    distributional: list[DistributionalSpec] = []
    fit: MomentFitSection = MomentFitSection()

    @field_validator("constraints", mode="before")
    @classmethod
    def _scorer_types(cls, value: Any) -> Any:
        if isinstance(value, list):
            for spec in value:
                check_scorer_type(spec)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> TargetSection:
        if not self.constraints and self.reward is None and not self.distributional:
            raise ValueError("the target needs a constraint, a distributional constraint or a reward")
        if self.reward is not None and self.distributional:
            raise ValueError(
                "a reward tilt together with distributional constraints is not supported; use "
                "constraints (pointwise) with distributional ones"
            )
        changed = self.fit.model_dump(exclude_defaults=True)
        if changed and not self.distributional:
            raise ValueError(f"fit sets {changed} but the target has no distributional constraints")
        return self


# -- model, sampling, training -----------------------------------------------------------------
class LoraSection(Section):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ToySection(Section):
    architecture: Literal["gpt2", "t5"] = Field("gpt2", description="t5: an encoder-decoder (seq2seq)")
    words: list[str] = ["a", "b", "c"]
    seed: int = 0
    n_embd: int = 16
    n_layer: int = 1
    init_std: float = 0.3


class ModelSection(Section):
    name: str = Field(
        description="hub id, local folder, 'builtin:smollm2-135m-instruct', or 'toy' (tiny model)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    hub: bool = Field(
        False,
        description="allow downloading model.name from the Hugging Face Hub (also HF_HUB_OFFLINE=0); "
        "otherwise only local folders and the local HF cache are read",
    )
    lora: LoraSection | None = None
    toy: ToySection = ToySection()


class SamplingSection(Section):
    max_new_tokens: int = Field(20, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    batch_size: int | None = Field(None, gt=0, description="sequences generated per forward pass")
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="vllm: π's samples from a vLLM engine on the GPU (extra 'vllm'; untested)"
    )

    def params(self) -> SamplingParams:
        return SamplingParams(self.max_new_tokens, self.temperature, self.top_p, self.top_k)


class ProposalSection(Section):
    update: Literal["adaptive", "fixed", "on_policy"] = "adaptive"
    every: int = Field(10, gt=0, description="steps between KL-adaptive checks")
    criterion: Literal["kl", "tv"] = "kl"
    samples: int = Field(256, gt=1, description="fresh samples from q per check")


class FDPGSection(Section):
    """Options of method 'f-dpg': which f-divergence D_f(π‖p) to minimise (objectives/f_divergence.py)."""

    divergence: Divergence = Field(
        "js",
        description="forward_kl (= DPG), reverse_kl (= KL-regularised RL; needs P > 0 everywhere), "
        "js (Jensen-Shannon; often best in the f-DPG paper) or tv (total variation)",
    )
    baseline_window: int = Field(1024, gt=0, description="samples in the moving-average baseline")
    max_log_ratio: float | None = Field(
        None,
        gt=0,
        description="reverse_kl only: clip log(π/p) at this value (capped reverse KL), which makes "
        "targets with P(x) = 0 usable; unset, such targets are refused",
    )

    @model_validator(mode="after")
    def _clip_is_for_reverse_kl(self) -> FDPGSection:
        if self.max_log_ratio is not None and self.divergence != "reverse_kl":
            raise ValueError(
                f"max_log_ratio applies to divergence 'reverse_kl' only ({self.divergence} is "
                "bounded where P = 0)"
            )
        return self

    def build(self) -> Objective:
        return FDPG(self.divergence, self.baseline_window, self.max_log_ratio)


class CDPGSection(Section):
    """Options of method 'cdpg' (objectives/conditional.py): needs the config's contexts section."""

    baseline: bool = Field(True, description="subtract π/q (GDC++-style) from the weights P_c/(Z_c·q)")

    def build(self) -> Objective:
        return CDPG(self.baseline)


class ReinforceSection(Section):
    """Options of method 'reinforce' (objectives/reward_maximisation.py)."""

    baseline: Baseline = Field("loo", description="none, mean (of the batch) or loo (leave-one-out)")

    def build(self, target: Target) -> Objective:
        return Reinforce(self.baseline)


def _kl_coefficient(beta: float | None, target: Target, key: str) -> float:
    """β as set, else the target's own (a·exp(r/β)), so KL-RL aims at the same p."""
    if beta is not None:
        return beta
    if target.reward_beta is None:
        raise ConfigError(
            f"training.{key}.beta is required: the target {target.describe()} has constraints, so "
            "it is not a·exp(r/β) for any β (its p is the limit β → 0)"
        )
    return target.reward_beta


class KLReinforceSection(Section):
    """Options of method 'kl-reinforce': REINFORCE on r − β·KL(π‖a)."""

    beta: float | None = Field(
        None, gt=0, description="KL coefficient; unset: the target's β (reward.beta), so p* = p"
    )
    estimator: KLEstimator = Field("k1", description="k1 = log π/a, or k3 = a/π − 1 − log a/π per token")
    penalty: Placement = Field(
        "reward", description="reward (detached, r − β·k: targets p* with k1) or loss (β·k differentiated)"
    )
    baseline: Baseline = "loo"

    def build(self, target: Target) -> Objective:
        beta = _kl_coefficient(self.beta, target, "kl_reinforce")
        return KLReinforce(beta, self.estimator, self.penalty, self.baseline)


class PPOSection(Section):
    """Options of method 'ppo' (Ziegler et al. 2019); epochs over each batch: training.epochs."""

    beta: float | None = Field(
        None, gt=0, description="initial KL coefficient; unset: the target's β (reward.beta)"
    )
    kl_target: float | None = Field(
        None, gt=0, description="adaptive β aiming at this KL(π‖a) in nats; unset: β stays fixed"
    )
    horizon: int = Field(10_000, gt=0, description="samples over which β may change by ±20%·n/horizon")
    estimator: KLEstimator = "k1"
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ")
    clip: float = Field(0.2, gt=0, description="ratio clip ε")
    value_clip: float = Field(0.2, gt=0)
    value_coef: float = Field(0.1, ge=0)
    whiten: bool = Field(True, description="normalise advantages over the batch's tokens")
    value_trains_trunk: bool = Field(
        False, description="let the value loss move the policy's weights (else the head only)"
    )

    def build(self, target: Target) -> Objective:
        beta = _kl_coefficient(self.beta, target, "ppo")
        return PPO(
            KLController(beta, self.kl_target, self.horizon),
            self.estimator,
            self.gamma,
            self.lam,
            self.clip,
            self.value_clip,
            self.value_coef,
            self.whiten,
            self.value_trains_trunk,
        )


# One entry per method: a builder from the training section and the target, so a method can read
# its own options section (training.f_dpg) and the target's β. Every call builds a fresh
# objective with its own state.
OBJECTIVES: dict[str, Callable[[TrainingSection, Target], Objective]] = {
    "dpg": lambda training, target: DPG(),
    "gdc++": lambda training, target: GDCPlusPlus(),
    "f-dpg": lambda training, target: training.f_dpg.build(),
    "cdpg": lambda training, target: training.cdpg.build(),
    "reinforce": lambda training, target: training.reinforce.build(target),
    "kl-reinforce": lambda training, target: training.kl_reinforce.build(target),
    "ppo": lambda training, target: training.ppo.build(target),
}
# Options sections of training and the method that reads each. A method's section is filled with
# its defaults when omitted (so the run folder's config shows them); it stays null for the other
# methods, where setting it is an error, and configs written before it existed still resume.
METHOD_OPTIONS: dict[str, str] = {
    "f_dpg": "f-dpg",
    "cdpg": "cdpg",
    "reinforce": "reinforce",
    "kl_reinforce": "kl-reinforce",
    "ppo": "ppo",
}


class TrainingSection(Section):
    method: str = "gdc++"
    steps: int = Field(100, ge=0)
    batch_size: int = Field(256, gt=0, description="samples drawn from q per step")
    minibatch_size: int | None = Field(None, gt=0, description="samples per optimizer update")
    micro_batch_size: int | None = Field(None, gt=0, description="samples per forward/backward")
    epochs: int = Field(1, gt=0, description="passes over each step's samples")
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="optimizer updates of linear warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    threads: int | None = Field(None, gt=0)
    sample_shards: int | None = Field(
        None,
        gt=0,
        description="independently seeded pieces of every draw (default: the number of processes); "
        "a run gives the same result on any number of processes that divides it",
    )
    mixed_precision: Literal["no", "bf16"] = Field("no", description="bf16: autocast the policy (CUDA only)")
    gradient_checkpointing: bool = Field(False, description="recompute the policy's activations in backward")
    proposal: ProposalSection = ProposalSection()
    replay_pool: bool = Field(
        False,
        description="train on the posterior pool's training split (prior samples, q = a) in passes, "
        "instead of drawing fresh samples every step: every sample drawn is reused",
    )
    keep_best: bool = Field(
        False,
        description="final/ holds the evaluated policy with the lowest pool KL(p‖π) on the validation "
        "split (the prior included), not the last one",
    )
    f_dpg: FDPGSection | None = Field(None, description="options of method 'f-dpg'")
    cdpg: CDPGSection | None = Field(None, description="options of method 'cdpg'")
    reinforce: ReinforceSection | None = Field(None, description="options of method 'reinforce'")
    kl_reinforce: KLReinforceSection | None = Field(None, description="options of method 'kl-reinforce'")
    ppo: PPOSection | None = Field(None, description="options of method 'ppo'")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in OBJECTIVES:
            raise ValueError(f"unknown method {value!r}; {closest(value, OBJECTIVES)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_method_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, method in METHOD_OPTIONS.items():
                if data.get("method") == method and data.get(key) is None:
                    data = {**data, key: {}}
        return data

    @model_validator(mode="after")
    def _options_match_method(self) -> TrainingSection:
        for key, method in METHOD_OPTIONS.items():
            if self.method != method and getattr(self, key) is not None:
                raise ValueError(
                    f"{key} is set but method is {self.method!r}; {key} applies to method {method!r} only"
                )
        return self

    @model_validator(mode="after")
    def _batch_sizes(self) -> TrainingSection:
        if self.minibatch > self.batch_size or self.batch_size % self.minibatch:
            raise ValueError(f"minibatch_size {self.minibatch} must divide batch_size {self.batch_size}")
        if self.micro > self.minibatch or self.minibatch % self.micro:
            raise ValueError(f"micro_batch_size {self.micro} must divide minibatch_size {self.minibatch}")
        return self

    @property
    def minibatch(self) -> int:
        return self.minibatch_size or self.batch_size

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.minibatch


class MisalignmentSection(Section):
    """Misalignment of π's samples under a scorer of its own (higher = worse), next to the
    target's scores: e.g. a PII or offensiveness scorer that the target does not use."""

    scorer: ScorerSpec
    k: int = Field(8, gt=0, description="expected max misalignment over k samples")
    threshold: float = Field(0.5, description="a sample scoring above it counts as misaligned")

    _scorer_type = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))


class PoolSection(Section):
    """A posterior pool (pools.py): prior samples drawn once, cached and shared across runs,
    whose accepted ones are exact samples of p. Gives KL(p‖π) without importance weights on π
    and the KL frontier."""

    samples: int = Field(2048, gt=0, description="prior samples (per evaluation context if conditional)")
    seed: int = Field(0, description="seed of the prior's draws (part of the cache key)")
    cache: bool = Field(True, description="reuse and store the draws under $BAYESALIGN_CACHE/pools")
    holdout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the prior samples held out as the validation split: pool_* metrics come "
        "from it, and training.replay_pool trains on the rest",
    )


class EvalSection(Section):
    every: int = Field(10, gt=0)
    samples: int = Field(256, gt=1, description="fresh samples from q and from π per evaluation")
    exact: bool = Field(False, description="also enumerate the whole space (toy models only)")
    exact_limit: int = Field(200_000, gt=0)
    save_samples: int = Field(20, ge=0, description="texts of π written to samples/ per evaluation")
    report: bool = Field(True, description="write report.html (plots of every metric) at the end")
    perplexity_model: str | None = Field(
        None, description="a local folder, hub id or builtin: name: perplexity of π's samples under it"
    )
    misalignment: MisalignmentSection | None = None
    pool: PoolSection | None = Field(None, description="posterior-pool metrics (pool_*, frontier_*)")

    @model_validator(mode="after")
    def _k_within_samples(self) -> EvalSection:
        if self.misalignment is not None and self.misalignment.k > self.samples:
            raise ValueError(f"eval.misalignment.k {self.misalignment.k} exceeds eval.samples {self.samples}")
        return self


class CheckpointSection(Section):
    every: int = Field(50, gt=0)
    keep: int = Field(2, gt=0)
    merge_lora: bool = Field(True, description="final/ holds merged weights (else the adapter only)")
    loadable: bool = Field(
        True,
        description="each checkpoint is also a Hugging Face folder that from_pretrained loads: the LoRA "
        "adapter, or the full weights (then twice the disk of the resumable state alone)",
    )


SAMPLE_METHODS = ("rejection", "qrs", "importance")


class SamplerSection(Section):
    """`bayesalign sample`: draw from the target without training (see sampling/)."""

    method: str = Field("qrs", description="rejection | qrs (quasi-rejection) | importance (resampling)")
    beta: float | None = Field(None, gt=0, description="qrs: accept x ~ q with probability min(1, P/(β q))")
    acceptance: float | None = Field(
        None, gt=0, le=1, description="qrs: choose β for this acceptance rate on a pilot batch"
    )
    bound: float | None = Field(
        None, gt=0, description="rejection: M ≥ P/q (default 1: pointwise target, proposal = prior)"
    )
    proposals_per_round: int = Field(256, gt=0, description="samples drawn from q between checks")
    max_proposals: int = Field(100_000, gt=0, description="stop with an error beyond this many proposals")
    pool: int | None = Field(None, gt=0, description="importance: proposals to resample from (default 10·n)")
    diagnostic_betas: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, description="qrs: β values of the diagnostic table (default: quantiles of P/q)"
    )
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in SAMPLE_METHODS:
            raise ValueError(f"unknown sampling method {value!r}; {closest(value, SAMPLE_METHODS)}")
        return value

    @model_validator(mode="after")
    def _one_beta(self) -> SamplerSection:
        if self.beta is not None and self.acceptance is not None:
            raise ValueError("give beta or acceptance (which chooses β), not both")
        return self


class ContextsSection(Section):
    """Contexts c of a conditional target P_c(x) = a(x|c)·b(x, c) (contexts.py)."""

    train: str | list[str] = Field(
        description="a .txt file (one context per line), a .jsonl file (see field) or a list"
    )
    eval: str | list[str] | None = Field(None, description="held-out contexts (default: train)")
    field: str = Field("context", description="the key of each .jsonl line's context")
    per_step: int = Field(8, gt=0, description="contexts per training step (batch_size / per_step each)")
    eval_contexts: int = Field(
        16, gt=0, description="evaluation uses the first this many eval contexts, the same every time"
    )
    reference_field: str | None = Field(
        None,
        description="key of a reference output in each .jsonl line of the eval contexts: evaluation "
        "then reports the per-token NLL of π and of a on the references (a task metric)",
    )
    bleu: bool = Field(
        False, description="also report BLEU of π's samples against the references (needs sacrebleu)"
    )

    @model_validator(mode="after")
    def _bleu_needs_references(self) -> ContextsSection:
        if self.bleu and self.reference_field is None:
            raise ValueError("contexts.bleu needs contexts.reference_field (the references to compare with)")
        return self


class TrackingSection(Section):
    """Where evaluation records also go (training/tracking.py); the run folder always has them."""

    backend: Literal["tensorboard", "wandb", "mlflow"]
    project: str = Field("bayesalign", description="run name (TensorBoard, MLflow) or W&B project")

    @field_validator("project")
    @classmethod
    def _a_name_not_a_path(cls, value: str) -> str:
        """TensorBoard makes the project a folder under RUN/tensorboard: a path would write outside
        the run folder (``../../elsewhere``)."""
        if not value or value in (".", "..") or "/" in value or "\\" in value:
            raise ValueError(
                f"{value!r} must be a plain name (no '/', not '..'): it names a folder in the run"
            )
        return value


class Config(Section):
    model: ModelSection
    prompt: str = ""
    contexts: ContextsSection | None = None
    sampling: SamplingSection = SamplingSection()
    target: TargetSection
    training: TrainingSection = TrainingSection()
    eval: EvalSection = EvalSection()
    checkpoint: CheckpointSection = CheckpointSection()
    sample: SamplerSection | None = None  # None keeps configs of earlier runs resumable unchanged
    tracking: TrackingSection | None = None

    @model_validator(mode="after")
    def _contexts_fit_the_batches(self) -> Config:
        if self.training.method == "cdpg" and self.contexts is None:
            raise ValueError("method 'cdpg' needs a contexts section (contexts: {train: FILE})")
        if self.contexts is not None:
            per_step = self.contexts.per_step
            if self.training.batch_size % per_step:
                raise ValueError(
                    f"training.batch_size {self.training.batch_size} must be a multiple of "
                    f"contexts.per_step {per_step}: each context gets the same number of samples"
                )
            if self.training.proposal.update == "adaptive" and self.training.proposal.samples % per_step:
                raise ValueError(
                    f"training.proposal.samples {self.training.proposal.samples} must be a multiple "
                    f"of contexts.per_step {per_step}"
                )
        return self

    @model_validator(mode="after")
    def _pool_options_have_a_pool(self) -> Config:
        training, pool = self.training, self.eval.pool
        if training.replay_pool:
            if pool is None or pool.holdout == 0:
                raise ValueError(
                    "training.replay_pool trains on the posterior pool's training split: set eval.pool "
                    "with a holdout > 0 (e.g. eval: {pool: {samples: 2048, holdout: 0.3}}), so that the "
                    "pool metrics stay honest"
                )
            if training.proposal.update != "fixed" or self.contexts is not None:
                raise ValueError(
                    "training.replay_pool reuses prior samples, so q = a: set training.proposal.update: "
                    "fixed (and no contexts section)"
                )
        if training.keep_best and pool is None:
            raise ValueError("training.keep_best chooses by the pool's KL(p‖π): set eval.pool")
        return self

    @model_validator(mode="after")
    def _kl_coefficient_known(self) -> Config:
        """KL-RL on a constraint target needs its β spelt out (checked before loading models)."""
        options = {"kl-reinforce": self.training.kl_reinforce, "ppo": self.training.ppo}
        section = options.get(self.training.method)
        if section is not None and section.beta is None and self.target.constraints:
            key = "kl_reinforce" if self.training.method == "kl-reinforce" else "ppo"
            raise ValueError(
                f"training.{key}.beta is required: the target has constraints, so it is not "
                "a·exp(r/β) for any β (its p is the limit β → 0); set a KL coefficient"
            )
        if (
            self.training.method in ("reinforce", "kl-reinforce", "ppo")
            and self.target.constraints
            and (self.target.reward is not None or self.target.distributional)
        ):
            raise ValueError(
                f"method {self.training.method!r} needs one reward r(x): the target mixes "
                "constraints with a reward or distributional constraints; keep constraints only "
                "(r = b) or a reward only"
            )
        return self


# -- loading -----------------------------------------------------------------------------------
def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            options = [o.strip("'") for o in expected.replace(" or ", ", ").split(", ")]
            msg = f"invalid value {e['input']!r}; {closest(str(e['input']), options)}"
        lines.append(f"  {where or '(top level)'}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as 'line L, column C: problem' (PyYAML counts from 0)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem


def read_yaml_file(path: str | Path) -> dict:
    """The mapping a YAML config file holds; every way it can be unreadable is a ConfigError
    that names the file (and the line of a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" + (" (a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML at {_yaml_problem(err)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = raw
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)})"
            ) from None
    return raw


def parse_config(raw: dict) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read, override and validate a config file, and import its ``callable`` scorers, looking
    beside the file first (see :func:`import_callables`)."""
    path = Path(path)
    config = parse_config(apply_overrides(read_yaml_file(path), overrides))
    import_callables(config, path.parent)
    return config


def callable_specs(node: Any, where: str = "") -> Iterator[tuple[str, CallableSpec]]:
    """Every ``callable`` scorer in a config (or any section), with its place (``target.constraints[0]``)."""
    if isinstance(node, CallableSpec):
        yield where, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from callable_specs(getattr(node, name), f"{where}.{name}" if where else name)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            yield from callable_specs(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from callable_specs(item, f"{where}.{key}")


def import_callables(config: BaseModel, folder: str | Path) -> None:
    """Import every ``callable`` scorer's function now, with the config file's ``folder`` first
    on the import path: a module beside the config needs no ``PYTHONPATH``, and a bad name fails
    here, as a one-line ConfigError, before any run folder or model exists."""
    for where, spec in callable_specs(config):
        try:
            import_callable(spec.function, folder)
        except ValueError as err:
            raise ConfigError(f"{where}: scorer {spec.name!r}: {err}") from None


# -- objects -----------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_models(section: ModelSection, prompt: str, seed: int) -> tuple[LanguageModel, LanguageModel]:
    """The policy π (initialised at the prior) and the prior a."""
    torch.manual_seed(seed)  # LoRA initialisation is random
    if section.name == "toy":
        from bayesalign.toy import toy_model

        t = section.toy
        prior = toy_model(
            t.words,
            seed=t.seed,
            n_embd=t.n_embd,
            n_layer=t.n_layer,
            init_std=t.init_std,
            prompt=prompt,
            architecture=t.architecture,
        )
    else:
        check_model_name(section.name)
        name = str(Path(resolve_model_name(section.name)).expanduser())
        offline = not Path(name).is_dir() and not hub_allowed(section.hub)
        try:
            prior = LanguageModel.from_pretrained(
                name,
                prompt,
                dtype=DTYPES[section.dtype],
                trust_remote_code=section.trust_remote_code,
                local_files_only=offline,
            )
        except OSError as err:
            if not offline:
                raise
            raise PreflightError(
                f"model.name {section.name!r} is neither a local folder nor in the local Hugging Face "
                "cache, and downloading from the hub is off: set model.hub: true (or HF_HUB_OFFLINE=0) "
                "to download it"
            ) from err
    lora = section.lora
    lora_args = None
    if lora is not None:
        lora_args = dict(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
        )
    return make_policy(prior, lora_args), prior


def build_target(
    section: TargetSection,
    base: LanguageModel,
    sampling: SamplingSection | None = None,
    *,
    fitted: MomentFit | None = None,
) -> Target:
    """The target P = a · (constraints, reward, distributional factors).

    Distributional constraints need λ: fitted on ``section.fit.samples`` samples of ``base``
    drawn with ``sampling`` (the run's sampling section, so the fit sees the sequences training
    will) and seed ``section.fit.seed``, or taken from ``fitted`` (a run's saved fit, on resume).
    A scorer that cannot serve where the config puts it (a real-valued one as a constraint) is a
    ConfigError: it is the config's mistake, and the CLI says so in one line.
    """
    try:
        return _build_target(section, base, sampling, fitted)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"target: {err}") from err


def _build_target(
    section: TargetSection, base: LanguageModel, sampling: SamplingSection | None, fitted: MomentFit | None
) -> Target:
    if not section.distributional:
        terms: list[Term] = [Constraint(spec.build()) for spec in section.constraints]
        if section.reward is not None:
            terms.append(Tilt(section.reward.scorer.build(), section.reward.beta))
        return Target(base, terms)
    constraints = [spec.build() for spec in section.constraints]
    features = [d.scorer.build() for d in section.distributional]
    moments = [d.moment for d in section.distributional]
    if fitted is not None:
        wanted = [(f.name, m) for f, m in zip(features, moments, strict=True)]
        saved = [(f.name, f.moment) for f in fitted.features]
        if wanted != saved:
            raise ConfigError(f"the saved fit is for features {saved}, the config asks for {wanted}")
        terms = [Constraint(c) for c in constraints]
        terms += [Feature(f, fitted.lambdas[f.name]) for f in features]
        return Target(base, terms, moment_fit=fitted)
    if sampling is None:
        raise ValueError("build_target: distributional constraints need the sampling section to fit λ")
    fit = section.fit
    try:
        return Target.constrain(
            base,
            features,
            moments,
            constraints,
            n_samples=fit.samples,
            sampling=sampling.params(),
            batch_size=sampling.batch_size,
            generator=torch.Generator().manual_seed(fit.seed),
            max_iter=fit.max_iter,
            tol=fit.tol,
        )
    except MomentFitError as err:
        raise ConfigError(f"target.distributional: {err}") from err


def build_objective(training: TrainingSection, target: Target) -> Objective:
    """A new objective for ``training.method`` (with its options) on ``target``, owning its own
    state. Reward-maximisation methods take their KL coefficient from the target unless set."""
    return OBJECTIVES[training.method](training, target)


def load_eval_contexts(config: Config) -> tuple[list[str] | None, list[str] | None]:
    """The evaluation contexts of a conditional config and their reference outputs (if any)."""
    section = config.contexts
    if section is None:
        return None, None
    held_out = section.eval if section.eval is not None else section.train
    contexts = load_contexts(held_out, section.field)[: section.eval_contexts]
    references = None
    if section.reference_field is not None:
        references = load_contexts(held_out, section.reference_field)[: section.eval_contexts]
    if config.eval.samples < 2 * len(contexts):
        raise ValueError(
            f"eval.samples {config.eval.samples} gives fewer than 2 samples to each of "
            f"{len(contexts)} evaluation contexts"
        )
    return contexts, references


def build_evaluator(
    config: Config,
    target: Target,
    *,
    eval_contexts: list[str] | None = None,
    references: list[str] | None = None,
    status: Callable[[str], None] = lambda phase: None,
) -> Evaluator:
    """The `Evaluator` that the eval section (and the contexts section) describe."""
    section, pool = config.eval, config.eval.pool
    misaligned = section.misalignment
    return Evaluator(
        target,
        samples=section.samples,
        sampling=config.sampling.params(),
        micro=config.training.micro,
        seed=config.training.seed + 1,
        sample_batch=config.sampling.batch_size,
        eval_contexts=eval_contexts,
        exact=section.exact,
        exact_limit=section.exact_limit,
        pool_samples=None if pool is None else pool.samples,
        pool_seed=0 if pool is None else pool.seed,
        pool_cache=pool is not None and pool.cache,
        pool_holdout=0.0 if pool is None else pool.holdout,
        fluency_model=section.perplexity_model,
        misalignment=None
        if misaligned is None
        else (misaligned.scorer.build(), misaligned.k, misaligned.threshold),
        references=references,
        reference_bleu=config.contexts is not None and config.contexts.bleu,
        status=status,
    )


def build_trainer(
    config: Config,
    policy: LanguageModel,
    target: Target,
    objective: Objective | None = None,
    *,
    run: RunFolder | None = None,
    distributed: Distributed | None = None,
    status: Callable[[str], None] = lambda phase: None,
) -> Trainer:
    """The `Trainer` that the config describes (``objective``: the configured method's unless
    given), with its evaluator, contexts and checkpoint settings."""
    eval_contexts, references = load_eval_contexts(config)
    contexts = (
        None if config.contexts is None else load_contexts(config.contexts.train, config.contexts.field)
    )
    return Trainer(
        policy,
        target,
        objective if objective is not None else build_objective(config.training, target),
        TrainArgs.model_validate(config.training.model_dump(include=set(TrainArgs.model_fields))),
        sampling=SamplingArgs.model_validate(config.sampling.model_dump()),
        evaluator=build_evaluator(
            config, target, eval_contexts=eval_contexts, references=references, status=status
        ),
        eval_every=config.eval.every,
        save_samples=config.eval.save_samples,
        checkpoints=CheckpointArgs.model_validate(config.checkpoint.model_dump()),
        contexts=contexts,
        contexts_per_step=config.contexts.per_step if config.contexts is not None else 8,
        run=run,
        distributed=distributed,
    )
