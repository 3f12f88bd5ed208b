"""Pretraining with human feedback: each loss against a hand computation on small tensors, and the
data transforms (segments, filtering, control tokens, packing) against what they must keep."""

from __future__ import annotations

import math

import pytest
import torch

from bayesalign.objectives.pretraining import AWR, IGNORE, mle, rwr, unlikelihood
from bayesalign.pretraining.data import (
    BAD,
    GOOD,
    TokenStream,
    add_control_tokens,
    control_prefixes,
    encode_segments,
    kept_documents,
    pack,
    pack_documents,
    segments,
)
from bayesalign.pretraining.heldout import heldout_losses, marginal_log_prob, truncate
from bayesalign.toy import toy_model

# one block of three positions over a vocabulary of 2; the last label is padding
LOGITS = torch.tensor([[[0.0, math.log(3.0)], [math.log(4.0), 0.0], [5.0, -5.0]]])  # p(1) = 3/4, p(0) = 4/5
LABELS = torch.tensor([[1, 0, IGNORE]])
SCORES = torch.tensor([[0.0, 2.0, 7.0]])  # the first token aligned (s ≤ 0), the second not
P1, P2 = 0.75, 0.8


def test_mle_is_the_mean_cross_entropy_of_the_real_tokens():
    assert mle(LOGITS, LABELS).item() == pytest.approx(-(math.log(P1) + math.log(P2)) / 2, rel=1e-6)


def test_unlikelihood_with_threshold_zero_is_a_real_threshold():
    alpha = 0.5
    expected = (-math.log(P1) - alpha * math.log(1 - P2)) / 2  # s = 0 ≤ 0 learned; s = 2 > 0 pushed down
    assert unlikelihood(LOGITS, LABELS, SCORES, threshold=0.0, alpha=alpha).item() == pytest.approx(
        expected, rel=1e-5
    )
    # a threshold above every score makes every token aligned: plain MLE
    assert unlikelihood(LOGITS, LABELS, SCORES, threshold=10.0, alpha=alpha).item() == pytest.approx(
        mle(LOGITS, LABELS).item(), rel=1e-6
    )
    certain = torch.tensor([[[0.0, 40.0]]])  # p(y) = 1 to float precision, and misaligned
    loss = unlikelihood(certain, torch.tensor([[1]]), torch.tensor([[1.0]]), threshold=0.0, alpha=1.0)
    assert torch.isfinite(loss) and loss.item() > 10


def test_rwr_weights_the_cross_entropy_by_exp_of_minus_the_score_over_beta():
    beta = 2.0
    expected = (-math.log(P1) * math.exp(0.0) - math.log(P2) * math.exp(-2.0 / beta)) / 2
    assert rwr(LOGITS, LABELS, SCORES, beta=beta).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="beta must be > 0"):
        rwr(LOGITS, LABELS, SCORES, beta=0.0)


def test_awr_by_hand_and_its_value_loss_leaves_the_trunk_alone():
    awr = AWR(1, beta=1.0, alpha=0.25, max_weight=2.0)
    with torch.no_grad():
        awr.value_head.weight.fill_(1.0)
        awr.value_head.bias.zero_()
    hidden = torch.tensor([[[-1.0], [0.5], [9.0]]], requires_grad=True)  # V = h
    # R = −s = (0, −2); A = R − V = (1, −2.5); weights clip(e^A, 0, 2) = (2, e^−2.5)
    w1, w2 = 2.0, math.exp(-2.5)
    policy = (-math.log(P1) * w1 - math.log(P2) * w2) / 2
    value = ((-1.0 - 0.0) ** 2 + (0.5 + 2.0) ** 2) / 2
    loss = awr(LOGITS, LABELS, SCORES, hidden)
    assert loss.item() == pytest.approx(0.25 * policy + 0.75 * value, rel=1e-6)
    loss.backward()
    assert hidden.grad is None or torch.count_nonzero(hidden.grad) == 0  # detached by default
    assert awr.value_head.weight.grad is not None
    trunk = AWR(1, value_trains_trunk=True)
    trunk(LOGITS, LABELS, SCORES, hidden).backward()
    assert torch.count_nonzero(hidden.grad) > 0


def test_a_block_without_tokens_is_refused():
    with pytest.raises(ValueError, match="no token to train on"):
        mle(LOGITS, torch.full_like(LABELS, IGNORE))


# -- data --------------------------------------------------------------------------------------------
def test_segments_rebuild_the_document():
    code = "import os\n\ndef f(x):\n    return x\n"
    assert segments(code, "lines") == ["import os\n", "\n", "def f(x):\n", "    return x\n"]
    text = "Call me at 555-0100. Or not!  Fine? yes"
    parts = segments(text, "sentences")
    assert parts == ["Call me at 555-0100. ", "Or not!  ", "Fine? ", "yes"]
    assert "".join(parts) == text
    assert segments(text, "documents") == [text] and segments("", "documents") == []
    with pytest.raises(ValueError, match="unknown segment unit"):
        segments(text, "words")


def test_filtering_keeps_exactly_the_documents_at_or_below_the_threshold():
    docs = [[0.0, 0.0], [0.0, 1.0], [0.2, 0.2], [], [0.1]]
    assert kept_documents(docs, threshold=0.2) == [0, 2, 4]  # means 0, 0.5, 0.2, —, 0.1
    assert kept_documents(docs, threshold=0.0) == [0]


def test_control_tokens_sit_on_the_right_side_of_the_threshold_with_the_drop_fraction():
    scores = [0.0, 0.5, 1.0] * 4000
    prefixes = control_prefixes(scores, threshold=0.5, drop=0.1, generator=torch.Generator().manual_seed(0))
    kept = [(s, p) for s, p in zip(scores, prefixes, strict=True) if p]
    assert all((p == GOOD) == (s <= 0.5) for s, p in kept)
    assert {p for _, p in kept} == {GOOD, BAD}
    dropped = 1 - len(kept) / len(scores)
    assert abs(dropped - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(scores))
    assert all(control_prefixes(scores, 0.5, 0.0, torch.Generator()))  # drop 0: every segment tagged


def test_token_scores_line_up_with_tokens_after_packing():
    model = toy_model(["a", "b", "c"])
    texts, scores = ["a b ", "c ", "a a b "], [0.0, 3.0, 1.5]
    stream = encode_segments(texts, scores, model.tokenizer)
    assert stream.ids == [1, 2, 3, 1, 1, 2] and stream.scores == [0.0, 0.0, 3.0, 1.5, 1.5, 1.5]
    ids, block_scores = pack(stream, block_size=4)
    assert ids.tolist() == [[1, 2, 3, 1]] and block_scores.tolist() == [[0.0, 0.0, 3.0, 1.5]]
    with pytest.raises(ValueError, match="do not fill one block"):
        pack(TokenStream([1, 2], [0.0, 0.0]), block_size=4)


def test_control_tokens_are_new_tokens_initialised_at_the_mean_embedding():
    model = toy_model(["a", "b", "c"])
    before = model.module.get_input_embeddings().weight.detach().clone()
    good, bad = add_control_tokens(model.module, model.tokenizer)
    weight = model.module.get_input_embeddings().weight
    assert (good, bad) == (4, 5) and weight.shape[0] == 6
    torch.testing.assert_close(weight[4], before.mean(0))
    torch.testing.assert_close(weight[5], before.mean(0))
    stream = encode_segments(["a ", "b "], [0.0, 2.0], model.tokenizer, prefixes=[GOOD, BAD])
    assert stream.ids == [good, 1, bad, 2] and stream.scores == [0.0, 0.0, 2.0, 2.0]


# -- the fair held-out loss --------------------------------------------------------------------------
def _tiny_conditional_model():
    """A random toy GPT-2 with control tokens whose rows are random and distinct, so that
    <|good|>, <|bad|> and "no token" each carry real, different probability."""
    model = toy_model(["a", "b", "c"], n_positions=16)
    good, bad = add_control_tokens(model.module, model.tokenizer)
    with torch.no_grad():
        weight = model.module.get_input_embeddings().weight
        noise = 0.1 * torch.randn(2, weight.shape[1], generator=torch.Generator().manual_seed(3))
        weight[[good, bad]] = weight[[1, 2]] + noise  # near the rows of "a" and "b": as likely
    return model.module.eval(), model.tokenizer.eos_token_id, (good, bad)


def _sequence_log_prob(module, ids: list[int], start: int) -> float:
    """log p(ids[start:] | ids[:start]) token by token, by hand."""
    with torch.no_grad():
        log_p = torch.log_softmax(module(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return sum(log_p[t - 1, ids[t]].item() for t in range(start, len(ids)))


def test_the_marginal_over_control_tokens_is_unbiased_for_the_enumerated_sum():
    """Two segments, three choices each: p(x) = Σ over the 9 taggings of p(c1 x1 c2 x2). The
    estimator draws c1 ∝ p(c1)·p(x1 | c1) and returns Z1·Z2(c1); each value it returns must be
    one of the three enumerated ones, and their mean over draws must be p(x)."""
    module, eos, (good, bad) = _tiny_conditional_model()
    x1, x2 = [1, 2], [3, 1, 1]
    options = [[good], [bad], []]
    joint = {
        (i, j): _sequence_log_prob(module, [eos, *c1, *x1, *c2, *x2], 1)
        for i, c1 in enumerate(options)
        for j, c2 in enumerate(options)
    }
    p_x = sum(math.exp(v) for v in joint.values())
    # by hand: Z1 = Σ_c p(c x1); given c1, Z2 = Σ_c p(c x2 | c1 x1); q(c1) = p(c1 x1) / Z1
    first = [math.exp(_sequence_log_prob(module, [eos, *c, *x1], 1)) for c in options]
    z1 = sum(first)
    values = [z1 * sum(math.exp(joint[i, j]) for j in range(3)) / first[i] for i in range(3)]
    q = [f / z1 for f in first]
    assert sum(qi * v for qi, v in zip(q, values, strict=True)) == pytest.approx(p_x, rel=1e-9)
    assert min(q) > 0.02 and max(values) / min(values) > 1.2  # every branch matters here

    draws = [
        math.exp(marginal_log_prob(module, [eos], [x1, x2], (good, bad), torch.Generator().manual_seed(s)))
        for s in range(300)
    ]
    for d in draws:
        assert min(abs(d - v) / v for v in values) < 1e-5
    mean = sum(draws) / len(draws)
    se = math.sqrt(sum(qi * (v - p_x) ** 2 for qi, v in zip(q, values, strict=True)) / len(draws))
    assert abs(mean - p_x) < 4 * se + 1e-12
    # and it is not the untagged text's probability (what heldout_loss scores)
    assert math.log(p_x) - _sequence_log_prob(module, [eos, *x1, *x2], 1) > 0.5


def test_heldout_losses_per_text_token_and_the_as_sampled_prompt():
    module, eos, controls = _tiny_conditional_model()
    documents = [[[1, 2], [3]], [[2, 2, 1]]]
    losses = heldout_losses(module, documents, eos=eos, controls=controls, conditional=True)
    # as sampled: after <|endoftext|><|good|>, control tokens banned (renormalised away)
    with torch.no_grad():
        by_hand = 0.0
        for document in documents:
            ids = [eos, controls[0]] + [t for s in document for t in s]
            logits = module(input_ids=torch.tensor([ids])).logits[0].double()
            logits[:, list(controls)] = float("-inf")
            log_p = torch.log_softmax(logits, -1)
            by_hand += sum(log_p[t - 1, ids[t]].item() for t in range(2, len(ids)))
    assert losses["heldout_loss_as_sampled"] == pytest.approx(-by_hand / 6, rel=1e-6)
    plain = heldout_losses(module, documents, eos=eos, controls=controls, conditional=False)
    assert plain["heldout_loss_as_sampled"] != pytest.approx(losses["heldout_loss_as_sampled"])
    assert truncate([[1, 2, 3], [], [4, 5], [6]], 4) == [[1, 2, 3], [4]]


def test_document_packing_starts_every_document_a_block_after_eos_and_pads_the_rest():
    docs = [TokenStream([1, 2, 3], [0.0, 0.0, 1.0]), TokenStream([4, 5, 6, 7, 8], [2.0] * 5)]
    ids, scores = pack_documents(docs, block_size=4, eos=9)
    assert ids.tolist() == [[9, 1, 2, 3], [9, 4, 5, 6], [7, 8, 9, 9]]
    assert scores[0].tolist() == [0.0, 0.0, 0.0, 1.0] and scores[1].tolist() == [0.0, 2.0, 2.0, 2.0]
    assert scores[2, :2].tolist() == [2.0, 2.0] and torch.isnan(scores[2, 2:]).all()
