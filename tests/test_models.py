"""LanguageModel: sampling log-probabilities, EOS handling, warping, seeds, scoring, LoRA.

Everything runs on tiny random toy models (bayesalign.toy), so each test takes well under a second.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter

import pytest
import torch

from bayesalign.models import LanguageModel, make_policy
from bayesalign.samples import Samples, SamplingParams
from bayesalign.toy import toy_model

WORDS = ["a", "b", "c"]
EOS_ID = 0  # toy tokenizer: id 0 is EOS (and the start token for an empty prompt)
ATOL = 1e-5  # KV-cached sampling pass vs one full forward pass, float32

# peft warns about fan_in_fan_out for GPT-2's Conv1D and transformers about deprecations inside
# peft; neither concerns these tests.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(seed: int = 0, words: list[str] | None = None) -> LanguageModel:
    return toy_model(words or WORDS, seed=seed)


def hand_samples(lm: LanguageModel, contexts: list[str], generated: list[list[int]]) -> Samples:
    """Samples built by hand: left-padded prompts, right-padded generations (EOS kept if given)."""
    prompt_ids, prompt_mask = lm.encode_prompts(contexts)
    width = max(len(g) for g in generated)
    ids = torch.zeros(len(generated), width, dtype=torch.long)
    mask = torch.zeros(len(generated), width, dtype=torch.bool)
    for row, g in enumerate(generated):
        ids[row, : len(g)] = torch.tensor(g)
        mask[row, : len(g)] = True
    return Samples(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        ids=ids,
        mask=mask,
        token_log_q=torch.zeros(ids.shape),
        texts=lm.decode(ids, mask),
        contexts=contexts,
    )


def unpadded_log_prob(lm: LanguageModel, context: str, generated: list[int]) -> float:
    """Oracle: one unpadded forward pass over prompt + generation, summing generated tokens."""
    prompt = lm.encode_prompts([context])[0][0].tolist()
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits = lm.module(input_ids=ids).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    start = len(prompt) - 1  # the logits at position i predict token i + 1
    return sum(log_probs[start + j, tok].item() for j, tok in enumerate(generated))


def first_token_logits(lm: LanguageModel, context: str = "") -> torch.Tensor:
    """The model's raw next-token logits after ``context`` (before any warping)."""
    prompt_ids, _ = lm.encode_prompts([context])
    with torch.no_grad():
        return lm.module(input_ids=prompt_ids).logits[0, -1].float()


def set_lora_b(lm: LanguageModel, seed: int, scale: float = 1.0) -> int:
    """Overwrite every lora_B weight (zero at init) with random values; returns how many."""
    g = gen(seed)
    count = 0
    with torch.no_grad():
        for name, param in lm.module.named_parameters():
            if "lora_B" in name:
                param.copy_(scale * torch.randn(param.shape, generator=g))
                count += 1
    return count


def assert_well_formed(s: Samples) -> None:
    """Generations are a mask prefix; padding after it is id 0 and log q 0."""
    lengths = s.mask.sum(-1)
    positions = torch.arange(s.ids.shape[1])
    assert torch.equal(s.mask, positions[None, :] < lengths[:, None]), "mask is not a prefix"
    assert (s.ids[~s.mask] == 0).all()
    assert (s.token_log_q[~s.mask] == 0).all()
    assert (s.token_log_q[s.mask] <= 0).all()


# -- 1. log q from the sampling pass equals log_prob_frozen ---------------------------------------
def test_log_q_matches_log_prob_unconditional():
    lm = model(seed=0)
    s = lm.sample(32, SamplingParams(max_new_tokens=6), generator=gen(0))
    assert len(s) == 32 and s.contexts is None
    assert_well_formed(s)
    torch.testing.assert_close(s.log_q, lm.log_prob_frozen(s), atol=ATOL, rtol=0)
    # per token as well, not only the sum
    with torch.no_grad():
        token_lp = lm.token_log_probs(s)
    torch.testing.assert_close(s.token_log_q, token_lp, atol=ATOL, rtol=0)


def test_log_q_matches_log_prob_with_contexts_of_different_lengths():
    lm = model(seed=1)
    contexts = ["a", "a b c", "", "b b", "c", "a a a a", "c b", ""] * 3
    s = lm.sample(len(contexts), SamplingParams(max_new_tokens=5), contexts=contexts, generator=gen(1))
    assert s.contexts == contexts
    # prompts are left-padded: each row's real tokens are right-aligned and as long as its context
    expected_lengths = torch.tensor([max(len(c.split()), 1) for c in contexts])
    assert torch.equal(s.prompt_mask.sum(-1), expected_lengths)
    assert s.prompt_mask[:, -1].all()
    assert_well_formed(s)
    torch.testing.assert_close(s.log_q, lm.log_prob_frozen(s), atol=ATOL, rtol=0)


def test_log_q_matches_log_prob_across_batches():
    lm = model(seed=2)
    # contexts chosen so the three batches have different prompt widths (1, 4 and 2 tokens)
    contexts = ["a", "", "b", "c", "a b c a", "b", "", "c", "a b", "c"]
    s = lm.sample(
        len(contexts),
        SamplingParams(max_new_tokens=7),
        contexts=contexts,
        generator=gen(2),
        batch_size=4,
    )
    assert len(s) == len(contexts) and len(s.texts) == len(contexts)
    assert s.contexts == contexts  # order preserved through Samples.concat
    assert s.prompt_ids.shape[1] == 4  # re-padded to the widest batch
    assert_well_formed(s)
    torch.testing.assert_close(s.log_q, lm.log_prob_frozen(s), atol=ATOL, rtol=0)
    # chunked scoring gives the same numbers as scoring all at once
    torch.testing.assert_close(lm.log_prob_frozen(s, batch_size=3), lm.log_prob_frozen(s), atol=ATOL, rtol=0)


def test_chunks_by_length_cut_padding_and_leave_the_numbers_unchanged():
    lm = model(seed=3)
    contexts = ["a", "", "b c a b", "c", "a b", "b", "", "c a"] * 2
    s = lm.sample(len(contexts), SamplingParams(max_new_tokens=7), contexts=contexts, generator=gen(3))
    assert s.lengths.unique().numel() > 2  # the samples do differ in length
    chunks = list(s.chunks_by_length(3))
    assert sorted(torch.cat([i for i, _ in chunks]).tolist()) == list(range(len(s)))
    for index, chunk in chunks:
        assert chunk.ids.shape[1] == s.lengths[index].max()  # each chunk as wide as its longest
        assert chunk.prompt_ids.shape[1] == max(s.prompt_mask[index].sum(-1).max(), 1)
    assert [int(s.lengths[i].max()) for i, _ in chunks] == sorted(int(s.lengths[i].max()) for i, _ in chunks)
    with torch.no_grad():
        whole = lm.token_log_probs(s)
    torch.testing.assert_close(lm.token_log_probs_frozen(s, batch_size=3), whole, atol=ATOL, rtol=0)
    torch.testing.assert_close(lm.log_prob_frozen(s, batch_size=3), whole.sum(-1), atol=ATOL, rtol=0)


def test_concat_repads_and_preserves_rows():
    lm = model(seed=3)
    short = lm.sample(3, SamplingParams(max_new_tokens=2), contexts=["a"] * 3, generator=gen(0))
    long = lm.sample(2, SamplingParams(max_new_tokens=6), contexts=["a b c"] * 2, generator=gen(1))
    joined = Samples.concat([short, long])
    assert joined.ids.shape[1] == max(short.ids.shape[1], long.ids.shape[1])
    assert joined.prompt_ids.shape[1] == 3
    assert joined.texts == short.texts + long.texts
    assert joined.contexts == ["a"] * 3 + ["a b c"] * 2
    torch.testing.assert_close(joined.log_q, torch.cat([short.log_q, long.log_q]))
    assert_well_formed(joined)
    torch.testing.assert_close(joined.log_q, lm.log_prob_frozen(joined), atol=ATOL, rtol=0)


# -- 2. EOS ---------------------------------------------------------------------------------------
def test_eos_ends_sequences_and_is_counted_once():
    lm = model(seed=0)
    max_new = 4
    s = lm.sample(64, SamplingParams(max_new_tokens=max_new), generator=gen(3))
    assert_well_formed(s)
    ended = torch.zeros(len(s), dtype=torch.bool)
    for row in range(len(s)):
        real = s.ids[row][s.mask[row]].tolist()
        n_eos = real.count(EOS_ID)
        assert n_eos <= 1
        if n_eos == 1:
            ended[row] = True
            assert real[-1] == EOS_ID, "EOS must be the last generated token"
        else:
            # no EOS: the sequence ran to max_new_tokens and its mask is all True
            assert len(real) == max_new
            assert s.mask[row, :max_new].all()
        # texts are the decoded words, without EOS
        assert s.texts[row] == " ".join(WORDS[t - 1] for t in real if t != EOS_ID)
        assert "<eos>" not in s.texts[row]
    # the sample must contain both kinds of sequence for this test to mean anything
    assert ended.any() and (~ended).any()
    # EOS's log-probability is part of log q (it is the last masked position of ended rows)
    last = s.mask.sum(-1) - 1
    eos_lq = s.token_log_q[torch.arange(len(s)), last][ended]
    assert (eos_lq < 0).all()


def test_generation_stops_early_when_all_sequences_end():
    lm = model(seed=0)
    with torch.no_grad():  # a bias towards EOS: P(EOS) > 0.9 at every step
        bias = torch.zeros(lm.module.config.vocab_size)
        bias[EOS_ID] = 8.0
        lm.module.lm_head.bias = torch.nn.Parameter(bias)
    s = lm.sample(64, SamplingParams(max_new_tokens=30), generator=gen(4))
    ended = ((s.ids == EOS_ID) & s.mask).any(-1)
    assert ended.all()
    assert s.ids.shape[1] < 30
    assert s.ids.shape[1] == int(s.mask.sum(-1).max()), "a trailing all-padding column was kept"


def test_max_new_tokens_without_eos_has_full_mask():
    # A model that never emits EOS: a large negative bias on the EOS logit.
    lm = model(seed=0)
    with torch.no_grad():
        bias = torch.zeros(lm.module.config.vocab_size)
        bias[EOS_ID] = -1e4
        lm.module.lm_head.bias = torch.nn.Parameter(bias)
    s = lm.sample(16, SamplingParams(max_new_tokens=5), generator=gen(5))
    assert s.ids.shape == (16, 5)
    assert s.mask.all()
    assert (s.ids != EOS_ID).all()
    torch.testing.assert_close(s.log_q, lm.log_prob_frozen(s), atol=ATOL, rtol=0)


# -- 3. warped sampling distributions -------------------------------------------------------------
def test_temperature_log_q_is_warped_distribution():
    lm = model(seed=0)
    params = SamplingParams(max_new_tokens=4, temperature=0.5)
    assert not params.is_ancestral
    s = lm.sample(64, params, generator=gen(6))
    expected = torch.log_softmax(first_token_logits(lm) / 0.5, dim=-1)[s.ids[:, 0]]
    torch.testing.assert_close(s.token_log_q[:, 0], expected, atol=ATOL, rtol=0)
    raw = torch.log_softmax(first_token_logits(lm), dim=-1)[s.ids[:, 0]]
    assert not torch.allclose(s.token_log_q[:, 0], raw, atol=1e-3)
    # the model's own log-probability is not the proposal's
    assert (lm.log_prob_frozen(s) - s.log_q).abs().max() > 1e-2


def test_top_k_one_is_greedy_with_log_q_zero():
    lm = model(seed=0)
    s = lm.sample(16, SamplingParams(max_new_tokens=5, top_k=1), generator=gen(7))
    assert (s.token_log_q == 0).all()
    # greedy: every sample is the same sequence, starting with the argmax token
    assert all(torch.equal(s.ids[i], s.ids[0]) for i in range(len(s)))
    assert s.ids[0, 0].item() == first_token_logits(lm).argmax().item()
    assert (lm.log_prob_frozen(s) < -1e-3).all()


def test_top_k_two_renormalises_over_kept_tokens():
    lm = model(seed=1)
    s = lm.sample(64, SamplingParams(max_new_tokens=3, top_k=2), generator=gen(8))
    logits = first_token_logits(lm)
    kept = logits.topk(2).indices
    assert torch.isin(s.ids[:, 0], kept).all()
    expected = torch.log_softmax(logits[kept], dim=-1)
    lookup = {int(k): float(v) for k, v in zip(kept, expected, strict=True)}
    want = torch.tensor([lookup[int(t)] for t in s.ids[:, 0]])
    torch.testing.assert_close(s.token_log_q[:, 0], want, atol=ATOL, rtol=0)


def test_top_p_renormalises_over_nucleus():
    lm = model(seed=1)
    probs = torch.softmax(first_token_logits(lm), dim=-1)
    sorted_p, order = probs.sort(descending=True)
    # a top_p half-way between the mass of the top-2 and top-3 tokens keeps exactly 3 tokens
    cum = sorted_p.cumsum(0)
    top_p = float((cum[1] + cum[2]) / 2)
    s = lm.sample(64, SamplingParams(max_new_tokens=3, top_p=top_p), generator=gen(9))
    kept = order[:3]
    assert torch.isin(s.ids[:, 0], kept).all()
    want = (probs[s.ids[:, 0]] / probs[kept].sum()).log()
    torch.testing.assert_close(s.token_log_q[:, 0], want, atol=ATOL, rtol=0)


def test_temperature_and_top_k_compose():
    lm = model(seed=2)
    s = lm.sample(64, SamplingParams(max_new_tokens=3, temperature=2.0, top_k=2), generator=gen(10))
    logits = first_token_logits(lm) / 2.0
    kept = logits.topk(2).indices
    assert torch.isin(s.ids[:, 0], kept).all()
    norm = torch.logsumexp(logits[kept], dim=0)
    torch.testing.assert_close(s.token_log_q[:, 0], logits[s.ids[:, 0]] - norm, atol=ATOL, rtol=0)


# -- 4. empirical frequencies ---------------------------------------------------------------------
def test_empirical_frequencies_match_model_probabilities():
    lm = model(seed=3, words=["x", "y"])
    n = 4000
    s = lm.sample(n, SamplingParams(max_new_tokens=2), generator=gen(11))
    # every sequence of the space (EOS, or two words without EOS since max_new_tokens=2)
    space = [[0], [1, 0], [2, 0], [1, 1], [1, 2], [2, 1], [2, 2]]
    exact = hand_samples(lm, [""] * len(space), space)
    p = lm.log_prob_frozen(exact).double().exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)  # the truncated space is normalised
    assert p.min() > 0.02  # every sequence is frequent enough to be checked
    counts = Counter(tuple(s.ids[i][s.mask[i]].tolist()) for i in range(n))
    assert set(counts) <= {tuple(x) for x in space}
    for seq, prob in zip(space, p.tolist(), strict=True):
        freq = counts[tuple(seq)] / n
        se = math.sqrt(prob * (1 - prob) / n)
        assert abs(freq - prob) < 4 * se, (seq, freq, prob, se)
    # and each sample carries the probability of its sequence
    index = {tuple(x): i for i, x in enumerate(space)}
    expected = torch.stack([p[index[tuple(s.ids[i][s.mask[i]].tolist())]] for i in range(n)])
    torch.testing.assert_close(s.log_q.double().exp(), expected, atol=1e-5, rtol=0)


# -- 5. seeds -------------------------------------------------------------------------------------
def test_same_seed_same_samples_different_seed_different_samples():
    lm = model(seed=0)
    params = SamplingParams(max_new_tokens=6)
    one = lm.sample(20, params, generator=gen(123))
    two = lm.sample(20, params, generator=gen(123))
    other = lm.sample(20, params, generator=gen(124))
    assert torch.equal(one.ids, two.ids) and torch.equal(one.mask, two.mask)
    assert one.texts == two.texts
    torch.testing.assert_close(one.token_log_q, two.token_log_q)
    assert one.texts != other.texts


# -- 6. scoring: gradients and padding ------------------------------------------------------------
def test_log_prob_is_differentiable():
    lm = model(seed=0)
    s = hand_samples(lm, ["a", "", "b c", "c"], [[1, 2, 0], [3], [0], [2, 2, 1, 3]])
    lp = lm.log_prob(s)
    assert lp.shape == (4,) and lp.requires_grad
    assert not lm.log_prob_frozen(s).requires_grad
    lp.sum().backward()
    grads = {n: p.grad for n, p in lm.module.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["transformer.wte.weight"].abs().sum() > 0
    assert grads["transformer.h.0.attn.c_attn.weight"].abs().sum() > 0


def test_log_prob_of_sampled_sequences_is_differentiable():
    lm = model(seed=0)
    s = lm.sample(8, SamplingParams(max_new_tokens=4), generator=gen(12))
    lp = lm.log_prob(s)
    lp.sum().backward()
    assert lm.module.transformer.wte.weight.grad.abs().sum() > 0


def test_log_prob_gradient_matches_finite_difference():
    lm = model(seed=0)
    s = hand_samples(lm, ["a", ""], [[1, 2, 0], [3, 3]])
    param = lm.module.transformer.h[0].mlp.c_fc.bias
    lm.log_prob(s).sum().backward()
    direction = torch.randn(param.shape, generator=gen(0))
    analytic = (param.grad * direction).sum().item()
    eps = 1e-3
    with torch.no_grad():
        param += eps * direction
        up = lm.log_prob_frozen(s).double().sum().item()
        param -= 2 * eps * direction
        down = lm.log_prob_frozen(s).double().sum().item()
        param += eps * direction
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-2, abs=1e-3)


def test_padding_does_not_change_log_prob():
    lm = model(seed=4)
    short_ctx, short_gen = "b", [2, 0]
    long_ctx, long_gen = "a c b a", [1, 3, 3, 2, 1, 0]
    alone = lm.log_prob_frozen(hand_samples(lm, [short_ctx], [short_gen]))
    batch = hand_samples(lm, [long_ctx, short_ctx], [long_gen, short_gen])
    assert batch.prompt_mask[1].sum() < batch.prompt_mask.shape[1]  # the short row is padded
    assert batch.mask[1].sum() < batch.mask.shape[1]
    together = lm.log_prob_frozen(batch)
    torch.testing.assert_close(together[1], alone[0], atol=ATOL, rtol=0)
    # both agree with one unpadded forward pass
    assert together[1].item() == pytest.approx(unpadded_log_prob(lm, short_ctx, short_gen), abs=ATOL)
    assert together[0].item() == pytest.approx(unpadded_log_prob(lm, long_ctx, long_gen), abs=ATOL)


def test_sample_rejects_wrong_number_of_contexts():
    lm = model(seed=0)
    with pytest.raises(ValueError, match="3 contexts for 2 samples"):
        lm.sample(2, contexts=["a", "b", "c"])


# -- 7. LoRA: base(), frozen_copy() ---------------------------------------------------------------
def test_lora_base_is_the_original_model_after_adapters_change():
    lm = model(seed=0)
    s = lm.sample(16, SamplingParams(max_new_tokens=5), contexts=["a", "b c"] * 8, generator=gen(13))
    original = lm.log_prob_frozen(s)
    policy = make_policy(lm, dict(r=4, lora_alpha=8, target_modules=["c_attn"]))
    assert policy.has_adapters
    base = lm  # make_policy turns the prior into the adapters-disabled view of the same module
    assert base.module is policy.module
    assert base.adapters_disabled and not policy.adapters_disabled
    # fresh adapters (lora_B = 0) do not change the model
    torch.testing.assert_close(policy.log_prob_frozen(s), original, atol=ATOL, rtol=0)
    assert set_lora_b(policy, seed=1) > 0
    torch.testing.assert_close(base.log_prob_frozen(s), original, atol=ATOL, rtol=0)
    assert (policy.log_prob_frozen(s) - original).abs().max() > 1e-2
    # sampling from base() with the same seed reproduces the original model's samples
    again = base.sample(16, SamplingParams(max_new_tokens=5), contexts=["a", "b c"] * 8, generator=gen(13))
    assert torch.equal(again.ids, s.ids)
    # and the policy's own samples carry the policy's log-probabilities
    ps = policy.sample(16, SamplingParams(max_new_tokens=5), generator=gen(14))
    torch.testing.assert_close(ps.log_q, policy.log_prob_frozen(ps), atol=ATOL, rtol=0)


def test_lora_only_adapters_are_trainable_and_receive_gradients():
    lm = model(seed=0)
    policy = make_policy(lm, dict(r=4, lora_alpha=8, target_modules=["c_attn"]))
    trainable = {n for n, p in policy.module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    s = hand_samples(policy, ["a", "", "b c"], [[1, 2, 0], [3, 1], [0]])
    policy.log_prob(s).sum().backward()
    lora_b = [p for n, p in policy.module.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


def test_frozen_copy_is_independent_of_later_policy_changes():
    lm = model(seed=0)
    policy = make_policy(lm, dict(r=4, lora_alpha=8, target_modules=["c_attn"]))
    set_lora_b(policy, seed=2, scale=0.5)
    s = policy.sample(16, SamplingParams(max_new_tokens=5), generator=gen(16))
    frozen = policy.frozen_copy()
    assert not any(p.requires_grad for p in frozen.module.parameters())
    before = frozen.log_prob_frozen(s)
    torch.testing.assert_close(before, policy.log_prob_frozen(s), atol=ATOL, rtol=0)
    set_lora_b(policy, seed=3)
    with torch.no_grad():  # and a base weight, which LoRA never trains but may be shared
        policy.module.base_model.model.transformer.wte.weight.mul_(1.5)
    torch.testing.assert_close(frozen.log_prob_frozen(s), before, atol=0, rtol=0)
    assert (policy.log_prob_frozen(s) - before).abs().max() > 1e-2
    assert frozen.module is not policy.module


def test_frozen_copy_of_plain_model():
    lm = model(seed=5)
    s = lm.sample(8, SamplingParams(max_new_tokens=4), generator=gen(17))
    frozen = lm.frozen_copy()
    before = frozen.log_prob_frozen(s)
    with torch.no_grad():
        for p in lm.module.parameters():
            p.add_(0.1)
    torch.testing.assert_close(frozen.log_prob_frozen(s), before, atol=0, rtol=0)
    assert (lm.log_prob_frozen(s) - before).abs().max() > 1e-3
    assert any(p.requires_grad for p in lm.module.parameters())  # the original stays trainable


def test_make_policy_with_lora_keeps_the_prior_object_the_prior():
    lm = model(seed=0)
    s = lm.sample(8, SamplingParams(max_new_tokens=5), generator=gen(18))
    original = lm.log_prob_frozen(s)
    policy = make_policy(lm, dict(r=4, lora_alpha=8, target_modules=["c_attn"]))
    set_lora_b(policy, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(lm.log_prob_frozen(s), original, atol=ATOL, rtol=0)


def test_gpt2_gelu_runs_as_the_fused_kernel_with_the_same_log_probs(tmp_path):
    """GPT-2's gelu_new is swapped for PyTorch's fused tanh-GELU (models._fuse_gelu): the
    module no longer holds the slow one, and log-probs match the plain transformers model."""
    from transformers import AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    model = toy_model(["a", "b", "c"], seed=2, n_layer=2, n_embd=32, init_std=0.3)
    assert not any(isinstance(m, NewGELUActivation) for m in model.module.modules())
    model.save_pretrained(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # transformers' own gelu_new
    assert any(isinstance(m, NewGELUActivation) for m in plain.modules())
    samples = model.sample(64, generator=torch.Generator().manual_seed(0))
    ids = torch.cat([samples.prompt_ids, samples.ids], dim=1)
    with torch.no_grad():
        ours = model.module(ids).logits.log_softmax(-1)
        theirs = plain(ids).logits.log_softmax(-1)
    assert not torch.equal(ours, theirs)  # a different kernel ran
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
