"""`bayesalign eval`: a saved policy measured without training gives the numbers its run's last
evaluation gave (exact values on the toy space do not depend on sampling)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml
from rich.console import Console

from bayesalign.cli import main
from bayesalign.config import parse_config
from bayesalign.evaluation import evaluate_policy
from bayesalign.training.run import RunFolder
from bayesalign.training.session import train

RAW = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"method": "gdc++", "steps": 6, "batch_size": 64, "lr": 3e-2},
    "eval": {"every": 3, "samples": 64, "exact": True, "report": False},
    "checkpoint": {"every": 6},
}
EXACT = ("exact_kl_p_pi", "exact_kl_pi_a", "exact_satisfaction_pi", "exact_entropy_pi")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    train(parse_config(copy.deepcopy(RAW)), folder)
    return folder


def test_a_saved_policy_gets_its_runs_last_exact_values(run):
    last = RunFolder(run).read_metrics()[-1]
    for policy in (run, run / "final"):
        metrics = evaluate_policy(parse_config(copy.deepcopy(RAW)), policy, Console(quiet=True))
        for name in EXACT:
            assert metrics[name] == pytest.approx(last[name], rel=1e-5, abs=1e-7), name


def test_without_a_policy_the_prior_is_measured(run):
    metrics = evaluate_policy(parse_config(copy.deepcopy(RAW)), None, Console(quiet=True))
    assert metrics["exact_kl_pi_a"] == pytest.approx(0, abs=1e-9)
    assert metrics["exact_kl_p_pi"] == pytest.approx(-math.log(metrics["exact_z"]), rel=1e-6)


def test_cli_writes_the_metrics_and_names_a_missing_policy(run, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(RAW))
    out = tmp_path / "m.json"
    assert main(["eval", str(config), "--policy", str(run), "--out", str(out)]) == 0
    last = RunFolder(run).read_metrics()[-1]
    assert json.loads(out.read_text())["exact_kl_p_pi"] == pytest.approx(last["exact_kl_p_pi"], rel=1e-5)
    capsys.readouterr()
    assert main(["eval", str(config), "--policy", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err.replace("\n", "")
