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
from bayesalign.run_summary import summarise
from bayesalign.runs import RunFolder
from bayesalign.session import train

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


# -- posterior-pool metrics in runs and in `bayesalign eval` ---------------------------------------
POOLED = {**RAW, "eval": {**RAW["eval"], "pool": {"samples": 1024}}}


@pytest.fixture(scope="module")
def pooled_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAYESALIGN_CACHE", str(cache))
        folder = tmp_path_factory.mktemp("pooled")
        train(parse_config(copy.deepcopy(POOLED)), folder)
        again = evaluate_policy(parse_config(copy.deepcopy(POOLED)), folder, Console(quiet=True))
    return folder, again


def test_pool_estimates_in_run_records_agree_with_exact_values(pooled_run):
    folder, _ = pooled_run
    records = RunFolder(folder).read_metrics()
    for r in records:
        assert abs(r["pool_kl_p_pi"] - r["exact_kl_p_pi"]) < 3 * r["pool_kl_p_pi_stderr"], r["step"]
        assert abs(r["pool_log_z"] - r["exact_log_z"]) < 3 * r["pool_log_z_stderr"]
        assert r["pool_reliable"] == 1.0 and r["pool_bound_observed"] == 0.0
    assert records[0]["pool_draw_seconds"] > 0
    assert len({r["pool_log_z"] for r in records}) == 1  # Z is a constant of the target
    last = records[-1]
    frontier = json.loads((folder / "frontier.json").read_text())
    assert frontier["statistic"] == "satisfaction_pi" and len(frontier["points"]) > 10
    assert last["frontier_excess"] == pytest.approx(last["kl_pi_a"] / last["frontier_kl"])
    assert last["frontier_excess"] > 1 - 3 * last["kl_pi_a_stderr"] / last["frontier_kl"]


def test_kl_p_pi_splits_into_satisfaction_and_the_rest_exactly_and_on_the_pool(pooled_run):
    """KL(p‖π) = −log π(B) + KL(p‖π(·|B)) exactly (p lives on B); the pool's estimates of both
    parts agree with the enumerated values within their standard errors."""
    folder, _ = pooled_run
    records = RunFolder(folder).read_metrics()
    for r in records:
        floor, rest = r["exact_frontier_kl_p_pi"], r["exact_kl_p_pi_within"]
        assert floor == pytest.approx(-math.log(r["exact_satisfaction_pi"]))
        assert floor + rest == pytest.approx(r["exact_kl_p_pi"], abs=1e-9)
        assert rest >= -1e-12
        assert abs(r["frontier_kl_p_pi"] - floor) < 3 * r["frontier_kl_p_pi_stderr"]
        assert abs(r["pool_kl_p_pi_within"] - rest) < 3 * r["pool_kl_p_pi_within_stderr"]
    assert records[0]["exact_kl_p_pi_within"] == pytest.approx(0.0, abs=1e-9)  # π = a: a(·|B) is p
    assert records[-1]["exact_kl_p_pi_within"] > 0.01  # π ≠ p inside B: the identity is not trivial


def test_eval_off_a_terminal_prints_its_phases_while_it_draws_the_pool(tmp_path, monkeypatch):
    """A redirected `bayesalign eval` that draws a pool for minutes is not silent: the heartbeat
    prints the evaluator's phase (here shortened to every 10 ms)."""
    import functools
    import io

    import bayesalign.evaluation
    from bayesalign.progress import Heartbeat

    monkeypatch.setenv("BAYESALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(bayesalign.evaluation, "Heartbeat", functools.partial(Heartbeat, every=0.01))
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    evaluate_policy(parse_config(copy.deepcopy(POOLED)), None, console)
    assert "drawing prior samples in chunks of" in out.getvalue() and "ETA of this phase" in out.getvalue()


def test_eval_reuses_the_runs_pool_and_scores_the_same_policy_alike(pooled_run):
    folder, again = pooled_run
    last = RunFolder(folder).read_metrics()[-1]
    assert again["pool_draw_seconds"] == 0.0  # every prior sample came from the cache
    assert again["pool_kl_p_pi"] == pytest.approx(last["pool_kl_p_pi"], rel=1e-5)
    assert again["pool_accepted"] == last["pool_accepted"]


# -- training on the pool's training split, keeping the best policy by validation KL(p‖π) -----------
REPLAY = {
    **RAW,
    "training": {
        **RAW["training"],
        "method": "dpg",
        "steps": 8,
        "lr": 5e-2,
        "proposal": {"update": "fixed"},
        "replay_pool": True,
        "keep_best": True,
    },
    "eval": {**RAW["eval"], "every": 2, "pool": {"samples": 512, "holdout": 0.5}},
    "checkpoint": {"every": 4},
}


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAYESALIGN_CACHE", str(tmp_path_factory.mktemp("cache")))
        folder = tmp_path_factory.mktemp("replay")
        trainer = train(parse_config(copy.deepcopy(REPLAY)), folder)
        final = evaluate_policy(parse_config(copy.deepcopy(REPLAY)), folder / "final", Console(quiet=True))
    return folder, trainer, final


def test_replay_trains_on_the_pools_training_split_and_improves(replay_run):
    folder, trainer, _ = replay_run
    records = RunFolder(folder).read_metrics()
    assert records[-1]["exact_kl_p_pi"] < 0.7 * records[0]["exact_kl_p_pi"]
    assert records[0]["pool_size"] == 256  # metrics come from the held-out half only
    assert trainer.state.replay_position == 8 * 64
    assert len(trainer.evaluator.train_pool.draws) == 256


def test_keep_best_saves_the_policy_with_the_lowest_validation_kl(replay_run):
    folder, _, final = replay_run
    records = RunFolder(folder).read_metrics()
    best = min(records, key=lambda r: r["pool_kl_p_pi"])
    chosen = json.loads((folder / "final" / "selection.json").read_text())
    assert chosen["step"] == best["step"] and chosen["pool_kl_p_pi"] == best["pool_kl_p_pi"]
    assert final["exact_kl_p_pi"] == pytest.approx(best["exact_kl_p_pi"], rel=1e-5)


def test_the_demo_summary_compares_the_prior_with_the_policy_final_holds(replay_run):
    """The demo's closing table (run_summary.py): step 0 against the step final/ holds (the
    keep_best choice, not the last step), with the pool estimates and their standard errors."""
    folder, _, _ = replay_run
    console = Console(record=True, width=200)
    summarise(RunFolder(folder), console, seconds=12.0)
    printed = console.export_text()
    chosen = json.loads((folder / "final" / "selection.json").read_text())["step"]
    first, best = (
        RunFolder(folder).read_metrics()[0],
        next(r for r in RunFolder(folder).read_metrics() if r["step"] == chosen),
    )
    assert f"before (step 0, π = a) vs final/ (step {chosen}), 12 s" in printed
    row = next(line for line in printed.splitlines() if "KL(p‖π), pool" in line)
    for record in (first, best):
        assert f"{record['pool_kl_p_pi']:.3f} ± {record['pool_kl_p_pi_stderr']:.3f}" in row


def test_replay_resumes_with_the_same_batches(replay_run, tmp_path, monkeypatch):
    folder, _, _ = replay_run
    monkeypatch.setenv("BAYESALIGN_CACHE", str(tmp_path / "cache"))
    half = copy.deepcopy(REPLAY)
    half["training"]["steps"] = 4
    train(parse_config(half), tmp_path / "run")
    train(parse_config(copy.deepcopy(REPLAY)), tmp_path / "run", resume=True)
    a = RunFolder(folder).read_metrics()[-1]
    b = RunFolder(tmp_path / "run").read_metrics()[-1]
    assert b["exact_kl_p_pi"] == pytest.approx(a["exact_kl_p_pi"], rel=1e-6)
    chosen = json.loads((tmp_path / "run" / "final" / "selection.json").read_text())
    assert chosen["step"] == json.loads((folder / "final" / "selection.json").read_text())["step"]


def test_replay_without_a_held_out_pool_is_refused():
    raw = copy.deepcopy(REPLAY)
    raw["eval"]["pool"]["holdout"] = 0
    with pytest.raises(ValueError, match="holdout"):
        parse_config(raw)
    raw = copy.deepcopy(REPLAY)
    raw["training"]["proposal"]["update"] = "on_policy"
    with pytest.raises(ValueError, match="fixed"):
        parse_config(raw)


def test_the_demo_config_is_the_pool_and_tilt_recipe():
    from importlib import resources

    from bayesalign.config import load_config

    with resources.as_file(resources.files("bayesalign") / "configs" / "demo.yaml") as path:
        config = load_config(path)
    assert config.training.keep_best and config.training.scorer_tilt is not None
    assert config.eval.pool.holdout > 0 and config.training.proposal.update == "fixed"
