"""Loading a trained policy back from a run folder (merged weights or a LoRA adapter) as a frozen
proposal with the prior's tokenizer, and refusing a folder that holds none."""

from __future__ import annotations

import pytest
import torch

from bayesalign.models import make_policy
from bayesalign.runs.saved_policy import SavedPolicyError, load_proposal, proposal_folder
from bayesalign.samples import SamplingParams
from bayesalign.toy import toy_model

WORDS = ["a", "b", "c"]
PROMPT = "a b"
PARAMS = SamplingParams(max_new_tokens=4)


@pytest.fixture(scope="module")
def prior():
    return toy_model(WORDS, seed=0, prompt=PROMPT)


def test_load_proposal_from_merged_and_adapter_folders(tmp_path, prior):
    policy = make_policy(
        toy_model(WORDS, seed=0, prompt=PROMPT), dict(r=4, lora_alpha=8, target_modules=["c_attn"])
    )
    with torch.no_grad():
        for name, param in policy.module.named_parameters():
            if "lora_B" in name:
                param.normal_(generator=torch.Generator().manual_seed(0))
    samples = policy.sample(64, PARAMS, generator=torch.Generator().manual_seed(0))
    for merge in (True, False):
        folder = tmp_path / f"merge_{merge}" / "final"
        policy.save_pretrained(folder, merge_lora=merge)
        loaded = load_proposal(folder.parent, prior)  # a run folder resolves to its final/
        torch.testing.assert_close(loaded.log_prob_frozen(samples), samples.log_q, atol=1e-5, rtol=0)
        assert not any(p.requires_grad for p in loaded.module.parameters())
    with pytest.raises(SavedPolicyError, match="does not exist"):
        proposal_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SavedPolicyError, match="holds no model"):
        proposal_folder(tmp_path / "empty")
