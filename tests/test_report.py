"""`bayesalign report`: a self-contained page whose plots, samples and config come from the runs."""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest
import yaml
from huggingface_hub import ModelCard

from bayesalign.cli import main
from bayesalign.config import apply_overrides, parse_config
from bayesalign.model_card import base_model_id, model_card
from bayesalign.report import ReportError, build_report, plotted_metrics
from bayesalign.runs import RunFolder
from bayesalign.scorers import WordScorer
from bayesalign.session import train
from bayesalign.targets import Target
from bayesalign.toy import toy_model

RAW = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"steps": 4, "batch_size": 32, "lr": 3e-2},
    "eval": {"every": 2, "samples": 16, "save_samples": 3},
    "checkpoint": {"every": 4},
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for method in ("gdc++", "dpg"):
        train(parse_config(apply_overrides(copy.deepcopy(RAW), [f"training.method={method}"])), root / method)
    return root / "gdc++", root / "dpg"


def test_training_writes_a_report_with_one_plot_per_metric(two_runs):
    run = RunFolder(two_runs[0])
    page = (run.path / "report.html").read_text()
    records = run.read_metrics()
    names = plotted_metrics(records)
    assert names[:2] == ["kl_p_pi", "tv_p_pi"]  # posterior quality first, headline metrics first in it
    assert names.index("satisfaction_pi") < names.index("kl_pi_a") < names.index("entropy_pi")
    images = re.findall(r'<img alt="([^"]+)" title="[^"]+" src="data:image/png;base64,([^"]+)"', page)
    assert [alt for alt, _ in images] == names
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for _, data in images)
    assert "lr: 0.03" in page  # the resolved config
    first = json.loads((run.samples / "step_000000.jsonl").read_text().splitlines()[0])
    assert first["text"] in page
    assert f"{records[-1]['samples_seen']} samples seen" in page


def test_runs_are_overlaid_and_texts_escaped(two_runs, tmp_path):
    dpg = RunFolder(two_runs[1])
    last = sorted(dpg.samples.glob("step_*.jsonl"))[-1]
    last.write_text(json.dumps({"text": "<script>alert(1)</script>", "has_b": 1.0}) + "\n")
    out = build_report(two_runs, tmp_path / "both.html", title="both")
    page = out.read_text()
    for section in ("summary", "samples of π", "timings", "configuration"):  # each run under each
        part = page.split(f"<h2>{section}")[1].split("<h2>")[0]
        assert part.count("<h3>") == 2 and str(two_runs[0]) in part and str(two_runs[1]) in part
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_refuses_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(ReportError, match="holds no run"):
        build_report([tmp_path], tmp_path / "r.html")
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_cli_report_defaults_to_the_first_runs_folder(two_runs, tmp_path):
    (two_runs[0] / "report.html").unlink()
    assert main(["report", str(two_runs[0])]) == 0
    assert (two_runs[0] / "report.html").read_text().startswith("<!doctype html>")
    assert yaml.safe_load((two_runs[0] / "config.yaml").read_text())["training"]["method"] == "gdc++"


def test_final_gets_a_model_card_with_the_runs_numbers(two_runs, capsys):
    run = RunFolder(two_runs[0])
    card = ModelCard.load(run.final / "README.md")
    first, last = run.read_metrics()[0], run.read_metrics()[-1]
    assert card.data.library_name == "transformers"  # merged: a plain HF folder
    assert card.data.pipeline_tag == "text-generation"
    assert {"bayesalign", "gdc++"} <= set(card.data.tags)
    assert card.data.base_model is None  # a toy model has no hub id
    text = card.text
    assert "Method: `gdc++`, 4 steps × 32 samples" in text
    assert "Target (the posterior p ∝ …): `a(x) · b[has_b]`" in text
    cells = [f"{r['satisfaction_pi']:.4g} ± {r['satisfaction_pi_stderr']:.2g}" for r in (first, last)]
    assert f"| satisfaction_pi | {cells[0]} | {cells[1]} | π's samples |" in text
    assert "| kl_p_pi |" in text and "IS estimate |" in text
    # the card's own example runs as written: it loads final/ with a pipeline and generates
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert repr(str(run.final.resolve())) in example
    exec(example, {})  # noqa: S102 (the card we just wrote)
    assert capsys.readouterr().out.strip()


def test_the_card_shows_the_exact_value_where_the_run_computed_one(two_runs):
    config = parse_config(RAW)
    prior = toy_model(["a", "b", "c"], seed=1)
    target = Target.pointwise(prior, [WordScorer(["b"], name="has_b")])
    records = [
        {"step": 0, "kl_p_pi": 1.2, "kl_p_pi_stderr": 0.3, "exact_kl_p_pi": 0.87},
        {"step": 4, "kl_p_pi": 0.1, "kl_p_pi_stderr": 0.2, "exact_kl_p_pi": 0.25},
    ]
    text = model_card(config, target, records, merged=True).text
    assert "| kl_p_pi | 0.87 | 0.25 | exact |" in text  # not the estimates 1.2 and 0.1


def test_the_card_names_the_base_models_hub_id(tmp_path):
    assert base_model_id("builtin:smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("gpt2") == "gpt2"
    assert base_model_id("toy") is None
    assert base_model_id(str(tmp_path)) is None  # a local folder is not a hub id


def test_a_pooled_run_gets_the_frontier_plot_and_low_ess_warnings(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESALIGN_CACHE", str(tmp_path / "cache"))
    raw = apply_overrides(copy.deepcopy(RAW), ["eval.pool={samples: 512}"])
    train(parse_config(raw), tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    assert re.search(r'<img alt="KL frontier" src="data:image/png;base64,', page)
    records = RunFolder(tmp_path / "run").read_metrics()
    low = [r["step"] for r in records if r["ess_low"]]
    assert low  # 16 samples per evaluation: below the threshold of 30
    assert f"at steps {low} rest on an effective sample size below 30" in page
    assert json.loads((tmp_path / "run" / "frontier.json").read_text())["statistic"] == "satisfaction_pi"


def test_a_run_without_a_pool_has_no_frontier_plot(two_runs):
    assert "KL frontier" not in (two_runs[0] / "report.html").read_text()
