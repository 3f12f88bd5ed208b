"""``model.prompt_format: chat``: the prompt and each context are a user message, wrapped by the
tokenizer's chat template with the assistant's turn opened, everywhere a prompt is encoded
(sampling, scoring, exact enumeration); plain prompts are unchanged. A toy tokenizer is given a
small Jinja template whose words are in its vocabulary."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from bayesalign.cli import main
from bayesalign.config import apply_overrides, parse_config
from bayesalign.config.build import build_models
from bayesalign.exact import SequenceSpace
from bayesalign.toy import toy_model

# "c <message> b": the user's turn opens with c, the assistant's with b
TEMPLATE = (
    "{% for m in messages %}c {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} b{% endif %}"
)
WORDS = ["a", "b", "c"]


def ids(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_chat_prompts_are_wrapped_by_the_template_with_the_assistant_turn_open():
    model = toy_model(WORDS, chat_template=TEMPLATE, prompt="a")
    plain = toy_model(WORDS, chat_template=TEMPLATE, prompt="a")
    model.chat = True
    prompt_ids, mask = model.encode_prompts(["a", "a b a"])
    assert prompt_ids[0][mask[0]].tolist() == ids(model, "c a b")
    assert prompt_ids[1][mask[1]].tolist() == ids(model, "c a b a b")
    assert plain.encode_prompts(["a"])[0][0].tolist() == ids(plain, "a")  # plain: the text as is
    # the unconditional prompt too, and the empty one is an empty user message
    draw = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert draw.prompt_ids[0].tolist() == ids(model, "c a b")
    assert model.encode_prompts([""])[0][0].tolist() == ids(model, "c b")
    # log q of the sampling pass is what scoring the samples again gives: one encoding everywhere
    torch.testing.assert_close(draw.log_q, model.log_prob_frozen(draw), rtol=0, atol=1e-5)
    # and the exact enumeration conditions on the wrapped prompt, not the bare one
    chat_space, plain_space = SequenceSpace(model, 3), SequenceSpace(plain, 3)
    assert (chat_space.log_prob(model) - plain_space.log_prob(plain)).abs().max() > 1e-3


def test_the_config_switches_chat_on_for_prior_and_policy():
    raw = {
        "model": {"name": "toy", "lora": {"r": 2}},
        "prompt": "a",
        "target": {"constraints": [{"type": "word", "words": ["b"]}]},
    }
    config = parse_config(
        apply_overrides(
            copy.deepcopy(raw), ["model.prompt_format=chat", f"model.toy.chat_template={TEMPLATE!r}"]
        )
    )
    policy, prior = build_models(config.model, config.prompt, seed=0)
    assert prior.chat and policy.chat
    assert policy.frozen_copy().chat and policy.trainable_copy().chat  # q ← π keeps the format
    assert prior.encode_prompts(["a"])[0][0].tolist() == ids(prior, "c a b")
    plain_policy, _ = build_models(parse_config(copy.deepcopy(raw)).model, "a", seed=0)
    assert not plain_policy.chat  # plain is the default


def test_a_chat_run_trains_and_its_card_loads_the_model_with_messages(tmp_path, capsys):
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "toy_word.yaml").read_text())
    config["model"]["toy"] = {**config["model"].get("toy", {}), "chat_template": TEMPLATE}
    config["model"]["prompt_format"] = "chat"
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump(config))
    fast = ["--set", "training.steps=2", "--set", "eval.every=2", "--set", "eval.samples=32"]
    fast += ["--set", "training.batch_size=16", "--set", "eval.report=false"]
    assert main(["train", str(path), "--out", str(tmp_path / "run"), *fast]) == 0
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert '[{"role": "user", "content": ' in card and '["generated_text"][-1]["content"]' in card
    capsys.readouterr()
    config["model"]["toy"]["chat_template"] = None
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(tmp_path / "plain"), *fast]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: model.prompt_format is chat, but the tokenizer of 'toy' has no chat template" in err


@pytest.mark.parametrize("chat", [False, True])
def test_a_posterior_pool_is_keyed_by_the_prompt_format(chat):
    from bayesalign.prior_draws import pool_key
    from bayesalign.samples import SamplingParams

    model = toy_model(WORDS, chat_template=TEMPLATE, prompt="a")
    model.chat = chat
    key = pool_key(model, SamplingParams(max_new_tokens=3), None, seed=0)
    assert ("prompt_format" in key) == chat  # plain keys stay as they were: cached pools are reused
