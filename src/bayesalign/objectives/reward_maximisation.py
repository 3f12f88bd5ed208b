"""Reward maximisation: REINFORCE, KL-penalised REINFORCE and PPO, in the same loop as DPG.

KL-regularised RL is variational inference (Korbak et al. 2022, thesis ch. 2): for any π,

    E_π[r] − β·KL(π‖a) = −β·KL(π‖p*) + β·log Z,    p* = a·exp(r/β)/Z,

so maximising the left side is minimising KL(π‖p*), and a target a·exp(r/β) is the same object
whether it is approached by distribution matching or by KL-RL with coefficient β. Plain
REINFORCE (β = 0) has no such target: it moves all mass to the best sequences and collapses.

Where the KL penalty goes, and which estimator it uses, changes the gradient (x ~ π, k(x) the
per-sequence penalty, ∇ the score-function gradient):

- ``penalty="reward"`` with k1 = log π − log a: the reward r − β·k1 is detached and multiplies
  ∇log π. E_π[(r − β·k1)·∇log π] is exactly ∇(E_π[r] − β·KL(π‖a)) (the extra term
  −β·E_π[∇log π] is zero). This is Ziegler et al.'s choice and the one that targets p*.
- ``penalty="reward"`` with k3 = a/π − 1 − log(a/π) (per token, summed): an unbiased, never
  negative *estimate* of KL(π‖a), but as a reward it is not: its expectation is KL, its
  score-function gradient is not ∇KL. The fixed point is not p*.
- ``penalty="loss"`` with k1: β·(log π − log a) is differentiated directly; its gradient is
  β·∇log π, whose expectation under π is zero. The penalty then does nothing on average:
  the run behaves like plain REINFORCE, with more noise.
- ``penalty="loss"`` with k3 (per token, as in GRPO): the gradient of Σ_t k3_t is
  Σ_t (1 − a_t/π_t)·∇log π_t, whose expectation is ∇ of the per-token *forward* KL(a_t‖π_t)
  on π's prefixes: a mass-covering regulariser, not KL(π‖a). It keeps π near a, but the
  optimum is not p*.

tests/test_reward_maximisation.py checks each statement against exact expected gradients on an
enumerable space.
"""

from __future__ import annotations

from typing import Literal

import torch

from bayesalign.models import LanguageModel
from bayesalign.objectives.base import Batch, Objective, PolicyOutput
from bayesalign.targets import Target

KLEstimator = Literal["k1", "k3"]
Baseline = Literal["none", "mean", "loo"]
Placement = Literal["reward", "loss"]


def token_kl(
    token_log_pi: torch.Tensor, token_log_a: torch.Tensor, mask: torch.Tensor, estimator: KLEstimator
) -> torch.Tensor:
    """Per-token KL(π‖a) estimates [B, T] on samples from π, zero at padding.

    k1 = log π − log a (unbiased, can be negative per sample); k3 = a/π − 1 − log(a/π)
    (unbiased for each token's KL given the prefix, never negative; Schulman's "k3").
    """
    log_ratio = token_log_a.to(token_log_pi) - token_log_pi  # log a/π
    if estimator == "k1":
        k = -log_ratio
    elif estimator == "k3":
        k = torch.expm1(log_ratio) - log_ratio
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid: k1, k3")
    return k.masked_fill(~mask.to(k.device), 0.0)


def with_baseline(returns: torch.Tensor, kind: Baseline) -> torch.Tensor:
    """Advantages R − b: no baseline, the batch mean, or leave-one-out (the mean of the others,
    which keeps each sample's baseline independent of its own return: unbiased)."""
    if kind == "none":
        return returns
    if kind == "mean":
        return returns - returns.mean()
    if kind == "loo":
        n = len(returns)
        if n < 2:
            raise ValueError("a leave-one-out baseline needs at least 2 samples per batch")
        return (returns - returns.mean()) * n / (n - 1)
    raise ValueError(f"unknown baseline {kind!r}; valid: none, mean, loo")


def _importance_ratio(batch: Batch, log_pi: torch.Tensor) -> torch.Tensor:
    """π/q, detached: 1 on the first pass over on-policy samples, corrects later epochs."""
    return torch.exp(log_pi.detach().double().cpu() - batch.log_q)


class Reinforce(Objective):
    """REINFORCE on the target's reward r (b(x) for a constraint target): loss = −(π/q)·(r − b)·log π.

    Nothing keeps π near a: on a constraint target π collapses onto a few satisfying sequences.
    """

    name = "reinforce"
    prior_pass = "none"  # the reward alone: training draws skip the prior's forward pass

    def __init__(self, baseline: Baseline = "loo") -> None:
        self.baseline = baseline
        self._metrics: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Reinforce(baseline={self.baseline!r})"

    def check_target(self, target: Target) -> None:
        target.check_defines_reward(self.name)

    def prepare(self, batch: Batch, old: PolicyOutput) -> Batch:
        reward = batch.require_reward(self.name)
        self._metrics = {"reward": reward.mean().item()}
        return batch.with_extras(advantage=with_baseline(reward, self.baseline))

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        log_pi = out.log_prob
        weight = _importance_ratio(batch, log_pi) * batch.extras["advantage"]
        return -weight.to(log_pi) * log_pi

    def step_metrics(self) -> dict[str, float]:
        return self._metrics


class KLReinforce(Objective):
    """KL-penalised REINFORCE on r − β·KL(π‖a): its optimum is p* = a·exp(r/β)/Z (with k1 in
    the reward). ``estimator`` and ``penalty`` are explained in the module docstring."""

    name = "kl-reinforce"

    def __init__(
        self,
        beta: float,
        estimator: KLEstimator = "k1",
        penalty: Placement = "reward",
        baseline: Baseline = "loo",
    ) -> None:
        if not beta > 0:
            raise ValueError(f"kl-reinforce: beta must be > 0, got {beta}")
        self.beta, self.estimator, self.penalty, self.baseline = beta, estimator, penalty, baseline
        self._metrics: dict[str, float] = {}

    def __repr__(self) -> str:
        return (
            f"KLReinforce(beta={self.beta}, estimator={self.estimator!r}, penalty={self.penalty!r}, "
            f"baseline={self.baseline!r})"
        )

    def check_target(self, target: Target) -> None:
        target.check_defines_reward(self.name)

    def prepare(self, batch: Batch, old: PolicyOutput) -> Batch:
        reward = batch.require_reward(self.name)
        token_log_a = batch.require_token_log_a(self.name)
        kl = token_kl(old.token_log_probs, token_log_a, old.mask, self.estimator).sum(-1).double().cpu()
        returns = reward - self.beta * kl if self.penalty == "reward" else reward
        self._metrics = {
            "reward": reward.mean().item(),
            f"kl_{self.estimator}_pi_a": kl.mean().item(),
            "kl_coef": self.beta,
        }
        return batch.with_extras(advantage=with_baseline(returns, self.baseline))

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        log_pi = out.log_prob
        weight = _importance_ratio(batch, log_pi) * batch.extras["advantage"]
        loss = -weight.to(log_pi) * log_pi
        if self.penalty == "loss":
            token_log_a = batch.require_token_log_a(self.name).to(out.token_log_probs.device)
            kl = token_kl(out.token_log_probs, token_log_a, out.mask, self.estimator).sum(-1)
            loss = loss + self.beta * kl
        return loss

    def step_metrics(self) -> dict[str, float]:
        return self._metrics


class KLController:
    """The KL coefficient β of PPO: fixed, or adaptive (Ziegler et al. 2019):

        β ← β·(1 + clip(KL/target − 1, −clip, clip)·n/horizon)

    after each batch of n samples whose KL(π‖a) was KL: β grows when π drifts beyond the target
    KL and shrinks when it stays within, by at most a factor 1 ± clip·n/horizon per batch.
    """

    def __init__(
        self, beta: float, target: float | None = None, horizon: int = 10_000, clip: float = 0.2
    ) -> None:
        if not beta > 0:
            raise ValueError(f"the KL coefficient must be > 0, got {beta}")
        if target is not None and not target > 0:
            raise ValueError(f"the target KL must be > 0, got {target}")
        if not horizon > 0:
            raise ValueError(f"the KL horizon must be > 0, got {horizon}")
        self.beta, self.target, self.horizon, self.clip = beta, target, horizon, clip

    def update(self, kl: float, n: int) -> float:
        """Move β after a batch of ``n`` samples with mean KL ``kl``; returns the new β."""
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -self.clip), self.clip)
            self.beta *= 1.0 + error * n / self.horizon
        return self.beta


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each sequence's tokens (zero at padding).

    δ_t = r_t + γ·V_{t+1} − V_t (V = 0 after the last token); A_t = δ_t + γλ·A_{t+1}.
    Returns (advantages, returns = A + V), both [B, T].
    """
    mask = mask.to(rewards.dtype)
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


class PPO(Objective):
    """PPO as in Ziegler et al. 2019: per-token reward −β·k_t plus the score r(x) on the last
    token, a value head on the policy's last hidden states, GAE(γ, λ), clipped ratio and
    clipped value loss, several epochs over each batch (``training.epochs``), and a fixed or
    adaptive β (`KLController`).

    The value head reads detached hidden states unless ``value_trains_trunk``: by default the
    value loss trains the head only and never moves the policy. Samples must come from the
    policy itself (``requires_on_policy``): the ratio π/π_old assumes it.
    """

    name = "ppo"
    requires_on_policy = True
    needs_hidden = True

    def __init__(
        self,
        kl: KLController,
        estimator: KLEstimator = "k1",
        gamma: float = 1.0,
        lam: float = 0.95,
        clip: float = 0.2,
        value_clip: float = 0.2,
        value_coef: float = 0.1,
        whiten: bool = True,
        value_trains_trunk: bool = False,
    ) -> None:
        self.kl, self.estimator = kl, estimator
        self.gamma, self.lam, self.clip, self.value_clip = gamma, lam, clip, value_clip
        self.value_coef, self.whiten, self.value_trains_trunk = value_coef, whiten, value_trains_trunk
        self.value_head: torch.nn.Linear | None = None
        self._metrics: dict[str, float] = {}

    def __repr__(self) -> str:
        return (
            f"PPO(beta={self.kl.beta}, kl_target={self.kl.target}, estimator={self.estimator!r}, "
            f"gamma={self.gamma}, lam={self.lam}, clip={self.clip})"
        )

    def check_target(self, target: Target) -> None:
        target.check_defines_reward(self.name)

    def attach(self, policy: LanguageModel) -> list[torch.nn.Parameter]:
        """Create the value head V(h) = w·h + c on the policy's hidden size, starting at V = 0."""
        width = policy.module.get_input_embeddings().embedding_dim
        self.value_head = torch.nn.Linear(width, 1).to(policy.device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        return list(self.value_head.parameters())

    def values(self, out: PolicyOutput) -> torch.Tensor:
        if self.value_head is None or out.hidden is None:
            raise RuntimeError("PPO: attach(policy) must run first, and the loop must pass hidden states")
        hidden = out.hidden if self.value_trains_trunk else out.hidden.detach()
        return self.value_head(hidden.float()).squeeze(-1).masked_fill(~out.mask, 0.0)

    def prepare(self, batch: Batch, old: PolicyOutput) -> Batch:
        reward = batch.require_reward(self.name)
        token_log_a = batch.require_token_log_a(self.name).to(old.token_log_probs.device)
        mask = old.mask
        with torch.no_grad():
            k = token_kl(old.token_log_probs, token_log_a, mask, self.estimator)
            beta = self.kl.beta
            rewards = -beta * k
            last = mask.sum(-1) - 1
            rows = torch.arange(len(batch), device=rewards.device)
            rewards[rows, last] += reward.to(rewards)
            old_values = self.values(old)
            advantages, returns = gae(rewards, old_values, mask, self.gamma, self.lam)
            if self.whiten:
                real = advantages[mask]
                advantages = ((advantages - real.mean()) / (real.std() + 1e-8)).masked_fill(~mask, 0.0)
        kl = k.sum(-1).mean().item()
        self.kl.update(kl, len(batch))
        self._metrics = {"reward": reward.mean().item(), f"kl_{self.estimator}_pi_a": kl, "kl_coef": beta}
        return batch.with_extras(
            advantage=advantages.cpu(),
            returns=returns.cpu(),
            old_values=old_values.cpu(),
            old_token_log_pi=old.token_log_probs.detach().cpu(),
        )

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        device = out.token_log_probs.device
        advantages, returns, old_values, old_log_pi = (
            batch.extras[k].to(device) for k in ("advantage", "returns", "old_values", "old_token_log_pi")
        )
        ratio = torch.exp(out.token_log_probs - old_log_pi)
        policy_loss = torch.maximum(
            -advantages * ratio, -advantages * ratio.clamp(1 - self.clip, 1 + self.clip)
        )
        values = self.values(out)
        clipped = old_values + (values - old_values).clamp(-self.value_clip, self.value_clip)
        value_loss = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
        per_token = (policy_loss + self.value_coef * value_loss) * out.mask
        return per_token.sum(-1)

    def step_metrics(self) -> dict[str, float]:
        return self._metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.value_head is None:
            raise RuntimeError("PPO: attach(policy) must run before saving its state")
        state = {f"value_head.{k}": v for k, v in self.value_head.state_dict().items()}
        return state | {"kl_coef": torch.tensor(self.kl.beta, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.value_head is None:
            raise RuntimeError("PPO: attach(policy) must run before loading its state")
        head = {k.removeprefix("value_head."): v for k, v in state.items() if k.startswith("value_head.")}
        self.value_head.load_state_dict(head)
        self.kl.beta = float(state["kl_coef"])
