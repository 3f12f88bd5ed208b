"""What every objective sees: a batch of samples from the proposal q with their log-weights, and
the policy's differentiable log-probabilities on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from bayesalign.models import LanguageModel, Samples
from bayesalign.targets import Evidence


@dataclass
class Batch:
    """Samples x ~ q with log q(x) (sampling distribution), log P(x), the evidence, and the
    current estimate of log Z. All detached, float64 per sample.

    ``token_log_a`` (per-token log a, [B, T]) and ``reward`` (the target's r(x),
    `Target.reward`) are there when the loop has them; ``log_target`` is None when the
    objective said it does not read the prior (``reads_prior = False``); ``extras`` holds
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
            raise ValueError(f"{objective} needs per-token log a(x), and the batch has none")
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
    """π on ``samples`` as objectives see it (differentiable unless called under no_grad)."""
    token_log_probs, states = policy.forward_generated(samples, hidden=hidden)
    return PolicyOutput(token_log_probs, samples.mask.to(token_log_probs.device), states)


class Objective(Protocol):
    """A loss per sample; the loop sums it over the minibatch, divides by its size and
    back-propagates.

    Optional members, which the loop looks for by capability, never by the objective's name:

    - ``check_target(target)``: raise, before any sampling, if the objective cannot work with
      this target (e.g. reverse KL towards a target with P(x) = 0 somewhere).
    - ``requires_on_policy = True``: the objective's math assumes q is the policy that drew the
      samples (PPO's ratio π/π_old); the loop refuses a fixed or adaptive proposal.
    - ``needs_hidden = True``: `PolicyOutput.hidden` is filled (costs memory).
    - ``reads_prior = False``: the objective reads neither log a nor log P (plain REINFORCE
      reads the reward only), so training draws skip the prior's forward pass and leave
      ``Batch.log_target``/``token_log_a`` None; they then do not add to the running Z.
    - ``attach(policy) -> list[Parameter]``: called once before the optimizer is built; returns
      the objective's own trainable parameters (a value head), optimised with the policy's.
    - ``prepare(batch, old) -> Batch``: called once per step before the updates, with ``old``,
      the policy's detached `PolicyOutput` on the batch at the start of the step; returns the
      batch with per-sample ``extras`` (advantages, returns). Step-level bookkeeping such as an
      adaptive KL coefficient happens here, once per step.
    - ``step_metrics() -> dict[str, float]``: numbers of the last step for the log (β, KL).
    - ``after_update()``: called after every optimizer update, for running statistics (a
      moving-average baseline) that must advance once per update, not once per micro-batch.
    - ``state_dict()`` / ``load_state_dict(state)``: state (a dict of tensors) that a resumed
      run needs to continue exactly; checkpoints save and restore it. Each instance owns its
      state: objectives are built per run, never shared.
    """

    name: str

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        """``out``: the policy on the batch's samples, differentiable; returns shape [B]."""
        ...
