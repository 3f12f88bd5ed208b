"""The decoding loop drops rows that have drawn EOS from its pass; what it returns must be what a
pass that keeps every row to the last step returns: the same tokens (the random stream draws one
uniform per batch row at every step), the same log q, and through ``differentiable`` the same
gradient."""

from __future__ import annotations

import pytest
import torch
from transformers import cache_utils

from bayesalign.decoding import decode
from bayesalign.samples import SamplingParams
from bayesalign.toy import toy_model

N, STEPS = 96, 10


@pytest.fixture(scope="module")
def model():
    # five words and EOS: most rows stop well before the last step, at different steps
    return toy_model(
        ["a", "b", "c", "d", "e"], seed=3, n_embd=32, n_layer=2, n_head=2, init_std=0.3
    ).module.eval()


def run(module, monkeypatch, *, compact: bool, differentiable: bool = False):
    """decode(), with the rows that stop kept in the pass to the end unless ``compact``; also
    how many times the pass shrank."""
    shrinks = []
    original = cache_utils.Cache.reorder_cache
    if compact:
        monkeypatch.setattr(
            cache_utils.Cache, "reorder_cache", lambda c, keep: shrinks.append(len(keep)) or original(c, keep)
        )
    else:
        monkeypatch.setattr(cache_utils.Cache, "reorder_cache", None)
    prompt = torch.full((N, 1), module.config.eos_token_id)
    generator = torch.Generator().manual_seed(7)
    module.zero_grad(set_to_none=True)
    ids, mask, log_q = decode(
        module,
        prompt,
        torch.ones(N, 1, dtype=torch.bool),
        SamplingParams(max_new_tokens=STEPS),
        eos=module.config.eos_token_id,
        generator=generator,
        differentiable=differentiable,
    )
    grads = None
    if differentiable:
        log_q.sum().backward()
        grads = [p.grad.clone() for p in module.parameters()]
    monkeypatch.undo()
    return ids, mask, log_q.detach(), grads, shrinks


def test_rows_that_stop_leave_the_pass_and_the_draws_do_not_change(model, monkeypatch):
    ids, mask, log_q, _, shrinks = run(model, monkeypatch, compact=True)
    full_ids, full_mask, full_log_q, _, none = run(model, monkeypatch, compact=False)
    lengths = mask.sum(-1)
    assert shrinks and none == []  # the pass did shrink (several times), the reference never
    assert len(shrinks) >= 2 and shrinks == sorted(shrinks, reverse=True)
    assert lengths.min() < STEPS - 3 and lengths.float().std() > 1  # rows stop at different steps
    assert torch.equal(ids, full_ids) and torch.equal(mask, full_mask)
    torch.testing.assert_close(log_q, full_log_q, rtol=0, atol=1e-5)
    assert (log_q[~mask] == 0).all() and (log_q[mask] < 0).all()


def test_the_sampling_pass_gradient_is_the_same_with_rows_leaving_it(model, monkeypatch):
    *_, grads, shrinks = run(model, monkeypatch, compact=True, differentiable=True)
    *_, full_grads, _ = run(model, monkeypatch, compact=False, differentiable=True)
    assert shrinks
    for g, full in zip(grads, full_grads, strict=True):
        torch.testing.assert_close(g, full, rtol=1e-4, atol=1e-6)
