"""`bayesalign report`: a self-contained page whose plots, samples and config come from the runs."""

from __future__ import annotations

import base64
import copy
import html
import json
import re

import pytest
import yaml
from huggingface_hub import ModelCard

from bayesalign.cli import main
from bayesalign.config import apply_overrides, parse_config
from bayesalign.model_card import base_model_id, model_card
from bayesalign.report import ReportError, build_report, plotted_metrics
from bayesalign.runs import RunFolder, metric_names
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


def test_a_lora_card_loads_a_builtin_base_by_its_hub_id(two_runs):
    raw = {**RAW, "model": {"name": "builtin:smollm2-135m-instruct", "lora": {"r": 4}}}
    prior = toy_model(["a", "b", "c"], seed=1)
    target = Target.pointwise(prior, [WordScorer(["b"], name="has_b")])
    text = model_card(parse_config(raw), target, [{"step": 0}, {"step": 1}], merged=False).text
    assert "from_pretrained('HuggingFaceTB/SmolLM2-135M-Instruct')" in text
    assert "from_pretrained('builtin:" not in text  # plain transformers cannot load that name


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


def handmade_run(folder, records, kept_step=None):
    """A run folder holding only the given records (and final/selection.json with keep_best)."""
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if kept_step is not None:
        (folder / "final").mkdir()
        (folder / "final" / "selection.json").write_text(json.dumps({"step": kept_step}))
    return folder


def section(page, heading):
    """The HTML of the <h2> section whose heading starts with ``heading``."""
    return page.split(f"<h2>{heading}")[1].split("<h2>")[0]


def test_the_summary_holds_first_last_and_kept_values_exact_where_known(tmp_path):
    records = [
        {"step": 0, "samples_seen": 0, "satisfaction_pi": 0.25, "satisfaction_pi_stderr": 0.05,
         "kl_p_pi": 1.2, "kl_p_pi_stderr": 0.3, "exact_kl_p_pi": 0.87, "kl_p_a": 0.9, "kl_p_a_stderr": 0.1,
         "exact_kl_p_a": 0.8686},
        {"step": 2, "samples_seen": 64, "satisfaction_pi": 0.5, "satisfaction_pi_stderr": 0.06,
         "kl_p_pi": 0.3, "kl_p_pi_stderr": 0.2, "exact_kl_p_pi": 0.25, "kl_p_a": 0.7, "exact_kl_p_a": 0.8686},
        {"step": 4, "samples_seen": 128, "satisfaction_pi": 0.75, "satisfaction_pi_stderr": 0.07,
         "kl_p_pi": 0.5, "kl_p_pi_stderr": 0.2, "exact_kl_p_pi": 0.41, "kl_p_a": 1.1, "exact_kl_p_a": 0.8686},
    ]  # fmt: skip
    run = handmade_run(tmp_path / "run", records, kept_step=2)
    page = build_report([run], tmp_path / "r.html").read_text()
    summary = section(page, "summary")
    assert page.index("<h2>summary") < page.index("<h2>samples of π") < page.index("<h2>metrics")
    assert re.findall(r"<th>([^<]+)</th>", summary)[1:4] == [
        "first (step 0)",
        "last (step 4)",
        "kept best (final/) (step 2)",
    ]
    rows = {
        m[0]: m[1:]
        for m in re.findall(r"<tr><td>([^<]+)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", summary)
    }
    assert rows["satisfaction under π"] == ("0.25 ± 0.05", "0.75 ± 0.07", "0.5 ± 0.06")
    assert rows["KL(p‖π)"] == (
        "0.87 <i>exact</i>",
        "0.41 <i>exact</i>",
        "0.25 <i>exact</i>",
    )  # not 1.2, 0.5, 0.3
    assert "KL(p‖a)" not in rows  # a constant of the target: once, below the table, exact
    assert "KL(p‖a) = 0.8686 <i>exact</i>" in summary and summary.count("KL(p‖a)") == 1


def test_plots_are_titled_and_grouped_by_family_without_bookkeeping_or_constants(tmp_path):
    moving = {
        "kl_p_pi": "posterior quality",
        "satisfaction_pi": "constraint and reward scores",
        "score_has_b_pi": "constraint and reward scores",
        "kl_pi_a": "distance from the prior",
        "distinct_2_pi": "diversity",
        "kl_p_q": "the proposal q",
        "loss": "training",
        "lr": "training",
        "mystery_metric": "other",
    }
    constants = {"kl_p_a": 0.9, "log_z": -0.9, "minus_log_z": 0.9, "pool_kl_p_a": 0.9, "exact_log_z": -0.87}
    bookkeeping = {"pool_size": 512, "processes": 1, "time_draw_wall": 0.1, "seconds": 1.0, "ess_low": False}
    records = [
        {"step": s, "samples_seen": 32 * s, **{k: 0.1 * s for k in moving}, "exact_kl_p_pi": 0.2, **constants}
        | bookkeeping
        for s in (0, 2, 4)
    ]
    page = build_report([handmade_run(tmp_path / "run", records)], tmp_path / "r.html").read_text()
    plots = section(page, "metrics")
    families = re.findall(r"<h3 class=family[^>]*>([^<]+)</h3><div class=plots>(.*?)</div>", plots)
    assert [f for f, _ in families] == [f for f in metric_names.FAMILIES if f in moving.values()]
    shown = {}
    for family, images in families:
        for alt, title in re.findall(r'<img alt="([^"]+)" title="([^"]+)"', images):
            shown[alt] = family
            assert title == html.escape(metric_names.title(alt))
    assert shown == moving  # one plot each: exact_kl_p_pi shares kl_p_pi's; no constant, no counter
    assert (
        metric_names.title("kl_p_pi") == "KL(p‖π)"
        and metric_names.title("mystery_metric") == "mystery_metric"
    )
    assert metric_names.title("satisfaction_pi") == "satisfaction under π"


def test_the_timing_table_sums_the_phases_of_the_records(two_runs, tmp_path):
    records = RunFolder(two_runs[0]).read_metrics()
    expected, previous = {}, 0
    for r in records:  # per-step means × the steps since the previous record; evaluate: its own
        for phase in ("draw", "prepare", "forward_backward", "optimizer", "evaluate"):
            times = 1 if phase == "evaluate" else r["step"] - previous
            wall, cpu = expected.get(phase, (0.0, 0.0))
            expected[phase] = (
                wall + r.get(f"time_{phase}_wall", 0) * times,
                cpu + r.get(f"time_{phase}_cpu", 0) * times,
            )
        previous = r["step"]
    page = build_report([two_runs[0]], tmp_path / "r.html").read_text()
    timings = section(page, "timings")
    table = {
        p: (float(w), float(c))
        for p, w, c in re.findall(r"<tr><td>(\w+)</td><td>([\d.]+)</td><td>([\d.]+)</td>", timings)
    }
    assert set(table) == set(expected)
    for phase, (wall, cpu) in expected.items():
        assert table[phase] == (pytest.approx(wall, abs=6e-4), pytest.approx(cpu, abs=6e-4))
    assert f"{records[-1]['seconds']:.1f} s wall" in timings
    # a resumed run restarts its clock: the total adds each stretch's seconds
    resumed = [{"step": 0, "seconds": 2.0}, {"step": 2, "seconds": 5.0}, {"step": 4, "seconds": 3.0}]
    assert (
        "8.0 s wall"
        in build_report([handmade_run(tmp_path / "resumed", resumed)], tmp_path / "s.html").read_text()
    )


def test_samples_come_before_the_plots(two_runs):
    page = (two_runs[0] / "report.html").read_text()
    files = sorted((two_runs[0] / "samples").glob("step_*.jsonl"))
    rows = [json.loads(line) for f in (files[0], files[-1]) for line in f.read_text().splitlines()]
    text = html.escape(next(r["text"] for r in rows if r["text"]))  # a non-empty one
    order = [
        "<h2>summary",
        "<h2>samples of π",
        f"<td class=text>{text}</td>",
        "<h3 class=family",
        "<h2>timings",
    ]
    assert [page.index(part) for part in order] == sorted(page.index(part) for part in order)
