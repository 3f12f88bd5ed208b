"""The YAML of `bayesalign pretrain`: corpus, misalignment scorer, tokenizer, model size,
objective and token budget. Same rules as config.py: unknown keys name the closest valid one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bayesalign.config import ScorerSpec, Section, check_scorer_type

Objective = Literal["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]


class CorpusSection(Section):
    files: list[str] = Field(description="text files; each file is one document")
    unit: Literal["lines", "sentences"] = Field("lines", description="segments: lines (code) or sentences")
    heldout: float = Field(0.1, gt=0, lt=1, description="fraction of documents held out for the LM loss")


class ModelSizeSection(Section):
    n_layer: int = Field(2, gt=0)
    n_embd: int = Field(64, gt=0)
    n_head: int = Field(2, gt=0)
    block_size: int = Field(64, gt=1, description="tokens per packed training block")
    vocab_size: int = Field(1000, gt=16, description="BPE vocabulary trained on the corpus")


class ObjectiveSection(Section):
    type: Objective = "mle"
    threshold: float = Field(0.0, description="a segment is aligned iff its score <= threshold (0 is 0)")
    alpha: float = Field(1.0, ge=0, description="unlikelihood: weight of log(1-p); awr: policy/value mix")
    beta: float = Field(1.0, gt=0, description="rwr/awr temperature")
    drop: float = Field(0.01, ge=0, le=1, description="conditional: fraction of segments without a token")
    value_trains_trunk: bool = False


class PretrainTrainingSection(Section):
    tokens: int = Field(100_000, gt=0, description="token budget (blocks x block_size)")
    init_from: str | None = Field(
        None, description="a pretrain run's final/ folder: continue from its weights and tokenizer"
    )
    skip_tokens: int = Field(
        0, ge=0, description="tokens of the stream already seen (by init_from's run): skipped, not retrained"
    )
    batch_size: int = Field(16, gt=0, description="blocks per optimizer step")
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    threads: int | None = Field(None, gt=0)


class PretrainEvalSection(Section):
    every_tokens: int = Field(50_000, gt=0)
    samples: int = Field(64, gt=1, description="unconditional samples scored for misalignment")
    max_new_tokens: int = Field(32, gt=0)
    max_k: int = Field(8, gt=0, description="expected max misalignment over k samples")
    reference_model: str | None = Field(
        None, description="a local folder or hub id: KL(π‖reference) on π's samples, scored as text"
    )


class PretrainConfig(Section):
    corpus: CorpusSection
    scorer: ScorerSpec = Field(description="misalignment s(segment); lower is better")
    model: ModelSizeSection = ModelSizeSection()
    objective: ObjectiveSection = ObjectiveSection()
    training: PretrainTrainingSection = PretrainTrainingSection()
    eval: PretrainEvalSection = PretrainEvalSection()

    _scorer_type = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))

    @model_validator(mode="after")
    def _skip_within_budget(self) -> PretrainConfig:
        if self.training.skip_tokens >= self.training.tokens:
            raise ValueError(
                f"training.skip_tokens {self.training.skip_tokens} leaves nothing of the budget "
                f"training.tokens {self.training.tokens}"
            )
        return self

    @model_validator(mode="after")
    def _heads_divide(self) -> PretrainConfig:
        if self.model.n_embd % self.model.n_head:
            raise ValueError(f"model.n_head {self.model.n_head} must divide n_embd {self.model.n_embd}")
        return self
