"""Every sample a run has drawn, kept with what it was scored (``training.sample_buffer``).

Each step adds its new draw; the step's updates then train on minibatches drawn uniformly from
all samples so far. A sample keeps its own log q, so an importance weight P/(Z·q) stays correct
after the proposal moves on (only the running Z is the step's); the twist's loss needs no
weight at all. Why: an update's cost grows with its rows while drawing new samples can be cheap
(the twist samples a), so fewer rows per update, drawn from a large buffer, buy the same quality
for less compute (docs/results/disco_comparison.md, "A learned twist").

With ``training.buffer_satisfied_share`` each minibatch is stratified: that share of its rows is
drawn from the satisfied samples (while there are enough), the rest from the others, and every
row carries the weight (stratum's share of the buffer) / (stratum's share of the minibatch), so
that the weighted mean loss is still an unbiased estimate of the mean over all samples; the two
strata are interleaved evenly through the minibatch, so a micro-batch is a stratified sample too
(the twist reads its start from the first one). Why: with a rare constraint a uniform minibatch of 64
holds one or two satisfied rows, often none; on the rarest of disco's workloads uniform
minibatches left π worse than disco on some seeds, stratified ones on none
(docs/results/disco_comparison.md, "Stratified minibatches from the buffer").

The buffer is part of a checkpoint, so that a resumed run draws the very same minibatches.
"""

from __future__ import annotations

import dataclasses

import torch

from bayesalign.objectives.base import Batch
from bayesalign.proposals import Scored
from bayesalign.samples import Samples
from bayesalign.targets import Evidence

_TENSORS = ("prompt_ids", "prompt_mask", "ids", "mask", "token_log_q")


class SampleBuffer:
    """The concatenation of a run's draws; `minibatches` draws the updates' rows from all of it."""

    def __init__(self, satisfied_share: float | None = None) -> None:
        self.draw: Scored | None = None
        self.satisfied_share = satisfied_share

    def __len__(self) -> int:
        return 0 if self.draw is None else len(self.draw)

    def add(self, draw: Scored) -> None:
        """Keep ``draw`` without the sampling pass's graph (it describes weights an update changes)."""
        samples = dataclasses.replace(draw.samples, graph_token_log_probs=None)
        draw = dataclasses.replace(draw, samples=samples)
        self.draw = draw if self.draw is None else Scored.concat([self.draw, draw])

    def minibatches(self, count: int, size: int, generator: torch.Generator) -> tuple[Scored, torch.Tensor]:
        """``count`` minibatches of ``size`` rows one after the other, each drawn without
        replacement from all rows (all of them, shuffled, while there are fewer), with each row's
        weight in the loss: 1 for uniform draws, the stratum's correction when stratified."""
        if self.draw is None:
            raise ValueError("the sample buffer is empty: add a draw first")
        parts = [self._minibatch(size, generator) for _ in range(count)]
        index = torch.cat([i for i, _ in parts])
        return self.draw.select(index), torch.cat([w for _, w in parts])

    def _minibatch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        satisfied = self.draw.evidence.satisfied
        if self.satisfied_share is None or satisfied is None or n <= size:
            index = torch.randperm(n, generator=generator)[:size]
            return index, torch.ones(len(index), dtype=torch.float64)
        strata = [satisfied.nonzero().squeeze(1), (~satisfied).nonzero().squeeze(1)]
        wanted = max(1, round(self.satisfied_share * size))
        takes = [min(wanted, len(strata[0]))]
        takes.append(min(size - takes[0], len(strata[1])))
        takes[0] = size - takes[1]  # too few of the others: the satisfied fill the minibatch
        index, weight, spread = [], [], []
        for stratum, take in zip(strata, takes, strict=True):
            if take == 0:
                continue
            index.append(stratum[torch.randperm(len(stratum), generator=generator)[:take]])
            weight.append(torch.full((take,), (len(stratum) / n) / (take / size), dtype=torch.float64))
            spread.append((torch.arange(take) + 0.5) / take)
        # the strata interleaved evenly, so that every micro-batch holds its share of each
        order = torch.argsort(torch.cat(spread), stable=True)
        return torch.cat(index)[order], torch.cat(weight)[order]

    def state_dict(self) -> dict:
        if self.draw is None:
            return {}
        s, e, d = self.draw.samples, self.draw.evidence, self.draw
        return {
            "samples": {name: getattr(s, name) for name in _TENSORS},
            "texts": list(s.texts),
            "contexts": None if s.contexts is None else list(s.contexts),
            "log_q": d.log_q,
            "token_log_a": d.token_log_a,
            "log_target": d.log_target,
            "scores": dict(e.scores),
            "log_factor": e.log_factor,
            "satisfied": e.satisfied,
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            self.draw = None
            return
        samples = Samples(**state["samples"], texts=state["texts"], contexts=state["contexts"])
        evidence = Evidence(state["scores"], state["log_factor"], state["satisfied"])
        self.draw = Scored(samples, state["log_q"], state["token_log_a"], evidence, state["log_target"])


def weighted_rows(loss: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-sample ``loss`` times each row's weight from `SampleBuffer.minibatches` (1 without it)."""
    weight = batch.extras.get("row_weight")
    return loss if weight is None else loss * weight.to(loss)
