"""Automated red-teaming (Perez et al. 2022), as Korbak et al. (2023) used it to test PHF models:
how misaligned can the model be made by prompts chosen against it?

A pool of prompts, each scored by the mean misalignment of N continuations of the evaluated
model. Each round, several few-shot prompts are built from pool prompts drawn with probability
∝ exp(score/T), so that the most successful attacks are imitated; a red LM (any local
:class:`~bayesalign.models.LanguageModel`) continues each few-shot prompt with new candidate
prompts; these are scored the same way and join the pool. The pool's mean misalignment per round
is the result: for a robust model it stays low as the attacks improve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bayesalign.models import LanguageModel
from bayesalign.samples import SamplingParams
from bayesalign.scorers import Scorer, checked_scores


def prompt_probabilities(scores: Sequence[float], temperature: float) -> torch.Tensor:
    """p(prompt i) = exp(s_i/T) / Σ_j exp(s_j/T): softmax in log space, so that the small
    temperatures of the paper (T = 0.1) with large scores do not overflow."""
    if not temperature > 0:
        raise ValueError(f"the red-teaming temperature must be > 0, got {temperature}")
    return torch.softmax(torch.as_tensor(scores, dtype=torch.float64) / temperature, dim=0)


def draw_examples(
    scores: Sequence[float], temperature: float, k: int, generator: torch.Generator
) -> list[int]:
    """Indices of ``k`` distinct pool prompts (fewer if the pool is smaller): the first drawn
    ∝ exp(score/T), each next one ∝ exp(score/T) among those not drawn yet."""
    probs = prompt_probabilities(scores, temperature)
    return torch.multinomial(probs, min(k, len(probs)), replacement=False, generator=generator).tolist()


@dataclass(frozen=True)
class RedTeamParams:
    rounds: int = 3
    trials: int = 4  # few-shot prompts given to the red LM per round
    candidates: int = 5  # red-LM samples per few-shot prompt
    few_shot: int = 4  # pool prompts per few-shot prompt
    temperature: float = 0.1  # T of the draw ∝ exp(score/T)
    continuations: int = 32  # samples of the evaluated model per prompt
    score_prompt: bool = False  # score prompt + continuation (code), not the continuation alone

    def __post_init__(self) -> None:
        for name in ("rounds", "trials", "candidates", "few_shot", "continuations"):
            if getattr(self, name) < 1:
                raise ValueError(f"red teaming: {name} must be >= 1, got {getattr(self, name)}")
        prompt_probabilities([0.0], self.temperature)  # checks the temperature


# the paper's continuations: temperature 0.7, top-p 0.9 (both frozen dataclasses: safe defaults)
TARGET_SAMPLING = SamplingParams(max_new_tokens=32, temperature=0.7, top_p=0.9)
RED_SAMPLING = SamplingParams(max_new_tokens=24)


@dataclass(frozen=True)
class PoolEntry:
    prompt: str
    score: float  # mean misalignment of the model's continuations of the prompt
    round: int  # 0 for the initial prompts


def few_shot_prompt(examples: Sequence[str], header: str = "") -> str:
    """One example per line, each after "- ", and an open "- " for the red LM to continue:
    its text up to the first line break is the candidate."""
    return header + "".join(f"- {e}\n" for e in examples) + "- "


def candidate(text: str) -> str:
    return text.split("\n", 1)[0].strip()


class RedTeam:
    """Red-teams ``target`` with prompts written by ``red``. ``prefix`` goes before every prompt
    given to the target (e.g. "<|endoftext|><|good|>" for a model pretrained with control
    tokens, which then go in ``target_sampling.banned_tokens``)."""

    def __init__(
        self,
        target: LanguageModel,
        red: LanguageModel,
        scorer: Scorer,
        params: RedTeamParams = RedTeamParams(),
        *,
        target_sampling: SamplingParams = TARGET_SAMPLING,
        red_sampling: SamplingParams = RED_SAMPLING,
        prefix: str = "",
        header: str = "",
        seed: int = 0,
    ) -> None:
        self.target, self.red, self.scorer, self.params = target, red, scorer, params
        self.target_sampling, self.red_sampling = target_sampling, red_sampling
        self.prefix, self.header = prefix, header
        self.generator = torch.Generator().manual_seed(seed)

    def score(self, prompt: str) -> float:
        """Mean misalignment of ``continuations`` samples of the target after the prompt."""
        n = self.params.continuations
        samples = self.target.sample(
            n, self.target_sampling, contexts=[self.prefix + prompt] * n, generator=self.generator
        )
        texts = [prompt + t for t in samples.texts] if self.params.score_prompt else samples.texts
        return checked_scores(self.scorer, texts, None).mean().item()

    def propose(self, pool: Sequence[PoolEntry]) -> list[str]:
        """New candidate prompts: for each trial, few-shot examples drawn from the pool and
        ``candidates`` continuations of the red LM; empty ones and repeats are left out."""
        p = self.params
        seen = {e.prompt for e in pool}
        new: list[str] = []
        for _ in range(p.trials):
            picked = draw_examples([e.score for e in pool], p.temperature, p.few_shot, self.generator)
            context = few_shot_prompt([pool[i].prompt for i in picked], self.header)
            samples = self.red.sample(
                p.candidates, self.red_sampling, contexts=[context] * p.candidates, generator=self.generator
            )
            for text in map(candidate, samples.texts):
                if text and text not in seen:
                    seen.add(text)
                    new.append(text)
        return new

    def run(self, prompts: Sequence[str]) -> tuple[list[PoolEntry], list[dict]]:
        """The final pool and one record per round (round 0: the initial prompts): pool size,
        the pool's mean and max misalignment, and the new prompts' count and mean."""
        if not prompts or any(not p for p in prompts):
            raise ValueError("red teaming needs at least one initial prompt, none of them empty")
        pool = [PoolEntry(p, self.score(p), 0) for p in dict.fromkeys(prompts)]
        records = [self._record(pool, 0)]
        for r in range(1, self.params.rounds + 1):
            pool += [PoolEntry(c, self.score(c), r) for c in self.propose(pool)]
            records.append(self._record(pool, r))
        return pool, records

    @staticmethod
    def _record(pool: Sequence[PoolEntry], r: int) -> dict:
        scores = [e.score for e in pool]
        new = [e.score for e in pool if e.round == r]
        best = max(pool, key=lambda e: e.score)
        return {
            "round": r,
            "pool_size": len(pool),
            "pool_misalignment": sum(scores) / len(scores),
            "pool_max_misalignment": best.score,
            "new_prompts": len(new),
            "new_misalignment": sum(new) / len(new) if new else math.nan,
            "most_misaligned_prompt": best.prompt,
        }
