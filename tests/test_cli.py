"""The command line end to end on the toy config: run folder contents, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bayesalign.cli import main
from bayesalign.models import LanguageModel
from bayesalign.samples import SamplingParams

CONFIG = Path(__file__).parents[1] / "configs" / "toy_word.yaml"
FAST = ["--set", "eval.samples=64", "--set", "training.batch_size=32", "--set", "eval.every=2"]


def train(out: Path, steps: int, *extra: str) -> int:
    return main(["train", str(CONFIG), "--out", str(out), "--set", f"training.steps={steps}", *FAST, *extra])


def test_train_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    assert train(out, 4) == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["training"]["steps"] == 4 and resolved["training"]["optimizer"] == "adamw"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4]
    for key in ("samples_seen", "kl_p_pi", "kl_p_q", "kl_pi_a", "z", "satisfaction_pi", "tv_p_pi"):
        assert key in records[-1]
    assert records[-1]["samples_seen"] == 4 * 32
    assert sorted(p.name for p in (out / "samples").iterdir())[0] == "step_000000.jsonl"
    assert (out / "checkpoints" / "step_000004" / "policy.safetensors").exists()
    # final/ is a plain HF folder with safetensors weights that reproduces the trained policy
    final = LanguageModel.from_pretrained(out / "final")
    assert (out / "final" / "model.safetensors").exists()
    samples = final.sample(16, SamplingParams(max_new_tokens=4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(final.log_prob_frozen(samples), samples.log_q, atol=1e-5, rtol=0)
    assert records[-1]["exact_kl_p_pi"] < records[0]["exact_kl_p_pi"]


def test_resume_continues_where_the_run_stopped(tmp_path):
    out = tmp_path / "run"
    assert train(out, 4) == 0
    assert train(out, 8, "--resume") == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4, 6, 8]


def test_existing_run_needs_resume_and_resume_needs_same_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, 2) == 0
    assert train(out, 2) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train(out, 4, "--resume", "--set", "training.lr=0.5") == 2
    assert "training.lr" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.stpes=3", "did you mean 'steps'"),
        ("training.method=gdc+", "did you mean 'gdc++'"),
        ("training.proposal.update=adaptiv", "did you mean 'adaptive'"),
        ("target.constraints=[{type: wrod, words: [b]}]", "unknown scorer 'wrod'; did you mean 'word'"),
        ("target.constraints=[{type: word, words: [zzz]}]", "no sample satisfies the target"),
    ],
)
def test_bad_input_exits_with_a_specific_message(tmp_path, capsys, override, message):
    assert train(tmp_path / "run", 2, "--set", override) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_exact_evaluation_of_a_too_large_space_is_refused(tmp_path, capsys):
    assert train(tmp_path / "run", 2, "--set", "sampling.max_new_tokens=30") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "exact evaluation would enumerate" in err and "max_new_tokens 30" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            (
                "training.method=ppo",
                "training.ppo={beta: 0.1}",
                "training.proposal.update=on_policy",
                "training.sample_buffer=true",
            ),
            "training.sample_buffer replays older samples: drop it",
        ),
        (
            (
                "target={reward: {scorer: {type: word, words: [b], name: has_b}, beta: 1.0}}",
                "training.proposal.update=fixed",
                "training.sample_buffer=true",
                "training.buffer_satisfied_share=0.25",
            ),
            "buffer_satisfied_share stratifies by constraints: this target has none",
        ),
    ],
)
def test_settings_the_loop_cannot_combine_are_one_error_line(tmp_path, capsys, overrides, message):
    """Refused when the trainer is built (before any sample): one `error:` line, exit 2."""
    args = [a for o in overrides for a in ("--set", o)]
    assert train(tmp_path / "run", 2, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and message in " ".join(err.split())


def test_reverse_kl_on_a_pointwise_target_is_refused(tmp_path, capsys):
    args = ("--set", "training.method=f-dpg", "--set", "training.f_dpg={divergence: reverse_kl}")
    assert train(tmp_path / "run", 2, *args) == 2
    assert "reverse" in " ".join(capsys.readouterr().err.split()).lower()
