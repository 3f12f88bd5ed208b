"""Held-out LM loss as each model is used, so that objectives compare fairly.

A conditionally trained model learned text in which almost every segment starts with <|good|> or
<|bad|>. Scored on untagged text (``heldout_loss``) it pays about −log(drop) nats at every
segment start for a token it was trained to expect, so that loss says little about how well it
models the text. Two losses per text token, on the first tokens of each held-out document
(segments tokenised alone, as in training, after <|endoftext|>), the same for every objective:

- **marginal**: log p(x) = log Σ_c p(x, c), summed over "<|good|>, <|bad|> or no token" at each
  segment start. The history of a transformer depends on the control tokens chosen before, so
  the sum over all 3^n choices is estimated by sequential importance sampling with the locally
  optimal proposal: at segment i, w_i = Σ_c p(c | h_i)·p(x^i | h_i, c), then c_i is drawn
  ∝ p(c | h_i)·p(x^i | h_i, c) and appended to the history. Π_i w_i is an unbiased estimate of
  p(x), so the mean of −log Π_i w_i is, in expectation, an *upper* bound on the marginal loss
  (Jensen): it never flatters conditional training. For a model that never learned control
  tokens (MLE and the other objectives) the extra branches add almost nothing.
- **as sampled**: −log of the text under the distribution the misalignment is measured on:
  after <|endoftext|> (and <|good|> for conditional training), both control tokens banned (their
  probability removed and the rest renormalised).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Document = list[list[int]]  # the token ids of each segment


def truncate(segment_ids: Sequence[Sequence[int]], max_tokens: int) -> Document:
    """The first ``max_tokens`` tokens of a document, whole segments first, the last one cut."""
    out: Document = []
    left = max_tokens
    for ids in segment_ids:
        if left <= 0:
            break
        if ids:
            out.append(list(ids[:left]))
            left -= len(out[-1])
    return out


def _continuation_log_probs(
    module, rows: list[list[int]], start: int, banned: Sequence[int] = (), pad: int = 0
) -> torch.Tensor:
    """Σ log p(rows[r][t] | rows[r][:t]) over t ≥ ``start``, per row (right-padded batch)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    logits = module(input_ids=ids).logits[:, :-1].float()
    if banned:
        logits[..., list(banned)] = float("-inf")
    log_p = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1).double()
    positions = torch.arange(1, length)
    lengths = torch.tensor([len(r) for r in rows])
    keep = (positions[None] >= start) & (positions[None] < lengths[:, None])
    return torch.where(keep, log_p, 0.0).sum(-1)


@torch.no_grad()
def text_log_prob(module, prompt: Sequence[int], document: Document, banned: Sequence[int] = ()) -> float:
    """log p(text | prompt), the segments concatenated; ``banned`` tokens renormalised away."""
    row = list(prompt) + [t for segment in document for t in segment]
    return _continuation_log_probs(module, [row], len(prompt), banned)[0].item()


@torch.no_grad()
def marginal_log_prob(
    module,
    prompt: Sequence[int],
    document: Document,
    controls: tuple[int, int],
    generator: torch.Generator,
) -> float:
    """An unbiased estimate of p(x) = Σ_c p(x, c) over a control token (or none) at each segment
    start, by sequential importance sampling (see the module docstring); returned as its log."""
    history, total = list(prompt), 0.0
    for segment in document:
        variants = [[controls[0], *segment], [controls[1], *segment], list(segment)]
        joint = _continuation_log_probs(module, [history + v for v in variants], len(history))
        total += torch.logsumexp(joint, 0).item()
        choice = torch.multinomial(torch.softmax(joint, 0).float(), 1, generator=generator).item()
        history += variants[choice]
    return total


def heldout_losses(
    module,
    documents: Sequence[Document],
    *,
    eos: int,
    controls: tuple[int, int],
    conditional: bool,
    seed: int = 0,
) -> dict[str, float]:
    """Both losses per text token over ``documents`` (see the module docstring)."""
    was_training = module.training
    module.eval()
    generator = torch.Generator().manual_seed(seed)
    tokens = sum(len(s) for d in documents for s in d)
    if tokens == 0:
        raise ValueError("no held-out text to score")
    marginal = sampled = 0.0
    sampling_prompt = [eos, controls[0]] if conditional else [eos]
    for document in documents:
        if not document:
            continue
        marginal += marginal_log_prob(module, [eos], document, controls, generator)
        sampled += text_log_prob(module, sampling_prompt, document, banned=controls)
    module.train(was_training)
    if not (math.isfinite(marginal) and math.isfinite(sampled)):
        raise FloatingPointError("a held-out log-probability is not finite")
    return {"heldout_loss_marginal": -marginal / tokens, "heldout_loss_as_sampled": -sampled / tokens}
