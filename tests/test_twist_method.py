"""Method ``twist`` in the training loop (objectives/twist.py): built from a config like every
method, checked exactly on an enumerated toy space; its run folder (checkpoints that nest the
twisted model's folders, resume, final/) and what the config and the loop refuse."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_same_trainable_weights, stopped_and_resumed

from bayesalign.config import ConfigError, apply_overrides, parse_config
from bayesalign.models import LanguageModel
from bayesalign.objectives import GDCPlusPlus, Twist
from bayesalign.objectives.twist import twisted_policy
from bayesalign.runs import RunFolder
from bayesalign.scorers import WordScorer
from bayesalign.session import train
from bayesalign.targets import Target
from bayesalign.toy import toy_model
from bayesalign.training import Trainer
from bayesalign.training.args import ProposalArgs, TrainArgs
from bayesalign.training.checkpoint import CheckpointError, read_checkpoint

# configs/methods/twist.yaml, shortened
BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"method": "twist", "steps": 40, "batch_size": 128, "lr": 1e-2, "threads": 1},
    "eval": {"every": 40, "samples": 64, "exact": True, "save_samples": 0},
    "checkpoint": {"every": 40},
}


@pytest.mark.parametrize(
    ("head", "trunk", "bound"),
    # the bound on KL(p‖π)/KL(p‖a) after 40 steps; measured 0.084, 0.044 (copy), 0.21 (prior: a head
    # on the random toy's own states cannot represent Q as well)
    [("vocabulary", "copy", 0.15), ("embedding", "copy", 0.15), ("embedding", "prior", 0.5)],
)
def test_the_twist_method_brings_pi_to_p_exactly(make_trainer, head, trunk, bound):
    trainer = make_trainer(f"training.twist.head={head}", f"training.twist.trunk={trunk}")
    assert trainer.args.proposal.update == "fixed"  # the config's default for this method
    records = trainer.fit()
    first, last = records[0], records[-1]
    assert first["exact_kl_p_pi"] == pytest.approx(first["exact_kl_p_a"], abs=1e-5)  # π = a at the start
    assert first["exact_kl_p_a"] > 0.8
    # GDC++ on this target ends at 0.09–0.17 after 60 steps (docs/methods/twist.md)
    assert last["exact_kl_p_pi"] < bound * first["exact_kl_p_a"], last["exact_kl_p_pi"]
    assert last["exact_satisfaction_pi"] > 0.75


def test_an_interrupted_run_resumes_to_the_same_weights_and_metrics(make_trainer, tmp_path):
    whole, resumed, run = stopped_and_resumed(make_trainer, tmp_path)
    assert resumed.objective.started  # the head's start is not set again
    resumed.fit()
    assert_same_trainable_weights(whole, resumed)
    kls = [[r["exact_kl_p_pi"] for r in RunFolder(p).read_metrics()] for p in (tmp_path / "whole", run.path)]
    assert kls[0] == pytest.approx(kls[1], rel=1e-6)
    # the nested folders of the twisted model are checksummed like the flat files
    checkpoint = run.path / "checkpoints" / "step_000006"
    weights = checkpoint / "twist" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="twist/model.safetensors does not match its checksum"):
        read_checkpoint(checkpoint)


def test_a_cli_run_saves_a_final_folder_that_loads_as_the_trained_policy(tmp_path):
    config = parse_config({**BASE, "training": {**BASE["training"], "steps": 10}})
    trainer = train(config, tmp_path / "run", table=False)
    final = LanguageModel.from_pretrained(tmp_path / "run" / "final", "")
    space = trainer.exact[0].space.samples
    expected = trainer.policy.log_prob_frozen(space)
    torch.testing.assert_close(final.log_prob_frozen(space), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(expected, trainer.base.log_prob_frozen(space), atol=1e-2)  # it moved
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert "LanguageModel.from_pretrained" in card and "pipeline(" not in card


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("training.proposal.update=on_policy",), "fits on samples of the prior: set training.proposal"),
        (
            ("target.reward={scorer: {type: word, words: [b]}, beta: 1}", "target.constraints=[]"),
            "pointwise constraints only",
        ),
        (("training.replay_pool=true", "eval.pool={samples: 256, holdout: 0.3}"), "replay_from: prior"),
        (("training.gradient_checkpointing=true",), "does not support training.gradient_checkpointing"),
        (("training.method=gdc++",), "twist is set but method is 'gdc\\+\\+'"),
        (("training.twist.trunk=prior", "model.lora={r: 2}"), "trunk: prior trains the twist's head"),
    ],
)
def test_the_config_refuses_what_the_twist_cannot_train_before_models_load(overrides, message):
    raw = copy.deepcopy(BASE)
    raw["training"]["twist"] = {"head": "vocabulary"}
    raw = apply_overrides(raw, overrides)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_the_loop_refuses_a_twist_it_cannot_train():
    prior = toy_model(["a", "b", "c"], seed=1)
    target = Target.pointwise(prior, [WordScorer(("b",))])
    on_policy = TrainArgs(steps=1, batch_size=8, proposal=ProposalArgs(update="on_policy"))
    with pytest.raises(ValueError, match="twist fits on samples of the prior a; set training.proposal"):
        Trainer(twisted_policy(prior), target, Twist(), on_policy)
    fixed = TrainArgs(steps=1, batch_size=8, proposal=ProposalArgs(update="fixed"))
    with pytest.raises(TypeError, match="trains a twisted prior"):
        Trainer(prior.trainable_copy(), target, Twist(), fixed)
    with pytest.raises(TypeError, match="reads Twist.view_policy's output"):
        trainer = Trainer(twisted_policy(prior), target, GDCPlusPlus(), fixed)
        batch = trainer._batch(trainer.draw(trainer.proposal, 8, trainer.generator))
        Twist().per_sample_loss(batch, GDCPlusPlus().view_policy(trainer.policy, batch, hidden=False))
