"""What a draw is: the settings it was drawn with (`SamplingParams`) and a batch of sequences
with the per-token log-probabilities of the distribution that drew them (`Samples`). Both sit
below the model (models.py), the proposals, the estimators and the objectives, which all pass
them around."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class SamplingParams:
    """How to draw samples. The defaults are ancestral sampling: q equals the model exactly."""

    max_new_tokens: int = 20
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    banned_tokens: tuple[int, ...] = ()  # never sampled (e.g. control tokens at inference)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def is_ancestral(self) -> bool:
        """True when the sampling distribution is the model's own distribution."""
        return self.temperature == 1.0 and self.top_p >= 1.0 and self.top_k == 0 and not self.banned_tokens

    def warpers(self, device: torch.device | str = "cpu") -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if self.banned_tokens:  # its index tensor must live where the logits are
            warpers.append(SuppressTokensLogitsProcessor(list(self.banned_tokens), device=str(device)))
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k > 0:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers


def pad(t: torch.Tensor, width: int, *, left: bool, value: float | int | bool) -> torch.Tensor:
    """``t`` [B, W] padded with ``value`` to [B, width], on the left or the right."""
    extra = width - t.shape[1]
    if extra == 0:
        return t
    filler = torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([filler, t] if left else [t, filler], dim=1)


@dataclass
class Samples:
    """A batch of generated sequences with the log-probabilities of the distribution that drew them.

    Prompts are left-padded (``prompt_mask`` marks real tokens); generated tokens are right-padded
    (``mask`` marks real tokens, EOS included). ``token_log_q`` holds, per generated token, the
    log-probability under the *sampling* distribution (after temperature/top-k/top-p), zero at
    padding; it is what importance weights divide by.

    ``graph_token_log_probs``: the same values with the sampling pass's autograd graph, on the
    model's device, when the sampler was asked for it (``differentiable``): a training step
    back-propagates through it instead of running π again. Only a training step's own draw
    carries one (it holds the pass's activations until the step is done).
    """

    prompt_ids: torch.Tensor  # [B, P] long
    prompt_mask: torch.Tensor  # [B, P] bool
    ids: torch.Tensor  # [B, T] long
    mask: torch.Tensor  # [B, T] bool
    token_log_q: torch.Tensor  # [B, T] float
    texts: list[str]
    contexts: list[str] | None = None
    graph_token_log_probs: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def log_q(self) -> torch.Tensor:
        """Sequence log-probability under the sampling distribution, shape [B]."""
        return self.token_log_q.sum(-1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def causal_inputs(
        self, device: torch.device | str = "cpu", *, through_last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input ids, attention mask and positions [B, P + T − 1] of a decoder-only forward pass
        whose last T positions predict the generated tokens (positions count real tokens only);
        ``through_last``: [B, P + T], the last generated token too (its last T positions then
        predict what would follow each generated token)."""
        cut = None if through_last else -1
        input_ids = torch.cat([self.prompt_ids, self.ids[:, :cut]], dim=1).to(device)
        attention = torch.cat([self.prompt_mask, self.mask[:, :cut]], dim=1).to(device).long()
        return input_ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)

    def select(self, index: torch.Tensor | Sequence[int]) -> Samples:
        """The samples at ``index``, in that order (for minibatches and filtering)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return Samples(
            prompt_ids=self.prompt_ids[idx],
            prompt_mask=self.prompt_mask[idx],
            ids=self.ids[idx],
            mask=self.mask[idx],
            token_log_q=self.token_log_q[idx],
            texts=[self.texts[i] for i in idx.tolist()],
            contexts=None if self.contexts is None else [self.contexts[i] for i in idx.tolist()],
            graph_token_log_probs=None if (g := self.graph_token_log_probs) is None else g[idx.to(g.device)],
        )

    def chunks(self, size: int) -> Iterator[Samples]:
        for start in range(0, len(self), size):
            yield self.select(range(start, min(start + size, len(self))))

    def chunks_by_length(self, size: int) -> Iterator[tuple[torch.Tensor, Samples]]:
        """Chunks of at most ``size`` samples of similar length, each cut to its own widest
        prompt and generation, with the indices they hold: a chunk of short samples does not
        pay for the longest sample of the batch. Padding columns carry no information (prompts
        are left-padded, positions count only real tokens), so results do not change."""
        order = torch.argsort(self.lengths, stable=True)
        for start in range(0, len(self), size):
            index = order[start : start + size]
            chunk = self.select(index)
            gen_width = max(int(chunk.lengths.max()), 1)
            prompt_width = max(int(chunk.prompt_mask.sum(-1).max()), 1)
            yield (
                index,
                Samples(
                    prompt_ids=chunk.prompt_ids[:, -prompt_width:],
                    prompt_mask=chunk.prompt_mask[:, -prompt_width:],
                    ids=chunk.ids[:, :gen_width],
                    mask=chunk.mask[:, :gen_width],
                    token_log_q=chunk.token_log_q[:, :gen_width],
                    texts=chunk.texts,
                    contexts=chunk.contexts,
                ),
            )

    @staticmethod
    def concat(parts: Sequence[Samples]) -> Samples:
        """Join batches, re-padding prompts (left) and generations (right) to common widths."""
        width_p = max(p.prompt_ids.shape[1] for p in parts)
        width_t = max(p.ids.shape[1] for p in parts)

        contexts = [c for p in parts for c in (p.contexts or [])]
        return Samples(
            prompt_ids=torch.cat([pad(p.prompt_ids, width_p, left=True, value=0) for p in parts]),
            prompt_mask=torch.cat([pad(p.prompt_mask, width_p, left=True, value=False) for p in parts]),
            ids=torch.cat([pad(p.ids, width_t, left=False, value=0) for p in parts]),
            mask=torch.cat([pad(p.mask, width_t, left=False, value=False) for p in parts]),
            token_log_q=torch.cat([pad(p.token_log_q, width_t, left=False, value=0.0) for p in parts]),
            texts=[t for p in parts for t in p.texts],
            contexts=contexts if any(p.contexts is not None for p in parts) else None,
            graph_token_log_probs=torch.cat(
                [pad(p.graph_token_log_probs, width_t, left=False, value=0.0) for p in parts]
            )
            if all(p.graph_token_log_probs is not None for p in parts)
            else None,
        )
