"""Every sample a run has drawn, kept with what it was scored (``training.sample_buffer``).

Each step adds its new draw; the step's updates then train on minibatches drawn uniformly from
all samples so far. A sample keeps its own log q, so an importance weight P/(Z·q) stays correct
after the proposal moves on (only the running Z is the step's); the twist's loss needs no
weight at all. Why: an update's cost grows with its rows while drawing new samples can be cheap
(the twist samples a), so fewer rows per update, drawn from a large buffer, buy the same quality
for less compute (docs/results/disco_comparison.md, "A learned twist").

The buffer is part of a checkpoint, so that a resumed run draws the very same minibatches.
"""

from __future__ import annotations

import dataclasses

import torch

from bayesalign.proposals import Scored
from bayesalign.samples import Samples
from bayesalign.targets import Evidence

_TENSORS = ("prompt_ids", "prompt_mask", "ids", "mask", "token_log_q")


class SampleBuffer:
    """The concatenation of a run's draws; `minibatches` draws the updates' rows from all of it."""

    def __init__(self) -> None:
        self.draw: Scored | None = None

    def __len__(self) -> int:
        return 0 if self.draw is None else len(self.draw)

    def add(self, draw: Scored) -> None:
        """Keep ``draw`` without the sampling pass's graph (it describes weights an update changes)."""
        samples = dataclasses.replace(draw.samples, graph_token_log_probs=None)
        draw = dataclasses.replace(draw, samples=samples)
        self.draw = draw if self.draw is None else Scored.concat([self.draw, draw])

    def minibatches(self, count: int, size: int, generator: torch.Generator) -> Scored:
        """``count`` minibatches of ``size`` rows one after the other, each drawn uniformly
        without replacement from all rows (all of them, shuffled, while there are fewer)."""
        if self.draw is None:
            raise ValueError("the sample buffer is empty: add a draw first")
        index = torch.cat([torch.randperm(len(self), generator=generator)[:size] for _ in range(count)])
        return self.draw.select(index)

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
