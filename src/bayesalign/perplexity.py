"""Perplexity of texts under a reference language model: a fluency check that needs no
preference scorer. A policy that satisfies its constraints by drifting into text no fluent
model would write shows here, even where KL(π‖a) looks moderate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from bayesalign.models import LanguageModel


@torch.no_grad()
def perplexity(model: LanguageModel, texts: Sequence[str], *, batch_size: int = 32) -> float:
    """exp(total NLL / total tokens) of ``texts`` under ``model``, each text scored from the start
    of a sequence (the model's own tokenizer, no prompt), so that models with different
    tokenizers can judge the same text. Empty texts hold no token to score and are left out;
    NaN when no text is left."""
    kept = [t for t in texts if t]
    if not kept:
        return float("nan")
    encoded = model.encode_continuations([""] * len(kept), kept)
    nll = -model.log_prob_frozen(encoded, batch_size=batch_size).double().sum()
    return math.exp(nll.item() / encoded.lengths.sum().item())
