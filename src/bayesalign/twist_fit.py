"""Fitting a twisted prior (twisted.py) to a target P(x) = a(x)·b(x) with b ∈ [0, 1] on samples
of a, outside the training loop: `TwistFitter` keeps a buffer of every sample drawn and makes each
update on rows drawn from all of them.

The loss is objectives/twist.py's (binary cross-entropy of σ(u_θ(x<t)[x_t]) against Bellman's
targets under a: b(x) at the last token, the current twist one token later averaged exactly over
the vocabulary before it; why, and what it cannot represent, is written there). The training loop
runs the same loss as ``training.method: twist``, with ``training.sample_buffer`` for this
fitter's buffer; the fitter is the setting measured against disco in
docs/results/disco_comparison.md ("A learned twist"). The Monte-Carlo target b(x) at every token
ended 3–7× further from p on the exact toy, and prefixes from π itself did worse than prefixes
from a.

Each `step` draws ``batch_size`` new samples of a and makes ``updates_per_step`` updates on
minibatches (of ``minibatch_size`` rows, by default ``batch_size``) drawn uniformly from all
samples so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayesalign.objectives.twist import (
    evidence_in_unit_interval,
    start_at_rate,
    twist_loss,
    twist_terms,
    twisted_policy,
)
from bayesalign.samples import Samples, SamplingParams
from bayesalign.targets import Target
from bayesalign.twisted import HEADS, TRUNKS


@dataclass(frozen=True)
class TwistFitSettings:
    # Defaults: the setting first measured against disco (docs/results/disco_comparison.md, "A
    # learned twist"; 3 seeds, a 0.41M GPT-2). The loop's stratified buffer (training.
    # buffer_satisfied_share) did better since ("Stratified minibatches"). A large model wants a
    # lower lr (the demo's SmolLM2 probes used 1e-4, docs/demo-recipe.md).
    lr: float = 2e-3
    batch_size: int = 256  # new samples of a per step
    minibatch_size: int | None = 128  # rows per update (None: batch_size)
    updates_per_step: int = 1
    seed: int = 0
    head: str = "vocabulary"  # or "embedding" (twisted.py: EmbeddingHead)
    trunk: str = "copy"  # or "prior": the head on a's own frozen hidden states (twisted.py)
    lora: dict | None = None  # peft.LoraConfig arguments for the twist's copy of the prior

    def __post_init__(self) -> None:
        for name in ("batch_size", "updates_per_step", "minibatch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.head not in HEADS:
            raise ValueError(f"unknown twist head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown twist trunk {self.trunk!r}; valid: {', '.join(TRUNKS)}")


class TwistFitter:
    """Owns the twisted model π (``model``), the buffer of samples of a, and the optimizer."""

    def __init__(
        self, target: Target, params: SamplingParams, settings: TwistFitSettings = TwistFitSettings()
    ):
        evidence_in_unit_interval(target)
        self.target, self.params, self.settings = target, params, settings
        self.model = twisted_policy(target.base, head=settings.head, lora=settings.lora, trunk=settings.trunk)
        trainable = [p for p in self.model.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=settings.lr)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.samples: Samples | None = None
        self.labels = torch.zeros(0)
        self.steps = 0

    def step(self) -> dict[str, float]:
        """Draw a batch of a, add it to the buffer, make ``updates_per_step`` updates on minibatches
        drawn uniformly from the buffer; returns the batch's rate of b under a and the mean loss."""
        batch = self.target.base.sample(self.settings.batch_size, self.params, generator=self.generator)
        labels = self.add(batch)
        size = self.settings.minibatch_size or self.settings.batch_size
        losses = []
        for _ in range(self.settings.updates_per_step):
            index = torch.randint(len(self.labels), (size,), generator=self.generator)
            losses.append(self.update(index))
        self.steps += 1
        return {"rate_a": labels.mean().item(), "loss": sum(losses) / len(losses)}

    def add(self, samples: Samples) -> torch.Tensor:
        """Score samples *of the prior* and add them to the buffer; returns their labels b(x).
        The first batch sets the twist's constant start to its rate (π = a whatever it is)."""
        labels = self.target.evidence(samples).log_factor.exp().float()
        if self.samples is None:
            start_at_rate(self.model.module, labels)
        self.samples = samples if self.samples is None else Samples.concat([self.samples, samples])
        self.labels = torch.cat([self.labels, labels])
        return labels

    def update(self, index: torch.Tensor) -> float:
        """One optimizer update on the buffer's rows ``index``; returns the loss."""
        loss = self.loss(self.samples.select(index), self.labels[index])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def loss(self, samples: Samples, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of σ(u_θ(x<t)[x_t]) against its Bellman targets
        (objectives/twist.py), averaged over real tokens."""
        return twist_loss(twist_terms(self.model.module, samples, labels)).mean()
