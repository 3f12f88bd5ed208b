"""Tiny, fully enumerable language models: for tests, benchmarks and for checking methods exactly.

A toy model has a word-level vocabulary (EOS plus a few words) and a randomly initialised
GPT-2. With a handful of words and a few tokens per sequence, every possible sequence can be
listed (see exact.py), so Z, p, KL and moments are computed exactly instead of estimated.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from bayesalign.models import LanguageModel, make_policy

EOS = "<eos>"


def toy_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: id 0 is EOS (also used to start sequences), then ``words``."""
    vocab = {EOS: 0, **{w: i + 1 for i, w in enumerate(words)}}
    if len(vocab) != len(words) + 1:
        raise ValueError(f"toy vocabulary words must be distinct and not {EOS!r}: {words}")
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def toy_model(
    words: list[str],
    *,
    seed: int = 0,
    n_embd: int = 16,
    n_layer: int = 1,
    n_head: int = 2,
    n_positions: int = 32,
    init_std: float = 0.3,
    prompt: str = "",
    architecture: str = "gpt2",
    chat_template: str | None = None,
) -> LanguageModel:
    """A random GPT-2 over ``words`` (or, with ``architecture="t5"``, a random T5 encoder-decoder
    whose context is the encoder's input); ``init_std`` well above GPT-2's 0.02 makes the
    distribution far from uniform, so targets and priors differ in interesting ways.
    ``chat_template``: a Jinja chat template for the tokenizer (to exercise chat prompts)."""
    torch.manual_seed(seed)
    tokenizer = toy_tokenizer(words)
    tokenizer.chat_template = chat_template
    if architecture == "t5":
        module: PreTrainedModel = T5ForConditionalGeneration(
            T5Config(
                vocab_size=len(words) + 1,
                d_model=n_embd,
                d_kv=n_embd // n_head,
                d_ff=4 * n_embd,
                num_layers=n_layer,
                num_decoder_layers=n_layer,
                num_heads=n_head,
                initializer_factor=init_std / 0.3,  # 1 at the default: spread, context-dependent
                pad_token_id=0,
                eos_token_id=0,
                decoder_start_token_id=0,
                dropout_rate=0.0,
            )
        )
        return LanguageModel(module, tokenizer, prompt)
    if architecture != "gpt2":
        raise ValueError(f"unknown toy architecture {architecture!r}; valid: gpt2, t5")
    config = GPT2Config(
        vocab_size=len(words) + 1,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        initializer_range=init_std,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return LanguageModel(GPT2LMHeadModel(config), tokenizer, prompt)


def perturbed_policy(prior: LanguageModel, seed: int, scale: float = 0.3) -> LanguageModel:
    """A trainable copy of ``prior`` with Gaussian noise of std ``scale`` on every weight: a
    policy π ≠ a for checking identities and gradients exactly (tests, notebooks)."""
    policy = make_policy(prior)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return policy
