"""The Objective base class: the loop's optional capabilities in one place, no-op by default,
and a misspelt hook refused when the class is defined rather than silently never called."""

from __future__ import annotations

import pytest
import torch

from bayesalign.objectives import (
    CDPG,
    DPG,
    FDPG,
    PPO,
    GDCPlusPlus,
    KLController,
    KLReinforce,
    Objective,
    Reinforce,
)


class Minimal(Objective):
    name = "minimal"

    def per_sample_loss(self, batch, out):
        return -out.log_prob


def test_a_misspelt_hook_is_an_error_naming_the_hook_it_resembles():
    with pytest.raises(TypeError, match=r"Typo\.prepair is not an Objective hook: did you mean 'prepare'\?"):

        class Typo(Minimal):
            def prepair(self, batch, old):
                return batch

    with pytest.raises(TypeError, match="did you mean 'after_update'"):

        class Typo2(Minimal):
            def afterupdate(self):
                pass


def test_helpers_with_unrelated_names_are_allowed():
    class WithHelper(Minimal):
        def advantages(self, batch):  # not close to any hook name
            return batch

    assert WithHelper().name == "minimal"


def test_an_objective_without_a_loss_cannot_be_built():
    class NoLoss(Objective):
        name = "no_loss"

    with pytest.raises(TypeError, match="abstract"):
        NoLoss()


def test_default_hooks_are_no_ops_and_the_capabilities_follow_the_overrides():
    obj = Minimal()
    sentinel = object()
    assert obj.prepare(sentinel, None) is sentinel
    assert obj.attach(None) == [] and obj.step_metrics() == {} and obj.state_dict() == {}
    assert not obj.prepares_batches and not obj.keeps_running_statistics
    obj.load_state_dict({})
    with pytest.raises(ValueError, match="minimal keeps no state"):
        obj.load_state_dict({"x": torch.zeros(1)})


def test_builtin_objectives_declare_what_they_do():
    assert not DPG().prepares_batches and not GDCPlusPlus().prepares_batches
    assert Reinforce().prepares_batches and Reinforce().prior_pass == "none"
    assert KLReinforce(beta=0.1).prepares_batches
    assert CDPG().prepares_batches
    assert FDPG("js").keeps_running_statistics and not DPG().keeps_running_statistics
    assert PPO(KLController(beta=0.1)).requires_on_policy and PPO(KLController(beta=0.1)).needs_hidden


BASE = {
    "model": {"name": "toy", "toy": {"words": ["a", "b"], "seed": 1}},
    "sampling": {"max_new_tokens": 2},
    "target": {"constraints": [{"type": "word", "words": ["b"]}]},
}


def test_the_trainer_refuses_an_object_that_is_not_an_objective(make_trainer):
    class DuckTyped:
        name = "duck"

        def per_sample_loss(self, batch, out):
            return -out.log_prob

    with pytest.raises(TypeError, match="is not an Objective"):
        make_trainer(objective=DuckTyped())
