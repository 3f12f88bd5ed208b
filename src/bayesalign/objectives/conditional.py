"""CDPG: distribution matching towards one target per context (Korbak et al. 2022, thesis ch. 4).

Each context c has its own target p_c(x) = P_c(x)/Z_c with P_c(x) = a(x|c)·b(x, c). The gradient
of E_c KL(p_c‖π(·|c)) is −E_c E_{x∼q(·|c)}[(P_c(x)/(Z_c·q(x|c)))·∇log π(x|c)]: each sample is
weighted by its own context's normaliser. Normalisers of different contexts differ by orders of
magnitude (a constraint that most continuations of one context satisfy, and almost none of
another's), so one global Z (plain DPG on (c, x) pairs) over-weights the easy contexts and
under-trains the hard ones, whose samples then barely move π.

Ẑ_c is the mean of P_c/q over the samples of c seen so far: the step's own samples, plus every
earlier sample of c when the same context recurs (each is an unbiased estimate of Z_c, whatever
proposal drew it). With ``baseline`` the advantage is P_c/(Ẑ_c·q) − π/q, as in GDC++.
"""

from __future__ import annotations

import hashlib
import math

import torch

from bayesalign.contexts import group_by_context
from bayesalign.objectives.base import Batch, Objective, PolicyOutput


def context_key(context: str) -> int:
    """A stable 63-bit key per context string (checkpoints hold tensors, not strings)."""
    return int.from_bytes(hashlib.sha256(context.encode()).digest()[:8], "big") >> 1


class CDPG(Objective):
    """Conditional DPG with per-context normalisers (running per context) and an optional
    GDC++-style baseline."""

    name = "cdpg"
    prior_pass = "support"  # reads log P only: the prior runs where P(x) > 0

    def __init__(self, baseline: bool = True) -> None:
        self.baseline = baseline
        self._log_sum: dict[int, float] = {}  # per context: log Σ P_c/q over its samples so far
        self._count: dict[int, int] = {}
        self._metrics: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"CDPG(baseline={self.baseline})"

    def log_z(self, context: str) -> float:
        """The running log Ẑ_c (nan for a context not seen yet)."""
        key = context_key(context)
        if key not in self._count:
            return float("nan")
        return self._log_sum[key] - math.log(self._count[key])

    def prepare(self, batch: Batch, old: PolicyOutput) -> Batch:
        contexts = batch.samples.contexts
        if contexts is None:
            raise ValueError("cdpg needs samples with contexts: set the config's contexts section")
        log_w = batch.log_target - batch.log_q
        log_z = torch.empty_like(log_w)
        unsupported = 0
        for context, rows in group_by_context(contexts).items():
            key = context_key(context)
            previous = torch.tensor(self._log_sum.get(key, float("-inf")), dtype=torch.float64)
            self._log_sum[key] = torch.logaddexp(previous, torch.logsumexp(log_w[rows], 0)).item()
            self._count[key] = self._count.get(key, 0) + len(rows)
            log_z[rows] = self._log_sum[key] - math.log(self._count[key])
            unsupported += int(self._log_sum[key] == float("-inf"))
        # a context none of whose samples satisfies b has Ẑ_c = 0 so far: its weights are 0
        weights = torch.where(log_w > float("-inf"), torch.exp(log_w - log_z), 0.0)
        finite = log_z[torch.isfinite(log_z)]
        self._metrics = {
            "contexts_without_support": float(unsupported),
            "log_z_c_min": finite.min().item() if len(finite) else float("nan"),
            "log_z_c_max": finite.max().item() if len(finite) else float("nan"),
        }
        return batch.with_extras(weight=weights)

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        log_pi = out.log_prob
        advantage = batch.extras["weight"]
        if self.baseline:
            advantage = advantage - torch.exp(log_pi.detach().double().cpu() - batch.log_q)
        return -advantage.to(log_pi) * log_pi

    def rows_with_loss(self, batch: Batch) -> torch.Tensor | None:
        # without the baseline a row with P(x | c) = 0 has weight 0; with it every row counts
        return None if self.baseline else batch.extras["weight"] != 0

    def step_metrics(self) -> dict[str, float]:
        return self._metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        keys = sorted(self._count)
        return {
            "keys": torch.tensor(keys, dtype=torch.long),
            "log_sum": torch.tensor([self._log_sum[k] for k in keys], dtype=torch.float64),
            "count": torch.tensor([self._count[k] for k in keys], dtype=torch.long),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        keys = state["keys"].tolist()
        self._log_sum = dict(zip(keys, state["log_sum"].tolist(), strict=True))
        self._count = dict(zip(keys, state["count"].tolist(), strict=True))
