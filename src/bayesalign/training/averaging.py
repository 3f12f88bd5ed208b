"""An exponential moving average of the policy's weights (``training.average_weights``).

Why: side by side with disco (docs/results/disco_comparison.md, "Going past disco"), larger
steps and more updates per sample made π worse, and the one change that brought π closer to p at
the same number of samples was to keep the average θ̄ ← d·θ̄ + (1 − d)·θ of the iterates after
every step (d = 0.95) and use it as π: it averages out the noise of the last steps' gradient
estimates. With the option set, evaluations, ``keep_best`` and final/ see the average; training
itself (sampling from π, the proposal's updates) keeps the raw iterate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class WeightAverage:
    """θ̄ of ``params`` (the policy's trainable weights), starting at their current values."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"training.average_weights must be in (0, 1), got {decay}")
        self.params, self.decay = params, decay
        self.mean = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        """One step: θ̄ ← d·θ̄ + (1 − d)·θ."""
        for mean, p in zip(self.mean, self.params, strict=True):
            mean.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The parameters hold θ̄ inside the block and their own values again after it."""
        saved = [p.detach().clone() for p in self.params]
        self.copy_to_params()
        try:
            yield
        finally:
            for p, value in zip(self.params, saved, strict=True):
                p.copy_(value)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for p, mean in zip(self.params, self.mean, strict=True):
            p.copy_(mean)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {str(i): mean.cpu() for i, mean in enumerate(self.mean)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len(state) != len(self.mean):
            raise ValueError(
                f"the checkpoint averages {len(state)} weight tensors, the policy has {len(self.mean)}"
            )
        for i, mean in enumerate(self.mean):
            mean.copy_(state[str(i)])


def weight_average(module: torch.nn.Module, decay: float | None, *, supported: bool) -> WeightAverage | None:
    """``training.average_weights``: θ̄ of ``module``'s trainable weights (π's own, not a value
    head's), or None when unset; refused where π's weights live elsewhere (``supported``)."""
    if decay is None:
        return None
    if not supported:
        raise ValueError(
            "training.average_weights is not supported under FSDP or with sampling.backend: vllm "
            "(both hold π's weights elsewhere than its parameters)"
        )
    return WeightAverage([p for p in module.parameters() if p.requires_grad], decay)
