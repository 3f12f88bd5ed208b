"""The learned twist as an objective of the training loop (method ``twist``): π ∝ a·σ(u_θ), the
twist u_θ fitted to Q(x≤t) = E_a[b | x≤t] on samples of the prior (twisted.py has the model and
why σ(u) = Q gives π = p).

At every generated token σ(u_θ(x<t)[x_t]) is fitted by binary cross-entropy to the right-hand side
of Bellman's equation under a: b(x) at the last token, and before it
V(x≤t) = Σ_v a(v | x≤t)·σ(u_θ(x≤t)[v]), the current twist one token later averaged exactly over
the vocabulary (a bootstrap target, no gradient through it). Every sample teaches, accepted or
not, and no importance weight enters: the loop must draw from a (``training.proposal.update:
fixed``), and the objective reads b(x) from the batch's evidence, not log P, so the draws skip the
prior's scoring pass (``prior_pass = "none"``).

The loss needs the twist's logits and the prior's next-token distributions, not log π, so this
objective computes its own view of the policy (`Twist.view_policy`). `TwistFitter` (twist_fit.py)
fits the same loss outside the loop, with a buffer of past samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from bayesalign.models import LanguageModel
from bayesalign.objectives.base import Batch, Objective, PolicyOutput
from bayesalign.samples import Samples
from bayesalign.targets import Constraint, Target
from bayesalign.twisted import TwistedModule


def evidence_in_unit_interval(target: Target) -> None:
    """Refuse targets whose factor b can exceed 1: Q = E_a[b | prefix] is then no probability."""
    others = sorted({type(t).__name__ for t in target.terms if not isinstance(t, Constraint)})
    if others:
        raise ValueError(
            f"a twist needs a target of pointwise constraints only (b ∈ {{0, 1}}); this one also has "
            f"{', '.join(others)} terms, whose factors can exceed 1"
        )


@dataclass
class TwistTerms(PolicyOutput):
    """The twisted policy on a batch as the twist's loss reads it: u_θ(x<t)[x_t] of shape (B, T) (with its
    graph) and its Bellman targets, shape (B, T) (detached); ``token_log_probs`` is log π, detached (for
    messages). All are junk at padding (``mask``)."""

    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None


def twist_terms(module: TwistedModule, samples: Samples, labels: torch.Tensor) -> TwistTerms:
    """u_θ(x<t)[x_t] and its targets on ``samples`` with labels b(x), shape (B,) (see the module's
    docstring), with log π(x_t | x<t) computed on the way from the same normalisers V."""
    n_gen = samples.ids.shape[1]
    device = next(module.head.parameters()).device
    prior, hidden = module.prior_states(*samples.causal_inputs(device, through_last=True), keep=n_gen + 1)
    tokens = samples.ids.to(device)
    u = module.head.at(hidden[:, -n_gen - 1 : -1], tokens).float()
    with torch.no_grad():
        log_a = torch.log_softmax(prior.float(), -1)
        twisted = log_a + torch.nn.functional.logsigmoid(module.head(hidden[:, -n_gen - 1 :]).float())
        log_v = twisted.logsumexp(-1)  # log V(x≤t) = log Σ_v a(v|x≤t)·σ(u(x≤t)[v]), t = 0 … T
        value = log_v[:, 1:].exp().clamp(max=1.0)
        # log π(x_t | x<t) = log a(x_t | x<t) + log σ(u(x<t)[x_t]) − log V(x<t): no second softmax
        log_a_tokens = log_a[:, :-1].gather(-1, tokens[..., None]).squeeze(-1)
        token_log_pi = log_a_tokens + torch.nn.functional.logsigmoid(u.detach()) - log_v[:, :-1]
    mask = samples.mask.to(device)
    last = torch.arange(n_gen, device=device)[None, :] == (mask.sum(1, keepdim=True) - 1)
    targets = torch.where(last, labels.to(device, torch.float32)[:, None], value)
    return TwistTerms(token_log_pi * mask, mask, logits=u, targets=targets)


def twist_loss(terms: TwistTerms) -> torch.Tensor:
    """Per row: the sum of BCE(σ(u_θ(x<t)[x_t]), Bellman target) over its generated tokens, scaled
    so that the mean over rows is the mean over the batch's tokens: every token's Bellman
    equation weighs the same, however long its row."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(terms.logits, terms.targets, reduction="none")
    mask = terms.mask.float()
    return (bce * mask).sum(-1) * len(mask) / mask.sum().clamp(min=1)


def twisted_policy(
    prior: LanguageModel, *, head: str = "vocabulary", lora: dict | None = None, trunk: str = "copy"
) -> LanguageModel:
    """The policy the twist trains: π = a at the start, a's weights shared and frozen, the twist's
    head on ``trunk``: a trainable copy of a's trunk (with LoRA on it given ``lora``,
    peft.LoraConfig arguments), or ``prior``, a's own frozen trunk (the head alone trains)."""
    if prior.is_seq2seq or prior.has_adapters:
        raise ValueError("a twist needs a plain decoder-only prior (no encoder-decoder, no LoRA)")
    module = TwistedModule.around(prior.module, head=head, lora=lora, trunk=trunk)
    return LanguageModel(module, prior.tokenizer, prior.prompt, chat=prior.chat)


def start_at_rate(module: TwistedModule, labels: torch.Tensor, weight: torch.Tensor | None = None) -> None:
    """Set the twist's constant start to the rate of b in ``labels`` (π stays a: a constant twist
    is normalised away), clipped by half a sample from 0 and 1. ``weight``: the rows' weights
    (a stratified buffer's, training/buffer.py), so that the rate is the buffer's, not the
    minibatch's inflated one."""
    n = len(labels)
    if weight is None:
        rate = labels.float().mean().item()
    else:
        rate = ((weight.double() * labels.double()).sum() / weight.double().sum()).item()
    rate = min(max(rate, 0.5 / n), 1 - 0.5 / n)
    torch.nn.init.constant_(module.head.bias, math.log(rate / (1 - rate)))


class Twist(Objective):
    """The loss of `twist_loss` on the loop's batches (q = a), the head's start set on the first."""

    name = "twist"
    requires_prior_proposal: ClassVar[bool] = True
    prior_pass = "none"

    def __init__(self) -> None:
        self.started = False  # the head's constant has been set to the first micro-batch's rate

    def __repr__(self) -> str:
        return "Twist()"

    def check_target(self, target: Target) -> None:
        evidence_in_unit_interval(target)

    def attach(self, policy: LanguageModel) -> list[torch.nn.Parameter]:
        if not isinstance(policy.module, TwistedModule):
            raise TypeError(
                "the twist objective trains a twisted prior: build the policy with "
                "bayesalign.objectives.twist.twisted_policy(prior)"
            )
        return []

    def view_policy(self, policy: LanguageModel, batch: Batch, *, hidden: bool) -> TwistTerms:
        labels = batch.evidence.log_factor.exp()
        if not self.started:
            start_at_rate(policy.module, labels, batch.extras.get("row_weight"))
            self.started = True
        return twist_terms(policy.module, batch.samples, labels)

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        if not isinstance(out, TwistTerms):
            raise TypeError("the twist's loss reads Twist.view_policy's output, not log π")
        return twist_loss(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"started": torch.tensor(self.started)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.started = bool(state["started"])
