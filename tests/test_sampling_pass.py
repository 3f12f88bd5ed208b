"""An on-policy step back-propagates through its own sampling pass (training/sampling_pass.py):
the same samples and the same gradient as a step that runs π again on them, without that run;
and the loop keeps the separate forward wherever the two would differ."""

from __future__ import annotations

import pytest
import torch

from bayesalign.decoding import decode
from bayesalign.samples import SamplingParams
from bayesalign.toy import toy_model

WORDS = ["a", "b", "c", "d", "e", "f"]
BASE = {
    "model": {"name": "toy", "toy": {"words": WORDS, "seed": 1}},
    "sampling": {"max_new_tokens": 5},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"method": "gdc++", "steps": 1, "batch_size": 64, "lr": 3e-2, "max_grad_norm": None},
    "eval": {"every": 100, "samples": 32, "exact": False},
}
ON_POLICY = ("training.proposal.update=on_policy",)


def one_step(trainer, monkeypatch) -> tuple[list[str], list[torch.Tensor], int]:
    """One training step: the texts it trained on, the gradients before the optimizer used
    them, and how many separate forward passes of π it ran."""
    seen: dict = {"forwards": 0}
    forward, step, draw = trainer.policy.forward_generated, trainer.optimizer.step, trainer.draw

    def counted(*a, **k):
        seen["forwards"] += 1
        return forward(*a, **k)

    def recorded(*a, **k):
        seen["grads"] = [p.grad.clone() for p in trainer.params]
        return step(*a, **k)

    def drawn(*a, **k):
        scored = draw(*a, **k)
        seen["texts"] = scored.samples.texts
        return scored

    monkeypatch.setattr(trainer.policy, "forward_generated", counted)
    monkeypatch.setattr(trainer.optimizer, "step", recorded)
    monkeypatch.setattr(trainer, "draw", drawn)
    trainer.train_step()
    return seen["texts"], seen["grads"], seen["forwards"]


@pytest.mark.parametrize(
    "method",
    [
        ("training.method=gdc++",),
        ("training.method=reinforce",),
        ("training.method=kl-reinforce", "training.kl_reinforce.beta=0.1"),
        ("training.method=tb", "training.tb.min_log_b=-10"),  # its learned log Z is a parameter too
        ("training.method=gdc++", "sampling.batch_size=16"),  # drawn in 4 generation batches
    ],
    ids=["gdc++", "reinforce", "kl-reinforce", "tb", "gdc++-batched-sampling"],
)
def test_the_sampling_pass_gives_the_gradient_of_a_separate_forward(make_trainer, method, monkeypatch):
    reused = make_trainer(*ON_POLICY, *method)
    separate = make_trainer(*ON_POLICY, *method, "training.reuse_sampling_pass=false")
    assert reused.reuse_sampling_pass and not separate.reuse_sampling_pass
    texts, grads, forwards = one_step(reused, monkeypatch)
    texts_2, grads_2, forwards_2 = one_step(separate, monkeypatch)
    assert texts == texts_2  # autograd on does not change what is drawn
    assert forwards == 0 and forwards_2 == 1
    assert any(g.abs().max() > 1e-3 for g in grads_2)
    for mine, theirs in zip(grads, grads_2, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        ("training.proposal.update=fixed",),  # q = a: π never drew these samples
        ("training.minibatch_size=32",),  # two updates: the second's weights are not the pass's
        ("training.epochs=2",),
        ("training.micro_batch_size=32",),  # the user keeps part of the batch in memory at a time
        ("training.method=dpg",),  # runs π on its rows with P(x) > 0 only
        ("sampling.temperature=0.8",),  # log q is not log π
        ("training.method=ppo", "training.ppo.beta=0.1"),  # its value head reads π's hidden states
        ("training.reuse_sampling_pass=false",),
    ],
)
def test_a_separate_forward_wherever_the_pass_would_differ(make_trainer, overrides, monkeypatch):
    trainer = make_trainer(*ON_POLICY, *overrides)
    assert not trainer.reuse_sampling_pass
    _, grads, forwards = one_step(trainer, monkeypatch)
    assert forwards >= 1 and any(g.abs().max() > 0 for g in grads)


def test_only_ancestral_sampling_can_keep_its_graph():
    model = toy_model(WORDS, seed=1)
    prompt_ids, prompt_mask = model.encode_prompts([model.prompt] * 2)
    with pytest.raises(ValueError, match="ancestral"):
        decode(model.module, prompt_ids, prompt_mask, SamplingParams(3, top_k=2), eos=0, differentiable=True)
    plain = model.sample(8, SamplingParams(3), generator=torch.Generator().manual_seed(0))
    kept = model.sample(8, SamplingParams(3), generator=torch.Generator().manual_seed(0), differentiable=True)
    assert plain.graph_token_log_probs is None and not plain.token_log_q.requires_grad
    assert kept.graph_token_log_probs.requires_grad and not kept.token_log_q.requires_grad
    torch.testing.assert_close(kept.graph_token_log_probs.detach(), kept.token_log_q)
    assert torch.equal(kept.ids, plain.ids)
    picked = kept.select(torch.tensor([3, 1]))
    torch.testing.assert_close(picked.graph_token_log_probs.detach(), kept.token_log_q[[3, 1]])


@pytest.mark.parametrize("tied", [True, False])
def test_the_sampling_pass_gradient_of_the_embedding_matrix_is_dense_and_exact(tied):
    """Each decoding step looks its tokens up in the embedding matrix: the gradient summed over
    the steps equals a forward's over the whole sequences, with the output layer tied to the
    matrix or not."""
    model = toy_model(WORDS, seed=1)
    if not tied:
        model.module.lm_head.weight = torch.nn.Parameter(model.module.lm_head.weight.detach().clone())
    embedding = model.module.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    drawn = model.sample(32, SamplingParams(5), generator=generator, differentiable=True)
    drawn.graph_token_log_probs.sum().backward()
    through_sampling = embedding.grad.clone()
    assert embedding.grad.layout == torch.strided and through_sampling.abs().max() > 1e-3
    embedding.grad = None
    model.token_log_probs(drawn).sum().backward()
    torch.testing.assert_close(through_sampling, embedding.grad, rtol=1e-4, atol=1e-6)
