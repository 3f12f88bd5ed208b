"""Language models as distributions over sequences: sampling with log-probabilities, and scoring.

A sequence x is the list of *generated* tokens that follows a prompt (the context). Its
log-probability sums the generated tokens only: never the prompt, never padding, and the EOS token
counted once when the sequence ended with it. Every model in the library (the prior a, the policy
π, the proposal q) is a `LanguageModel`, so the same convention holds everywhere.

Modules are kept in eval mode (no dropout): the probability a model assigns to a sample must be
the probability of the distribution that produced it, or importance weights are wrong.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.activations import ACT2FN, NewGELUActivation

from bayesalign import sharding
from bayesalign.builtin_models import resolve_model_name
from bayesalign.decoding import NextTokenTilt, decode, tilt_positions
from bayesalign.samples import Samples, SamplingParams
from bayesalign.twisted import TwistedModule, is_twisted_folder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _fuse_gelu(module: torch.nn.Module) -> torch.nn.Module:
    """Replace GPT-2's ``gelu_new`` (transformers' NewGELUActivation: the tanh approximation of
    GELU written as seven elementwise operations, each with its own autograd node) by PyTorch's
    fused kernel of the same function (``gelu_pytorch_tanh``). Same function up to float
    rounding: token log-probabilities move by ≤ 2e-6; a small GPT-2's training step on CPU
    takes ~15% less CPU time (measured on the disco-comparison workload). The saved config and
    weights are unchanged."""
    for name, child in module.named_children():
        if isinstance(child, NewGELUActivation):
            setattr(module, name, ACT2FN["gelu_pytorch_tanh"])
        else:
            _fuse_gelu(child)
    return module


class LanguageModel:
    """A causal LM seen as a distribution over continuations of a prompt.

    ``prompt`` is the default context for unconditional sampling; an empty prompt means "start
    from BOS" (or EOS for GPT-2-style models that have no BOS). Per-sample contexts passed to
    :meth:`sample` replace it (conditional models, CDPG). With ``chat``, the prompt and every
    context are a user's message to a chat model: wrapped by the tokenizer's chat template,
    ending with the assistant's turn (the text itself stays unwrapped everywhere else).

    ``adapters_disabled`` makes a LoRA-wrapped module act as its base model (the prior a, see
    :func:`make_policy`), so a and π share one copy of the base weights.
    """

    def __init__(
        self,
        module: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompt: str = "",
        *,
        adapters_disabled: bool = False,
        chat: bool = False,
        tilt: NextTokenTilt | None = None,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; sequences could never end")
        if chat and not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template, so prompts cannot be chat messages")
        self.module = _fuse_gelu(module.eval())
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.adapters_disabled = adapters_disabled
        self.chat = chat
        self.tilt = tilt
        # Set by the trainer around differentiable forwards when accelerate wrapped ``module``
        # (DDP/FSDP/DeepSpeed, training/distributed.py): the wrapper's forward syncs gradients.
        self.wrapper: torch.nn.Module | None = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        prompt: str = "",
        *,
        dtype: torch.dtype = torch.float32,
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        chat: bool = False,
        **kwargs,
    ) -> LanguageModel:
        """Load any HF causal LM, or encoder-decoder (T5/BART-style) model, from a hub id or a
        local folder, with safetensors weights. For an encoder-decoder the context (prompt) is
        the encoder's input and the sample is the decoder's output. ``builtin:NAME`` loads a
        model that ships with a pip package (`builtin_models`), e.g. builtin:smollm2-135m-instruct.
        ``chat``: prompts are user messages in the tokenizer's chat template (see the class)."""
        name_or_path = resolve_model_name(str(name_or_path))
        local = {"trust_remote_code": trust_remote_code, "local_files_only": local_files_only}
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **local)
        if is_twisted_folder(name_or_path):  # a prior and its learned twist (twisted.py)
            module = TwistedModule.from_folder(name_or_path, dtype=dtype, **local, **kwargs)
            return cls(module, tokenizer, prompt, chat=chat)
        config = AutoConfig.from_pretrained(name_or_path, **local)
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        module = auto.from_pretrained(
            name_or_path,
            dtype=dtype,
            use_safetensors=True,
            **local,
            **kwargs,
        )
        return cls(module, tokenizer, prompt, chat=chat)

    def trainable_copy(self) -> LanguageModel:
        """An independent copy whose every weight is trainable (full fine-tuning)."""
        module = copy.deepcopy(self.module)
        module.requires_grad_(True)
        return LanguageModel(module, self.tokenizer, self.prompt, chat=self.chat, tilt=self.tilt)

    def frozen_copy(self) -> LanguageModel:
        """An independent, non-trainable copy of the current weights (a proposal q ← π); under
        FSDP an unsharded copy, which every process must make together (sharding.plain_copy)."""
        module = sharding.plain_copy(self.module) if self.sharded else copy.deepcopy(self.module)
        module.requires_grad_(False)
        disabled = self.adapters_disabled
        return LanguageModel(
            module, self.tokenizer, self.prompt, adapters_disabled=disabled, chat=self.chat, tilt=self.tilt
        )

    def save_pretrained(
        self, folder: str | Path, *, merge_lora: bool = True, dtype: torch.dtype | None = None
    ) -> None:
        """Write weights (safetensors) and tokenizer. A LoRA policy is merged into its base
        (a plain HF model folder) unless ``merge_lora`` is False (adapter weights only).
        ``dtype``: the weights are written in it (e.g. bfloat16 halves the disk); the model in
        memory keeps its own. Under FSDP, save an `unsharded` copy. A tilted model also writes
        its tilt (scorer_tilt.py) beside the weights."""
        if self.sharded:
            raise RuntimeError(
                "the model is sharded by FSDP: save an unsharded() copy, made on every process"
            )
        module = self.module
        if self.has_adapters and merge_lora:
            module = copy.deepcopy(module).merge_and_unload()
        if dtype is not None and dtype != next(module.parameters()).dtype:
            module = (copy.deepcopy(module) if module is self.module else module).to(dtype)
        module.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        if self.tilt is not None:
            self.tilt.save(folder)

    @property
    def sharded(self) -> bool:
        """The module is sharded over processes by FSDP2 (accelerate's FSDP, sharding.py)."""
        return sharding.is_sharded(self.module)

    def unsharded(self) -> LanguageModel:
        """This model with its full weights in a plain module, to save or copy: itself unless
        FSDP shards it, and then a copy that every process must make together."""
        if not self.sharded:
            return self
        return LanguageModel(
            sharding.plain_copy(self.module),
            self.tokenizer,
            self.prompt,
            adapters_disabled=self.adapters_disabled,
            chat=self.chat,
        )

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder model: the context is encoded once, the sample is decoded."""
        return bool(getattr(self.module.config, "is_encoder_decoder", False))

    @property
    def _decoder_start(self) -> int:
        start = self.module.config.decoder_start_token_id
        return start if start is not None else self.tokenizer.pad_token_id

    @property
    def has_adapters(self) -> bool:
        return hasattr(self.module, "disable_adapter")

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _adapter_scope(self) -> contextlib.AbstractContextManager:
        if self.adapters_disabled:
            return self.module.disable_adapter()
        return contextlib.nullcontext()

    # -- prompts ----------------------------------------------------------------------------
    def _start_ids(self, text: str) -> list[int]:
        if self.chat:  # the template writes its own special tokens (BOS included, if any)
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if ids:
            return ids
        start = self.tokenizer.bos_token_id
        return [start if start is not None else self.tokenizer.eos_token_id]

    def encode_prompts(self, contexts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask, so every generation starts at the same column."""
        encoded = [self._start_ids(c) for c in contexts]
        width = max(len(e) for e in encoded)
        ids = torch.zeros(len(encoded), width, dtype=torch.long)
        mask = torch.zeros(len(encoded), width, dtype=torch.bool)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = True
        return ids, mask

    def encode_continuations(self, contexts: Sequence[str], texts: Sequence[str]) -> Samples:
        """Given texts (e.g. reference outputs) as if sampled after ``contexts``, to score them
        with :meth:`log_prob`. No EOS is added: a reference need not be a whole sequence."""
        if len(contexts) != len(texts):
            raise ValueError(f"got {len(contexts)} contexts for {len(texts)} texts")
        prompt_ids, prompt_mask = self.encode_prompts(contexts)
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        if any(not r for r in rows):
            raise ValueError("a continuation to score is empty after tokenisation")
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
        return Samples(
            prompt_ids, prompt_mask, ids, mask, torch.zeros(ids.shape), list(texts), list(contexts)
        )

    def decode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return self.tokenizer.batch_decode(
            [row[m].tolist() for row, m in zip(ids, mask, strict=True)],
            skip_special_tokens=True,
        )

    # -- sampling ---------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        params: SamplingParams = SamplingParams(),
        *,
        contexts: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        differentiable: bool = False,
    ) -> Samples:
        """Draw ``n`` sequences; log-probabilities come from the sampling pass (KV cache).
        ``differentiable``: the samples also carry that pass's log π with its autograd graph
        (``Samples.graph_token_log_probs``), for an on-policy step that back-propagates
        through it instead of running π again."""
        if contexts is not None and len(contexts) != n:
            raise ValueError(f"got {len(contexts)} contexts for {n} samples")
        batch_size = batch_size or n
        parts = []
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            ctx = None if contexts is None else list(contexts[start:stop])
            parts.append(self._sample_batch(stop - start, params, ctx, generator, differentiable))
        return parts[0] if len(parts) == 1 else Samples.concat(parts)

    def _sample_batch(
        self,
        n: int,
        params: SamplingParams,
        contexts: list[str] | None,
        generator: torch.Generator | None,
        differentiable: bool,
    ) -> Samples:
        prompt_ids, prompt_mask = self.encode_prompts(contexts or [self.prompt] * n)
        with self._adapter_scope():
            ids, mask, token_log_q = decode(
                self.module,
                prompt_ids,
                prompt_mask,
                params,
                eos=self.tokenizer.eos_token_id,
                decoder_start=self._decoder_start if self.is_seq2seq else None,
                generator=generator,
                differentiable=differentiable,
                tilt=self.tilt,
            )
        return Samples(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            ids=ids,
            mask=mask,
            token_log_q=token_log_q.detach().cpu(),
            texts=self.decode(ids, mask),
            contexts=contexts,
            graph_token_log_probs=token_log_q if differentiable else None,
        )

    # -- scoring ----------------------------------------------------------------------------
    def token_log_probs(self, samples: Samples) -> torch.Tensor:
        """Per-token log-probabilities of the generated tokens, shape [B, T], zero at padding.

        Differentiable unless called under ``torch.no_grad()``/``inference_mode()``. Only the
        T positions that predict generated tokens are projected onto the vocabulary.
        """
        return self.forward_generated(samples, hidden=False)[0]

    def forward_generated(
        self, samples: Samples, *, hidden: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token log-probabilities [B, T] and, with ``hidden``, the last layer's hidden states
        [B, T, H] at the positions that predict each generated token (what a value head reads)."""
        logits, states = self.generated_logits(samples, hidden=hidden)
        targets = samples.ids.to(logits.device)
        token_lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        token_lp = token_lp.masked_fill(~samples.mask.to(logits.device), 0.0)
        return token_lp, states

    def generated_logits(
        self, samples: Samples, *, hidden: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next-token logits [B, T, V] at the positions that predict each generated token
        (one forward pass over prompt + sample), and with ``hidden`` the last hidden states there;
        differentiable unless called under no_grad. `forward_generated` gathers the sampled
        tokens' log-probabilities from them; a loss over the whole vocabulary reads them here."""
        device = self.device
        n_gen = samples.ids.shape[1]
        forward = self.wrapper if self.wrapper is not None else self.module
        with self._adapter_scope():
            if self.is_seq2seq:
                start = torch.full((len(samples), 1), self._decoder_start, dtype=torch.long)
                out = forward(
                    input_ids=samples.prompt_ids.to(device),
                    attention_mask=samples.prompt_mask.to(device).long(),
                    decoder_input_ids=torch.cat([start, samples.ids[:, :-1]], dim=1).to(device),
                    decoder_attention_mask=torch.cat(
                        [torch.ones_like(start, dtype=torch.bool), samples.mask[:, :-1]], dim=1
                    )
                    .to(device)
                    .long(),
                    use_cache=False,
                    output_hidden_states=hidden,
                )
                states = out.decoder_hidden_states[-1] if hidden else None
            else:
                input_ids, attention, positions = samples.causal_inputs(device)
                out = forward(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    use_cache=False,
                    logits_to_keep=n_gen,
                    output_hidden_states=hidden,
                )
                states = out.hidden_states[-1][:, -n_gen:] if hidden else None
        logits = out.logits
        if logits.shape[1] != n_gen:  # models that ignore logits_to_keep
            logits = logits[:, -n_gen:]
        if self.tilt is not None:
            logits = tilt_positions(self.tilt, samples.ids, samples.mask, logits)
        return logits, states

    def log_prob(self, samples: Samples, *, batch_size: int | None = None) -> torch.Tensor:
        """Sequence log-probabilities log m(x), shape [B] (generated tokens only)."""
        if batch_size is None or batch_size >= len(samples):
            return self.token_log_probs(samples).sum(-1)
        parts = [
            (index, self.token_log_probs(c).sum(-1)) for index, c in samples.chunks_by_length(batch_size)
        ]
        out = torch.empty(len(samples), dtype=parts[0][1].dtype, device=parts[0][1].device)
        for index, values in parts:
            out[index.to(out.device)] = values
        return out

    @torch.no_grad()
    def log_prob_frozen(self, samples: Samples, *, batch_size: int | None = None) -> torch.Tensor:
        """:meth:`log_prob` without building a graph (for a, q and evaluation)."""
        return self.log_prob(samples, batch_size=batch_size).cpu()

    @torch.no_grad()
    def token_log_probs_frozen(self, samples: Samples, *, batch_size: int | None = None) -> torch.Tensor:
        """:meth:`token_log_probs` [B, T] without building a graph, in chunks of ``batch_size``."""
        size = batch_size or len(samples)
        out = torch.zeros(samples.ids.shape)
        for index, chunk in samples.chunks_by_length(size):
            values = self.token_log_probs(chunk).cpu()
            out[index, : values.shape[1]] = values.to(out.dtype)
        return out


def make_policy(prior: LanguageModel, lora: dict | None = None) -> LanguageModel:
    """The trainable policy π, initialised at ``prior`` (a), which stays a valid prior.

    Without LoRA, π is a trainable copy and the prior keeps its own frozen weights. With LoRA
    (``lora`` holds peft.LoraConfig arguments), peft wraps the prior's module in place; the prior
    is then switched to that same module with adapters disabled, so a and π share one copy of
    the base weights and the caller's ``prior`` object keeps meaning a.
    """
    prior.module.requires_grad_(False)
    if lora is None:
        return prior.trainable_copy()
    from peft import LoraConfig, get_peft_model

    task = "SEQ_2_SEQ_LM" if prior.is_seq2seq else "CAUSAL_LM"
    module = get_peft_model(prior.module, LoraConfig(task_type=task, **lora))
    prior.module, prior.adapters_disabled = module, True
    return LanguageModel(module, prior.tokenizer, prior.prompt, chat=prior.chat)
