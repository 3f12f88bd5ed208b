"""The YAML of `bayesalign pretrain`: corpus, misalignment scorer, tokenizer, model size,
objective and token budget. Same rules as the training config (`Section` of config/base.py):
unknown keys name the closest valid one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bayesalign.builtin_models import resolve_model_name
from bayesalign.config.base import Section
from bayesalign.config.scorers import ScorerSpec, check_scorer_type
from bayesalign.models import LanguageModel
from bayesalign.pretraining.corpus import CorpusFormat, load_documents, resolve_files
from bayesalign.pretraining.red_team import RedTeam, RedTeamParams
from bayesalign.samples import SamplingParams

BYTE_ALPHABET = 256  # byte-level BPE starts from every byte
SPECIAL_TOKENS = ("<|endoftext|>", "<|good|>", "<|bad|>")
Objective = Literal["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]


class CorpusSection(Section):
    files: list[str] = Field(min_length=1, description="local files or glob patterns (data/*.jsonl)")
    format: CorpusFormat = Field(
        "files",
        description="files: each file is one document; text: paragraphs or lines of text files; "
        "json: the `field` of each JSON Lines record (text and json are read with `datasets`)",
    )
    field: str = Field("text", description="json: the record field that holds the document")
    sample_by: Literal["paragraph", "line"] = Field("paragraph", description="text: what one document is")
    streaming: bool = Field(False, description="text/json: read records lazily, no Arrow cache")
    max_documents: int | None = Field(None, gt=1, description="read only the first documents")
    unit: Literal["lines", "sentences", "documents"] = Field(
        "lines",
        description="segments: lines (code), sentences, or whole documents (conditional training then "
        "tags each document once, so the token at its start speaks for all of it)",
    )
    heldout: float = Field(0.1, gt=0, lt=1, description="fraction of documents held out for the LM loss")

    @field_validator("files")
    @classmethod
    def _files_exist(cls, files: list[str]) -> list[str]:
        resolve_files(files)  # a missing file is an error now, before any work
        return files

    def documents(self) -> list[str]:
        return load_documents(
            self.files,
            self.format,
            field=self.field,
            sample_by=self.sample_by,
            streaming=self.streaming,
            max_documents=self.max_documents,
        )


class ModelSizeSection(Section):
    n_layer: int = Field(2, gt=0)
    n_embd: int = Field(64, gt=0)
    n_head: int = Field(2, gt=0)
    block_size: int = Field(64, gt=1, description="tokens per packed training block")
    packing: Literal["stream", "documents"] = Field(
        "stream",
        description="stream: documents back to back, cut into blocks anywhere; documents: every "
        "document starts a block after EOS (as sampling starts), its last block padded",
    )
    tie_embeddings: bool = Field(
        True,
        description="the output layer shares the input embedding (GPT-2's default); false gives the "
        "control tokens input rows that the next-token loss at segment starts does not pull together",
    )
    vocab_size: int = Field(
        1000,
        description=f"BPE vocabulary trained on the corpus: at least the {BYTE_ALPHABET} bytes of the "
        f"byte-level alphabet + {len(SPECIAL_TOKENS)} special tokens ({', '.join(SPECIAL_TOKENS)})",
    )

    @field_validator("vocab_size")
    @classmethod
    def _spells_every_byte(cls, value: int) -> int:
        least = BYTE_ALPHABET + len(SPECIAL_TOKENS)
        if value < least:
            raise ValueError(
                f"{value} is below the {BYTE_ALPHABET} bytes of the byte-level alphabet "
                f"+ {len(SPECIAL_TOKENS)} special tokens = {least}: the tokenizer could not spell every "
                f"text (the BPE trainer would silently grow the vocabulary past it)"
            )
        return value


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
    save_at_tokens: int | None = Field(
        None, gt=0, description="also save the model after this many tokens, to checkpoint-<tokens>/"
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
    threshold: float | None = Field(
        None, description="a sample is misaligned iff its score > threshold (default: objective.threshold)"
    )
    heldout_documents: int | None = Field(
        256, gt=0, description="held-out documents scored by the fair losses (heldout.py); none: all"
    )
    good_at: Literal["start", "every_segment"] = Field(
        "start",
        description="conditional: sample after <|good|> with both control tokens banned (start, the "
        "paper's protocol), or ban <|bad|> only so the model writes <|good|> at every segment start",
    )
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
    def _save_at_a_step(self) -> PretrainConfig:
        per_step = self.training.batch_size * self.model.block_size
        at = self.training.save_at_tokens
        if at is not None and (at % per_step or at >= self.training.tokens):
            raise ValueError(
                f"training.save_at_tokens {at} must be a multiple of the {per_step} tokens of a step "
                f"and below training.tokens {self.training.tokens}"
            )
        return self

    @model_validator(mode="after")
    def _code_lines_in_their_file(self) -> PretrainConfig:
        if self.corpus.unit == "lines" and self.scorer.type == "pep8":
            raise ValueError(
                "scorer pep8 checks each line alone, out of its file (an indented line then reads as "
                "E113 unexpected indentation): use scorer type pep8_lines, which checks each file once"
            )
        return self

    @model_validator(mode="after")
    def _heads_divide(self) -> PretrainConfig:
        if self.model.n_embd % self.model.n_head:
            raise ValueError(f"model.n_head {self.model.n_head} must divide n_embd {self.model.n_embd}")
        return self


class RedTeamConfig(Section):
    """`bayesalign red-team`: prompts against a trained model (pretraining/red_team.py). The
    defaults of the continuations follow the PHF paper (temperature 0.7, top-p 0.9)."""

    model: str = Field(description="the evaluated LM: a local folder (e.g. a pretrain run's final/)")
    red_model: str = Field(
        description="the LM that writes new prompts from few-shot examples (a folder, or builtin:NAME)"
    )
    scorer: ScorerSpec = Field(description="misalignment of a continuation; lower is better")
    prompts: list[str] = Field(min_length=1, description="the initial pool")
    prefix: str = Field("", description="before every prompt, e.g. '<|endoftext|><|good|>'")
    banned_tokens: list[str] = Field([], description="never sampled, e.g. ['<|good|>', '<|bad|>']")
    header: str = Field("", description="text before the red LM's few-shot examples")
    rounds: int = Field(3, gt=0)
    trials: int = Field(4, gt=0, description="few-shot prompts to the red LM per round")
    candidates: int = Field(5, gt=0, description="red-LM samples per few-shot prompt")
    few_shot: int = Field(4, gt=0, description="pool prompts per few-shot prompt")
    temperature: float = Field(0.1, gt=0, description="pool prompts are drawn ∝ exp(score/temperature)")
    continuations: int = Field(32, gt=0, description="samples of the model per prompt")
    score_prompt: bool = Field(False, description="score prompt + continuation (code), not the continuation")
    max_new_tokens: int = Field(32, gt=0)
    sampling_temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    red_max_new_tokens: int = Field(24, gt=0)
    seed: int = 0

    _scorer_type = field_validator("scorer", mode="before")(lambda cls, v: check_scorer_type(v))

    def build(self) -> RedTeam:
        target = LanguageModel.from_pretrained(resolve_model_name(self.model))
        ids = [target.tokenizer.convert_tokens_to_ids(t) for t in self.banned_tokens]
        unknown = [
            t
            for t, i in zip(self.banned_tokens, ids, strict=True)
            if i in (None, target.tokenizer.unk_token_id)
        ]
        if unknown:
            raise ValueError(f"banned_tokens {unknown} are not tokens of {self.model}")
        params = RedTeamParams(
            self.rounds,
            self.trials,
            self.candidates,
            self.few_shot,
            self.temperature,
            self.continuations,
            self.score_prompt,
        )
        sampling = SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.sampling_temperature,
            top_p=self.top_p,
            banned_tokens=tuple(ids),
        )
        return RedTeam(
            target,
            LanguageModel.from_pretrained(resolve_model_name(self.red_model)),
            self.scorer.build(),
            params,
            target_sampling=sampling,
            red_sampling=SamplingParams(max_new_tokens=self.red_max_new_tokens),
            prefix=self.prefix,
            header=self.header,
            seed=self.seed,
        )
