"""Checks that a run can work at all, made before it spends any time: a sequence longer than the
model's context window would otherwise fail with a bare IndexError at the first long sample, and
a mistyped local model path would be sent to the hub as if it were a repository id."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayesalign.models import LanguageModel

# Where HF model configs keep the number of positions a model can attend to.
CONTEXT_LENGTH_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")


class PreflightError(ValueError):
    """A run that cannot work as configured, found before any model is loaded or sample drawn."""


def looks_like_path(name: str) -> bool:
    """A model name meant as a local folder: it starts like a path (``.``, ``/``, ``~``), has more
    than the one ``/`` of a hub id (``org/name``), or its first part exists here (``runs/x``)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).exists()


def check_model_name(name: str, key: str = "model.name") -> None:
    """A name that looks like a local path must be an existing folder: it is never sent to the
    hub, where it would be someone else's repository or an 'invalid repo id' error."""
    if looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise PreflightError(f"{key} {name!r} looks like a local folder, and there is no such folder")


def hub_allowed(asked: bool) -> bool:
    """Downloads from the Hugging Face Hub only when the config asks (``model.hub: true``) or
    the environment says so the usual way (``HF_HUB_OFFLINE=0``); otherwise names resolve to
    local folders and the local HF cache only, so a typo never fetches someone else's code."""
    return asked or os.environ.get("HF_HUB_OFFLINE") == "0"


def context_length(model: LanguageModel) -> int | None:
    """The model's context window in tokens; None for models without a fixed one (T5's
    relative positions)."""
    config = model.module.config
    for key in CONTEXT_LENGTH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_generation_fits(model: LanguageModel, max_new_tokens: int, prompts: Sequence[str]) -> None:
    """Refuse ``sampling.max_new_tokens`` when the longest prompt (or context) plus that many
    tokens does not fit the model. An encoder-decoder reads the prompt with its encoder, so
    only the generated tokens count against the decoder's window."""
    window = context_length(model)
    if window is None:
        return
    prompt = 0 if model.is_seq2seq else model.encode_prompts(list(prompts) or [model.prompt])[0].shape[1]
    if prompt + max_new_tokens > window:
        longest = f"the longest prompt is {prompt} tokens, so " if prompt else ""
        raise PreflightError(
            f"sampling.max_new_tokens {max_new_tokens} does not fit the model's context window of "
            f"{window} tokens: {longest}at most {max(window - prompt, 0)} new tokens fit"
        )
