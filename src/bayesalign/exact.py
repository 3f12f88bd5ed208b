"""Exact answers on spaces small enough to enumerate: the oracle for every estimator and trainer.

With max_new_tokens = L and a vocabulary of V tokens (EOS included), sampling can produce
  - every sequence of k < L non-EOS tokens followed by EOS, and
  - every sequence of exactly L non-EOS tokens (cut at the length limit),
whose probabilities sum to one. `SequenceSpace` lists all of them once; distributions, Z, KL,
TV, entropy and moments are then sums over that list.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from bayesalign.models import LanguageModel
from bayesalign.samples import Samples
from bayesalign.targets import Evidence, Target

DEFAULT_LIMIT = 200_000


class SpaceTooLargeError(ValueError):
    pass


def space_size(vocab_size: int, max_new_tokens: int) -> int:
    words = vocab_size - 1
    return sum(words**k for k in range(max_new_tokens)) + words**max_new_tokens


class SequenceSpace:
    """Every sequence a model with this tokenizer can generate in ≤ L tokens after ``context``
    (default: the model's prompt). A conditional target is enumerated one context at a time."""

    def __init__(
        self,
        model: LanguageModel,
        max_new_tokens: int,
        *,
        context: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        vocab = model.module.config.vocab_size
        size = space_size(vocab, max_new_tokens)
        if size > limit:
            raise SpaceTooLargeError(
                f"exact evaluation would enumerate {size:,} sequences (vocabulary {vocab}, "
                f"max_new_tokens {max_new_tokens}), more than the limit of {limit:,}; use a toy "
                "model with a smaller vocabulary or shorter sequences, or the IS estimates"
            )
        eos = model.tokenizer.eos_token_id
        words = [t for t in range(vocab) if t != eos]
        rows = [(*body, eos) for k in range(max_new_tokens) for body in itertools.product(words, repeat=k)]
        rows += list(itertools.product(words, repeat=max_new_tokens))
        ids = torch.full((len(rows), max_new_tokens), 0, dtype=torch.long)
        mask = torch.zeros(len(rows), max_new_tokens, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        prompt_ids, prompt_mask = model.encode_prompts([model.prompt if context is None else context])
        self.context = context
        self.samples = Samples(
            prompt_ids=prompt_ids.expand(len(rows), -1),
            prompt_mask=prompt_mask.expand(len(rows), -1),
            ids=ids,
            mask=mask,
            token_log_q=torch.zeros(len(rows), max_new_tokens),
            texts=model.decode(ids, mask),
            contexts=None if context is None else [context] * len(rows),
        )

    def __len__(self) -> int:
        return len(self.samples)

    def log_prob(self, model: LanguageModel, batch_size: int = 4096) -> torch.Tensor:
        """log m(x) for every sequence of the space, float64."""
        return model.log_prob_frozen(self.samples, batch_size=batch_size).double()


@dataclass
class ExactTarget:
    """A target enumerated on a space: log P for every sequence, and its normalised form."""

    space: SequenceSpace
    log_a: torch.Tensor
    evidence: Evidence
    log_target: torch.Tensor
    features: tuple[str, ...] = ()  # scorer names of the target's distributional features

    @classmethod
    def build(cls, target: Target, space: SequenceSpace) -> ExactTarget:
        log_a = space.log_prob(target.base)
        evidence = target.evidence(space.samples)
        features = tuple(f.scorer.name for f in target.features)
        return cls(space, log_a, evidence, target.log_prob(log_a, evidence), features)

    @property
    def log_z(self) -> float:
        return torch.logsumexp(self.log_target, 0).item()

    @property
    def log_p(self) -> torch.Tensor:
        return self.log_target - self.log_z


def kl(log_p: torch.Tensor, log_m: torch.Tensor) -> float:
    """KL(p‖m) = Σ p (log p − log m), with 0·log 0 = 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_m), 0.0).sum().item()


def tv(log_p: torch.Tensor, log_m: torch.Tensor) -> float:
    return 0.5 * (log_p.exp() - log_m.exp()).abs().sum().item()


def entropy(log_m: torch.Tensor) -> float:
    m = log_m.exp()
    return -torch.where(m > 0, m * log_m, 0.0).sum().item()


def expectation(log_m: torch.Tensor, values: torch.Tensor) -> float:
    return (log_m.exp() * values.double()).sum().item()


def exact_metrics(exact: ExactTarget, policy: LanguageModel, proposal: LanguageModel) -> dict[str, float]:
    """The exact counterparts of the trainer's IS metrics, prefixed ``exact_``."""
    log_p = exact.log_p
    log_pi = exact.space.log_prob(policy)
    log_q = log_pi if proposal is policy else exact.space.log_prob(proposal)
    metrics = {
        "exact_z": math.exp(exact.log_z),
        "exact_log_z": exact.log_z,
        "exact_kl_p_pi": kl(log_p, log_pi),
        "exact_kl_p_q": kl(log_p, log_q),
        "exact_tv_p_pi": tv(log_p, log_pi),
        "exact_tv_p_q": tv(log_p, log_q),
        "exact_kl_pi_a": kl(log_pi, exact.log_a),
        "exact_kl_p_a": kl(log_p, exact.log_a),  # = −log Z for P = a·b; a reward tilt adds E_p[r]/β
        "exact_entropy_pi": entropy(log_pi),
    }
    if exact.evidence.satisfied is None:  # no constraints: KL(π‖p) is finite
        metrics["exact_kl_pi_p"] = kl(log_pi, log_p)
    else:
        satisfied = exact.evidence.satisfied.bool()
        metrics["exact_satisfaction_pi"] = share = expectation(log_pi, satisfied)
        # p lives on B = {constraints hold}: KL(p‖π) = −log π(B) + KL(p‖π(·|B)) (Evaluator._kl_split)
        log_share = math.log(share) if share > 0 else -math.inf
        metrics["exact_frontier_kl_p_pi"] = -log_share
        log_pi_b = torch.where(satisfied, log_pi - log_share, -math.inf)
        metrics["exact_kl_p_pi_within"] = kl(log_p, log_pi_b) if share > 0 else math.nan  # π(·|B) undefined
    for name in exact.features:  # E[φ] under π and under p, to compare with the wanted moments
        metrics[f"exact_moment_{name}_pi"] = expectation(log_pi, exact.evidence.scores[name])
        metrics[f"exact_moment_{name}_p"] = expectation(log_p, exact.evidence.scores[name])
    return metrics
