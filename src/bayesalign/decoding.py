"""Ancestral decoding with the KV cache: the loop that draws sequences token by token and keeps
each token's log-probability under the distribution it was drawn from (log q). `LanguageModel`
calls it with its module; the loop knows nothing of prompts or texts.

With ``differentiable`` the loop runs with autograd on and returns the log-probabilities with
their graph: the sampling pass is then also the policy's forward pass of an on-policy training
step (training/sampling_pass.py), which saves running π a second time over the same tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from transformers import PreTrainedModel

from bayesalign.samples import SamplingParams


class NextTokenTilt(Protocol):
    """A change of the next-token distribution that reads the tokens generated so far (the scorer
    tilt, scorer_tilt.py): ``prefixes`` [n, step] with ``mask``, the model's ``log_probs``
    [n, V] after them; returns the tilted log-probabilities [n, V]. Called at every step of the
    sampling pass and at every position when a model scores samples, so both agree."""

    def __call__(
        self, prefixes: torch.Tensor, mask: torch.Tensor, log_probs: torch.Tensor, step: int
    ) -> torch.Tensor: ...

    def save(self, folder: str | Path) -> None:
        """Write the tilt beside a saved model's weights."""


def tilt_positions(
    tilt: NextTokenTilt, ids: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    """``tilt`` applied at every generated position of samples (``ids``, ``mask`` [B, T]) to the
    model's ``logits`` [B, T, V] there, as the sampling pass applied it step by step; positions
    after a row's EOS keep the untilted values (they are masked out)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    steps = []
    for t in range(logits.shape[1]):
        step = log_probs[:, t]
        rows = mask[:, t].nonzero().squeeze(1)
        tilted = tilt(ids[rows, :t], mask[rows, :t], step[rows.to(step.device)], t)
        steps.append(step.index_copy(0, rows.to(step.device), tilted))
    return torch.stack(steps, dim=1)


def cache_key(out) -> str:
    """The name of a forward's KV cache in its output, which is also the keyword the next forward
    takes it by: ``cache`` in transformers >= 5.x, ``past_key_values`` in older releases."""
    return "cache" if "cache" in out else "past_key_values"


def uniforms(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n uniforms [n, 1] in float64 for `draw_tokens`, one per row of the whole batch at every
    step, also for rows that have stopped, so that the random stream (and so each row's draws)
    does not depend on which rows are still being decoded."""
    where = generator.device if generator is not None else device  # a CPU generator may drive a GPU
    return torch.rand(n, 1, generator=generator, dtype=torch.float64, device=where).to(device)


def draw_tokens(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row by inverse-CDF sampling, row i at its uniform u[i] ([n, 1]).

    On CPU this is ~25× faster than torch.multinomial, which draws one exponential variate per
    vocabulary entry. ``right=True`` never picks a token of probability 0 (top-k/top-p masks).
    """
    cdf = log_probs.exp().double().cumsum(-1)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return token.clamp_(max=cdf.shape[-1] - 1).squeeze(1)


def decode(
    module: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    params: SamplingParams,
    *,
    eos: int,
    decoder_start: int | None = None,
    generator: torch.Generator | None = None,
    differentiable: bool = False,
    tilt: NextTokenTilt | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Continue each (left-padded) prompt for at most ``params.max_new_tokens`` tokens, or until
    EOS; returns token ids, their mask and per-token log q, [n, T] on the CPU (T: the longest).
    ``decoder_start``: an encoder-decoder's first decoder token (the prompt is then the encoder's
    input, encoded once). ``differentiable``: log q keeps its autograd graph and stays on the
    model's device (ancestral sampling only, where log q is log π). ``tilt``: applied to each
    step's log-probabilities before the draw."""
    if differentiable and not params.is_ancestral:
        raise ValueError("a differentiable sampling pass needs ancestral sampling (log q = log π)")
    with torch.set_grad_enabled(differentiable):
        ids, mask, token_log_q = _decode(
            module, prompt_ids, prompt_mask, params, eos, decoder_start, generator, tilt
        )
    return ids.cpu(), mask.cpu(), token_log_q if differentiable else token_log_q.cpu()


def _decode(
    module: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    params: SamplingParams,
    eos: int,
    decoder_start: int | None,
    generator: torch.Generator | None,
    tilt: NextTokenTilt | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`decode`'s loop, on the model's device; nothing in it is modified in place after autograd
    may have saved it (``alive`` is rebound, log q collected per step and stacked).

    Rows that have drawn EOS leave the pass (decoder-only models): once an eighth of the rows in
    it have stopped, the pass, its KV cache, mask and positions keep only the rest. Every step
    still draws one uniform per row of the whole batch, so the draws are those of a pass that
    keeps every row to the end."""
    n, device = len(prompt_ids), next(module.parameters()).device
    attention = prompt_mask.to(device).long()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    warpers = params.warpers(device)
    steps = params.max_new_tokens
    ids = torch.zeros(n, steps, dtype=torch.long, device=device)
    mask = torch.zeros(n, steps, dtype=torch.bool, device=device)
    token_log_q: list[torch.Tensor] = []
    active = torch.arange(n, device=device)  # the batch's rows still in the pass
    alive = torch.ones(n, dtype=torch.bool, device=device)  # of those, the ones without EOS yet
    inputs, cache, used = prompt_ids.to(device), {}, 0
    seq2seq = decoder_start is not None
    if seq2seq:  # encode the contexts once; decode from the start token
        encoded = module.get_encoder()(input_ids=inputs, attention_mask=attention)
        inputs = torch.full((n, 1), decoder_start, dtype=torch.long, device=device)
    for t in range(steps):
        if seq2seq:
            out = module(
                encoder_outputs=encoded,
                attention_mask=attention,
                decoder_input_ids=inputs,
                use_cache=True,
                **cache,
            )
        else:
            out = module(
                input_ids=inputs,
                attention_mask=attention,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **cache,
            )
        key = cache_key(out)
        cache = {key: out[key]}
        logits = warpers(inputs, out.logits[:, -1].float())
        log_probs = torch.log_softmax(logits, dim=-1)
        if tilt is not None:
            log_probs = tilt(ids[active, :t], mask[active, :t], log_probs, t)
        token = draw_tokens(log_probs.detach(), uniforms(n, generator, device)[active])
        ids[active, t] = torch.where(alive, token, 0)
        mask[active, t] = alive
        step_log_q = torch.where(alive, log_probs.gather(1, token[:, None])[:, 0], 0.0)
        token_log_q.append(
            step_log_q if len(active) == n else step_log_q.new_zeros(n).scatter(0, active, step_log_q)
        )
        used = t + 1
        alive = alive & (token != eos)
        if not alive.any():
            break
        reorder = getattr(cache[key], "reorder_cache", None)
        if not seq2seq and reorder is not None and 8 * int((~alive).sum()) >= len(active):
            keep = alive.nonzero().squeeze(1)
            reorder(keep)  # rebinds each layer's keys and values to the kept rows
            active, token, alive = active[keep], token[keep], alive[keep]
            attention, positions = attention[keep], positions[keep]
        inputs = token[:, None]
        if not seq2seq:  # the decoder's own mask and positions grow inside it
            attention = torch.cat([attention, attention.new_ones(len(active), 1)], dim=1)
            positions = positions[:, -1:] + 1
    return ids[:, :used], mask[:, :used], torch.stack(token_log_q, dim=1)
