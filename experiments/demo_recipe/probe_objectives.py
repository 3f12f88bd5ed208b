"""The probe's objectives that are not maximum likelihood (probe.py --objective value / cv): losses
per training row of the demo's pool, each explained where it is defined."""

from __future__ import annotations

import math

import torch


def value_loss(token_log_pi, token_log_a, mask, b, log_z, terminal_only):
    """Cross-entropy of V(x≤t) = Z·π(x≤t)/a(x≤t) against b(x), per row (summed over prefixes,
    divided by the widest row).

    Why: for any π, V is a martingale under a (Σ_v a(v|h)·V(h, v) = V(h)), and V(x) = b(x) on
    whole sequences means π = a·b/Z = p. Every prefix of every prior sample, accepted or
    rejected, is a labelled example of P_a(b = 1 | prefix); a proper scoring rule is minimised at
    that probability, so the fit needs no importance weights. V > 1 is not a probability: for
    b = 1 the loss is |log V| (its minimum at V = 1), for b = 0 −log(1 − V) continues linearly
    from V = e^-0.01, so neither label rewards V > 1.
    """
    u = log_z + torch.cumsum((token_log_pi - token_log_a) * mask, dim=-1)
    if terminal_only:
        last = mask.sum(-1).clamp(min=1).long() - 1
        u = u.gather(-1, last[:, None])
        mask = torch.ones_like(u)
    eps = 0.01
    neg_at = -math.log(-math.expm1(-eps))
    slope = math.exp(-eps) / -math.expm1(-eps)
    safe = torch.clamp(u, max=-eps)
    negative = torch.where(u < -eps, -torch.log(-torch.expm1(safe)), neg_at + slope * (u + eps))
    loss = torch.where(b[:, None] > 0, u.abs(), negative)
    return (loss * mask).sum(-1) / mask.shape[-1]


def cv_loss(logits_pi, logits_a, ids, mask, token_log_a, b, log_z, prefix_baseline):
    """Per row: Σ_t c_t·CE(a_t, π_t) − (b/Z − c_t)·log π(x_t|x<t), on prior rows (accepted or not).

    Why: its expected gradient is maximum likelihood's on the p-samples (E_a[(b/Z)∇log π(x_t|x<t)]);
    the c_t terms add c_t·(∇log π(x_t|x<t) − E_{v~a(·|x<t)}∇log π(v|x<t)), which has mean 0 under a
    for any c_t that depends on the prefix only. It is a control variate for the one-hot targets'
    noise, which --positions shows π memorising at late positions. With c_t = V(x<t)/Z the weight
    b/Z − c_t vanishes where the prefix already decides b; π(x<t)/a(x<t) is that when π = p.
    """
    log_pi_full = torch.log_softmax(logits_pi.float(), dim=-1)
    log_a_full = torch.log_softmax(logits_a.float(), dim=-1)
    ce_a = -(log_a_full.exp() * log_pi_full).sum(-1)
    token_lp = log_pi_full.gather(-1, ids[..., None]).squeeze(-1)
    if prefix_baseline:
        step_ratio = ((token_lp.detach().double() - token_log_a.double()) * mask).cumsum(-1)
        prefix = torch.cat([torch.zeros_like(step_ratio[:, :1]), step_ratio[:, :-1]], dim=-1)
        c = torch.exp(torch.clamp(prefix, max=-log_z)).float()
    else:
        c = torch.ones_like(token_lp)
    weight = (b[:, None] * math.exp(-log_z)).float() - c
    return ((c * ce_a - weight * token_lp) * mask).sum(-1)
