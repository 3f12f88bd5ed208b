"""The run sections of a training config (model, sampling, training, eval, checkpoint, sample,
contexts, tracking) and `Config`, the whole file, whose checks span sections."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from bayesalign.config.base import Section, closest
from bayesalign.config.methods import (
    METHOD_OPTIONS,
    METHODS,
    CDPGSection,
    FDPGSection,
    KLReinforceSection,
    MethodOptions,
    PPOSection,
    ReinforceSection,
    TBSection,
    TwistSection,
    check_kl_coefficient,
    check_method,
)
from bayesalign.config.scorer_tilt import ScorerTiltSection, check_scorer_tilt
from bayesalign.config.scorers import ScorerSpec, check_scorer_type
from bayesalign.config.target import TargetSection
from bayesalign.training.args import CheckpointArgs, ProposalArgs, SamplingArgs, TrainArgs


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
    chat_template: str | None = Field(
        None, description="a Jinja chat template for the toy tokenizer (to try model.prompt_format: chat)"
    )


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
    prompt_format: Literal["plain", "chat"] = Field(
        "plain",
        description="chat: the prompt and each context are a user message in the tokenizer's chat "
        "template, followed by the assistant's turn (for instruction-tuned models); plain: the text as is",
    )
    lora: LoraSection | None = None
    toy: ToySection = ToySection()


class SamplingSection(SamplingArgs):
    """``sampling:`` — the fields are `SamplingArgs`' (training/args.py)."""


class ProposalSection(ProposalArgs):
    """``training.proposal:`` — the fields are `ProposalArgs`' (training/args.py)."""


class TrainingSection(TrainArgs):
    """``training:`` — the loop's fields are `TrainArgs`' (training/args.py); the method and its
    options are the config's way of naming the objective."""

    method: str = "gdc++"
    proposal: ProposalSection = ProposalSection()
    f_dpg: FDPGSection | None = Field(None, description="options of method 'f-dpg'")
    cdpg: CDPGSection | None = Field(None, description="options of method 'cdpg'")
    reinforce: ReinforceSection | None = Field(None, description="options of method 'reinforce'")
    kl_reinforce: KLReinforceSection | None = Field(None, description="options of method 'kl-reinforce'")
    ppo: PPOSection | None = Field(None, description="options of method 'ppo'")
    tb: TBSection | None = Field(None, description="options of method 'tb'")
    twist: TwistSection | None = Field(None, description="options of method 'twist'")
    scorer_tilt: ScorerTiltSection | None = Field(
        None,
        description="after the method's steps, tilt π token by token by the constraint's scorer, fitted "
        "on the pool's training split; final/ keeps it if its held-out KL(p‖π) is lower",
    )

    _known_method = field_validator("method")(lambda cls, v: check_method(v))

    @model_validator(mode="before")
    @classmethod
    def _default_method_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, method in METHOD_OPTIONS.items():
                if data.get("method") == method and data.get(key) is None:
                    data = {**data, key: {}}
            method = METHODS.get(data.get("method", ""))
            if method is not None and method.prior_samples:  # it fits on samples of a: q = a unless set
                proposal = data.get("proposal") or {}
                if isinstance(proposal, dict) and "update" not in proposal:
                    data = {**data, "proposal": {**proposal, "update": "fixed"}}
        return data

    @model_validator(mode="after")
    def _options_match_method(self) -> TrainingSection:
        for key, method in METHOD_OPTIONS.items():
            if self.method != method and getattr(self, key) is not None:
                raise ValueError(
                    f"{key} is set but method is {self.method!r}; {key} applies to method {method!r} only"
                )
        return self

    @property
    def options(self) -> MethodOptions | None:
        """The options section of this method (None for a method without options)."""
        key = METHODS[self.method].options
        return None if key is None else getattr(self, key)


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
    workers: int = Field(
        0,
        ge=0,
        description="draw the prior's samples in this many processes of one thread each (2 or more; "
        "on 2 CPU cores 2 processes drew 512 samples in 61 s, one 2-thread process in 71 s)",
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


class CheckpointSection(CheckpointArgs):
    """``checkpoint:`` — the fields are `CheckpointArgs`' (training/args.py)."""


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
        description="a .txt file (one context per line), a .jsonl file (see field), a list, or a "
        "dataset: a .parquet/.csv/.json/.arrow file, a save_to_disk folder or a hub dataset id (see hub)"
    )
    eval: str | list[str] | None = Field(None, description="held-out contexts (default: train)")
    field: str = Field("context", description="the key of each .jsonl line's context, or a dataset's column")
    split: str = Field("train", description="the split of a dataset (files read by datasets have 'train')")
    hub: bool = Field(
        False,
        description="allow downloading a hub dataset id named by train or eval (also HF_HUB_OFFLINE=0); "
        "otherwise only local files and folders are read",
    )
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
        # the default (posterior) is written into every run folder's config.yaml, so only the
        # value that means something without a pool is refused
        if training.replay_from == "prior" and not training.replay_pool:
            raise ValueError(
                "training.replay_from: prior says which pool rows training.replay_pool trains on: "
                "set training.replay_pool: true (or drop replay_from)"
            )
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
    def _method_fits_the_target(self) -> Config:
        """What the method's objective will ask of the target, checked before models load."""
        method, options = METHODS[self.training.method], self.training.options
        if isinstance(options, KLReinforceSection | PPOSection):
            check_kl_coefficient(method.options, options.beta, bool(self.target.constraints))
        if (
            method.one_reward
            and self.target.constraints
            and (self.target.reward is not None or self.target.distributional)
        ):
            raise ValueError(
                f"method {self.training.method!r} needs one reward r(x): the target mixes "
                "constraints with a reward or distributional constraints; keep constraints only "
                "(r = b) or a reward only"
            )
        if method.prior_samples:
            self._fits_on_prior_samples()
        if self.training.twist is not None:
            self._twist_fits()
        if self.training.scorer_tilt is not None:
            holdout = 0.0 if self.eval.pool is None else self.eval.pool.holdout
            refused = {
                "contexts": self.contexts is not None,
                "sampling.backend": self.sampling.backend != "hf",
                "training.sample_shards": self.training.sample_shards not in (None, 1),
            }
            check_scorer_tilt(self.target, holdout, [key for key, bad in refused.items() if bad])
        return self

    def _fits_on_prior_samples(self) -> None:
        """A method that fits on samples of a (the twist) needs q = a, and replayed pool rows of
        a, not only the accepted ones."""
        training = self.training
        if training.proposal.update != "fixed":
            raise ValueError(
                f"method {training.method!r} fits on samples of the prior: set "
                f"training.proposal.update: fixed (it is {training.proposal.update!r})"
            )
        if training.replay_pool and training.replay_from != "prior":
            raise ValueError(
                f"method {training.method!r} fits on samples of the prior: with training.replay_pool set "
                "training.replay_from: prior (posterior replays the accepted rows only)"
            )

    def _twist_fits(self) -> None:
        """Method twist: pointwise constraints only (Q = E_a[b | prefix] is a probability), on one
        process, sampled by the hf backend; a head on a's own states has no trunk for LoRA."""
        training = self.training
        if self.target.reward is not None or self.target.distributional:
            raise ValueError(
                "method 'twist' needs a target of pointwise constraints only (b ∈ {0, 1}): "
                "drop target.reward and target.distributional, or use gdc++"
            )
        if training.twist.trunk == "prior" and self.model.lora is not None:
            raise ValueError(
                "training.twist.trunk: prior trains the twist's head on a's frozen states: drop model.lora"
            )
        for key, value, refused in (
            ("contexts", self.contexts, lambda v: v is not None),
            ("training.gradient_checkpointing", training.gradient_checkpointing, bool),
            ("sampling.backend", self.sampling.backend, lambda v: v != "hf"),
        ):
            if refused(value):
                raise ValueError(f"method 'twist' does not support {key} (it is {value!r}) yet")
