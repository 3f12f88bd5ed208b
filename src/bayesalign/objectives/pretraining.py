"""Pretraining with human feedback (Korbak et al. 2023, thesis ch. 5): losses over a packed block
of tokens, each token carrying the misalignment score s of the segment (sentence, code line) it
came from. Lower s is better; a token is aligned when s ≤ threshold.

Every loss takes logits [B, T, V], labels [B, T] (the next token; ``IGNORE`` where there is none,
e.g. padding) and scores [B, T] (the label token's segment score), and returns a scalar mean
over the real tokens. Choices that earlier implementations made silently are parameters here:
a threshold of 0 is the threshold 0 (segments with s > 0 are misaligned), never "no threshold";
AWR's value loss trains only the value head unless ``value_trains_trunk``.

Filtering and conditional training change the data, not the loss (pretraining/data.py); they
train with `mle`.
"""

from __future__ import annotations

import torch

IGNORE = -100


def _token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) per token [B, T] (0 where ignored) and the mask of real tokens."""
    mask = labels != IGNORE
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return picked.masked_fill(~mask, 0.0), mask


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    if count == 0:
        raise ValueError("the block has no token to train on (every label is ignored)")
    return (values * mask).sum() / count


def mle(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy −log p(y) per token: the scores are not used."""
    log_p, mask = _token_log_probs(logits, labels)
    return _mean(-log_p, mask)


def unlikelihood(
    logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, *, threshold: float, alpha: float
) -> torch.Tensor:
    """−[1(s ≤ t)·log p(y) + α·1(s > t)·log(1 − p(y))] (Welleck et al. 2019): aligned tokens are
    learned, misaligned ones pushed down. log(1 − p) is computed as log1p(−exp(log p)), clamped
    away from p = 1 so a confident misaligned token gives a large finite loss, not inf."""
    log_p, mask = _token_log_probs(logits, labels)
    bad = scores > threshold
    log_not_p = torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-6))
    per_token = torch.where(bad, -alpha * log_not_p, -log_p)
    return _mean(per_token, mask)


def rwr(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Reward-weighted regression (Peters & Schaal 2007): CE·exp(R/β) with reward R = −s."""
    if not beta > 0:
        raise ValueError(f"rwr: beta must be > 0, got {beta}")
    log_p, mask = _token_log_probs(logits, labels)
    return _mean(-log_p * torch.exp(-scores.float() / beta), mask)


class AWR(torch.nn.Module):
    """Advantage-weighted regression (Peng et al. 2019): a value head V(h) on the hidden states
    predicts the reward R = −s; the CE of each token is weighted by clip(exp(A/β), 0, max_weight)
    with A = R − V (detached), and the value loss (V − R)² is added with weight 1 − α.

    The hidden states reach the value head detached unless ``value_trains_trunk``: by default
    the value loss trains the head only and the LM is moved by the weighted CE alone.
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        beta: float = 1.0,
        alpha: float = 0.5,
        max_weight: float = 1000.0,
        value_trains_trunk: bool = False,
    ) -> None:
        super().__init__()
        if not beta > 0 or not 0 <= alpha <= 1:
            raise ValueError(f"awr: need beta > 0 and 0 <= alpha <= 1, got beta={beta}, alpha={alpha}")
        self.value_head = torch.nn.Linear(hidden_size, 1)
        self.beta, self.alpha, self.max_weight = beta, alpha, max_weight
        self.value_trains_trunk = value_trains_trunk

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        log_p, mask = _token_log_probs(logits, labels)
        states = hidden if self.value_trains_trunk else hidden.detach()
        values = self.value_head(states.float()).squeeze(-1)
        reward = -scores.float()
        advantage = (reward - values).detach()
        weights = torch.exp(advantage / self.beta).clamp(0.0, self.max_weight)
        policy = _mean(-log_p * weights, mask)
        value = _mean((values - reward) ** 2, mask)
        return self.alpha * policy + (1 - self.alpha) * value
