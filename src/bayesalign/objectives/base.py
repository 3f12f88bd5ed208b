"""What every objective sees: a batch of samples from the proposal q with their log-weights, and
the policy's differentiable log-probabilities on them."""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from bayesalign.models import LanguageModel
from bayesalign.proposals import PriorPass
from bayesalign.samples import Samples
from bayesalign.targets import Evidence, Target


@dataclass
class Batch:
    """Samples x ~ q with log q(x) (sampling distribution), log P(x), the evidence, and the
    current estimate of log Z. All detached, float64 per sample.

    ``token_log_a`` (per-token log a, [B, T]) and ``reward`` (the target's r(x),
    `Target.reward`) are there when the loop has them; ``log_target`` is None when the
    objective said it does not read the prior (``prior_pass = "none"``), and ``token_log_a``
    None unless it asked for it (``prior_pass = "all"``); ``extras`` holds
    per-sample tensors an objective computed once per step in its ``prepare`` hook
    (advantages, old values), so that minibatches slice them with the samples.
    """

    samples: Samples
    log_q: torch.Tensor
    log_target: torch.Tensor | None
    evidence: Evidence
    log_z: float
    token_log_a: torch.Tensor | None = None
    reward: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, index: torch.Tensor) -> Batch:
        return Batch(
            samples=self.samples.select(index),
            log_q=self.log_q[index],
            log_target=None if self.log_target is None else self.log_target[index],
            evidence=self.evidence.select(index),
            log_z=self.log_z,
            token_log_a=None if self.token_log_a is None else self.token_log_a[index],
            reward=None if self.reward is None else self.reward[index],
            extras={k: v[index] for k, v in self.extras.items()},
        )

    def with_extras(self, **extras: torch.Tensor) -> Batch:
        for name, value in extras.items():
            if value.shape[0] != len(self):
                raise ValueError(f"extra {name!r} has {value.shape[0]} rows for a batch of {len(self)}")
        return Batch(**{**self.__dict__, "extras": {**self.extras, **extras}})

    @property
    def normalised_weights(self) -> torch.Tensor:
        """p(x)/q(x) = P(x)/(Z·q(x)) with the running Z; exactly 0 where P(x) = 0."""
        if self.log_target is None:
            raise ValueError("this batch has no log P (drawn without the prior's pass): no weights p/q")
        return torch.exp(self.log_target - self.log_q - self.log_z)

    def require_reward(self, objective: str) -> torch.Tensor:
        if self.reward is None:
            raise ValueError(f"{objective} needs the target's reward r(x), and the batch has none")
        return self.reward

    def require_token_log_a(self, objective: str) -> torch.Tensor:
        if self.token_log_a is None:
            raise ValueError(
                f"{objective} needs per-token log a(x), and the batch has none (its class must "
                'set prior_pass = "all")'
            )
        return self.token_log_a


@dataclass
class PolicyOutput:
    """The policy π on a batch's samples: per-token log π [B, T] (zero at padding; differentiable
    inside the loss, detached in ``prepare``), the mask of generated tokens, and the last hidden
    states [B, T, H] when the objective asked for them (``needs_hidden``, for a value head)."""

    token_log_probs: torch.Tensor
    mask: torch.Tensor
    hidden: torch.Tensor | None = None

    @classmethod
    def of_sequences(cls, log_pi: torch.Tensor) -> PolicyOutput:
        """Sequence log-probabilities [B] as one "token" each: enough for objectives that use
        ``log_prob`` only (DPG, GDC++, f-DPG, REINFORCE), e.g. on an enumerated space."""
        return cls(log_pi[:, None], torch.ones(len(log_pi), 1, dtype=torch.bool, device=log_pi.device))

    @property
    def log_prob(self) -> torch.Tensor:
        """log π(x) = Σ_t log π(x_t | x_<t), shape [B]."""
        return self.token_log_probs.sum(-1)


def policy_output(policy: LanguageModel, samples: Samples, *, hidden: bool = False) -> PolicyOutput:
    """π on ``samples`` as objectives see it (differentiable unless called under no_grad). Free
    when the samples carry π's sampling pass with its graph (training/sampling_pass.py)."""
    graph = samples.graph_token_log_probs
    if graph is not None and not hidden:
        graph = graph if torch.is_grad_enabled() else graph.detach()
        return PolicyOutput(graph, samples.mask.to(graph.device))
    token_log_probs, states = policy.forward_generated(samples, hidden=hidden)
    return PolicyOutput(token_log_probs, samples.mask.to(token_log_probs.device), states)


@torch.no_grad()
def frozen_policy_output(
    policy: LanguageModel, samples: Samples, *, hidden: bool, micro: int, free: bool
) -> PolicyOutput:
    """π on a step's samples before any update, detached (what ``prepare`` hooks read), in
    chunks of ``micro`` samples. ``free``: π drew them ancestrally, so their log q is log π
    (used as is unless hidden states are needed)."""
    if free and not hidden:
        return PolicyOutput(samples.token_log_q, samples.mask)
    parts = [policy_output(policy, chunk, hidden=hidden) for chunk in samples.chunks(micro)]
    states = torch.cat([p.hidden for p in parts]) if hidden else None
    return PolicyOutput(
        torch.cat([p.token_log_probs for p in parts]), torch.cat([p.mask for p in parts]), states
    )


HOOKS = (
    "check_target",
    "attach",
    "view_policy",
    "prepare",
    "rows_with_loss",
    "step_metrics",
    "after_update",
    "state_dict",
    "load_state_dict",
)


class Objective(ABC):
    """A loss per sample; the loop sums it over the minibatch, divides by its size and
    back-propagates. Subclasses set ``name`` and implement `per_sample_loss`; everything else
    is an optional capability with a no-op default, listed here so that the loop never looks
    for a method by name and a misspelt hook is an error at class definition (``prepair``
    raises ``TypeError: ... did you mean 'prepare'?``) instead of being silently skipped.
    Each instance owns its state: objectives are built per run, never shared.
    """

    name: ClassVar[str] = ""
    #: the objective's math assumes q is the policy that drew the samples (PPO's ratio π/π_old);
    #: the loop refuses a fixed or adaptive proposal
    requires_on_policy: ClassVar[bool] = False
    #: the objective's math assumes the samples come from the prior a (the twist's Bellman
    #: targets): the loop refuses any proposal but the fixed one, q = a
    requires_prior_proposal: ClassVar[bool] = False
    #: `PolicyOutput.hidden` is filled (costs memory), for a value head
    needs_hidden: ClassVar[bool] = False
    #: how much of the prior's forward pass training draws run (`PriorPass`): ``"all"`` (the
    #: safe default) fills ``Batch.token_log_a``; ``"support"`` gives ``log_target`` only, the
    #: prior run only where P(x) > 0, for objectives that read log P alone (DPG, GDC++);
    #: ``"none"`` leaves both None, for those that read the reward only (plain REINFORCE),
    #: whose draws then do not add to the running Z
    prior_pass: ClassVar[PriorPass] = "all"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        known = set(dir(Objective))
        for attr, value in vars(cls).items():
            if attr.startswith("_") or attr in known or not callable(value):
                continue
            near = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.8)
            if near:
                raise TypeError(f"{cls.__name__}.{attr} is not an Objective hook: did you mean {near[0]!r}?")

    @abstractmethod
    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        """``out``: the policy on the batch's samples, differentiable; returns shape [B].

        Devices: the batch's per-sample statistics (log q, log P, rewards, extras) live on the
        CPU in float64; ``out`` lives on the policy's device (a GPU in a GPU run). Combine them
        on the CPU with a detached ``log_pi.detach().double().cpu()`` and bring the result back
        with ``.to(log_pi)``, as every built-in objective does (benchmarks/gpu_check.sh runs each
        on a GPU; a GDC++ that mixed the two devices failed there).
        """

    def check_target(self, target: Target) -> None:  # noqa: B027 (a hook: no-op by default)
        """Raise, before any sampling, if the objective cannot work with this target (e.g.
        reverse KL towards a target with P(x) = 0 somewhere)."""

    def attach(self, policy: LanguageModel) -> list[torch.nn.Parameter]:
        """Called once before the optimizer is built; returns the objective's own trainable
        parameters (a value head), optimised with the policy's."""
        return []

    def view_policy(self, policy: LanguageModel, batch: Batch, *, hidden: bool) -> PolicyOutput:
        """What `per_sample_loss` reads of the policy on ``batch``, differentiable: by default
        its per-token log π (`policy_output`). An objective whose loss reads something else (the
        twist: its logits and their Bellman targets) computes it here; the loop then cannot route
        the forward through a process wrapper and trains it on one process only."""
        return policy_output(policy, batch.samples, hidden=hidden)

    @property
    def views_policy_itself(self) -> bool:
        """Whether `view_policy` is overridden (see there)."""
        return type(self).view_policy is not Objective.view_policy

    def prepare(self, batch: Batch, old: PolicyOutput) -> Batch:
        """Called once per step before the updates, with ``old``, the policy's detached
        `PolicyOutput` on the batch at the start of the step; returns the batch with per-sample
        ``extras`` (advantages, returns). Step-level bookkeeping such as an adaptive KL
        coefficient happens here, once per step."""
        return batch

    def rows_with_loss(self, batch: Batch) -> torch.Tensor | None:
        """A boolean mask of the rows whose loss can be non-zero, or None for every row. The loop
        runs the policy's forward and backward on these rows only: a row whose loss is 0 times
        log π adds exactly nothing to the gradient, and DPG's weight is 0 wherever P(x) = 0 —
        nine rows in ten at a base rate of 0.1 with q = a. The loss is still divided by the whole
        minibatch's size, so the gradient is the same."""
        return None

    @property
    def prepares_batches(self) -> bool:
        """Whether `prepare` does anything (the loop then computes π's detached output for it)."""
        return type(self).prepare is not Objective.prepare

    def step_metrics(self) -> dict[str, float]:
        """Numbers of the last step for the log (β, KL)."""
        return {}

    def after_update(self) -> None:  # noqa: B027 (a hook: no-op by default)
        """Called after every optimizer update, for running statistics (a moving-average
        baseline) that must advance once per update, not once per micro-batch."""

    @property
    def keeps_running_statistics(self) -> bool:
        """Whether `after_update` does anything: such statistics come from the samples each
        process trains on, so the objective cannot train on several processes."""
        return type(self).after_update is not Objective.after_update

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State (a dict of tensors) that a resumed run needs to continue exactly;
        checkpoints save and restore it."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state, got {sorted(state)}")
