"""What the console shows: exact values where they exist (named exact_*), no bare negative KL,
one line per record off a terminal, a bar that keeps its bar and ETA at 80 columns, and the
before/after table at the end of every train."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from bayesalign.cli import main
from bayesalign.console import before_after_table, format_value, headline, how_measured
from bayesalign.progress import progress_bar, show_record

CONFIG = Path(__file__).parents[1] / "configs" / "toy_word.yaml"
RECORD = {
    "step": 10,
    "kl_p_pi": 0.1071,
    "kl_p_pi_stderr": 0.01,
    "exact_kl_p_pi": 0.0873,
    "kl_pi_a": -0.004172,
    "kl_pi_a_stderr": 0.003,
    "minus_log_z": -0.5,  # −log Z of a tilted target may be negative: it is no KL
}


def render(table) -> str:
    out = io.StringIO()
    Console(file=out, width=120).print(table)
    return out.getvalue()


def test_the_headline_prefers_exact_values_and_names_them():
    assert headline(RECORD, ("kl_p_pi", "minus_log_z")) == "exact_kl_p_pi=0.0873  minus_log_z=-0.5"


def test_a_negative_kl_is_never_shown_bare():
    assert format_value("kl_pi_a", -0.004172, 0.003) == "≈0"  # within noise
    assert format_value("exact_kl_pi_a", -1e-17) == "≈0"  # float rounding
    beyond = format_value("kl_pi_a", -0.3, 0.01)
    assert beyond.startswith("≈0 (estimate -0.3") and "30 stderr below 0" in beyond
    assert format_value("minus_log_z", -0.5) == "-0.5"
    assert "kl_pi_a=≈0" in headline(RECORD, ("kl_pi_a",))


def test_off_a_terminal_a_long_record_stays_on_one_line():
    out = io.StringIO()
    con = Console(file=out, force_terminal=False)  # 80 columns, as in a redirected log
    record = {f"metric_number_{i}": 0.123456 for i in range(12)}
    show_record(con, "step 7", record, tuple(record))
    assert out.getvalue().count("\n") == 1 and len(out.getvalue()) > 160


def test_at_80_columns_the_bar_keeps_its_bar_and_eta():
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, width=80)
    with progress_bar(con, "pretrain filtering") as progress:
        task = progress.add_task("t", total=2_000_000, phase="sampling 512 from π", info="")
        progress.update(task, completed=666_666, info=headline(RECORD, ("kl_p_pi", "kl_pi_a") * 4))
    last = out.getvalue().rsplit("\r", 1)[-1].split("\x1b[2K")[-1]  # the final frame
    bar_row = Console(file=io.StringIO()).render_str(last).plain.splitlines()[0]
    assert "━" in bar_row and "ETA" in bar_row and "666666/2000000" in bar_row
    assert "exact_kl_p_pi=0.0873" in last


def test_the_table_marks_exact_and_estimated_rows():
    before = RECORD | {"step": 0, "exact_kl_p_pi": 0.9}
    text = render(before_after_table([before, RECORD], ("kl_p_pi", "kl_pi_a", "missing")))
    assert "before (step 0, π = a) vs after (step 10)" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert "0.9" in rows["kl_p_pi"] and "0.0873" in rows["kl_p_pi"] and "exact" in rows["kl_p_pi"]
    assert "≈0 ± 0.003" in rows["kl_pi_a"] and "π's samples" in rows["kl_pi_a"]
    assert "missing" not in rows


def test_the_table_says_which_rows_rest_on_importance_weights_and_keeps_log_z_constant():
    """An IS estimate names the ESS of its weights before and after; KL(p‖a) = −log Z comes from
    the posterior pool where there is one, so it cannot move between before and after."""
    pool = {"pool_kl_p_a": 1.18, "pool_kl_p_a_stderr": 0.038, "pool_kl_p_pi": 3.5, "pool_kl_p_pi_stderr": 0.1}
    before = {"step": 0, "kl_p_pi": 1.16, "kl_p_a": 1.16, "ess": 20.0} | pool
    after = {"step": 16, "kl_p_pi": 1.65, "kl_p_a": 2.42, "ess": 8.7} | pool
    text = render(before_after_table([before, after], ("pool_kl_p_pi", "kl_p_pi", "kl_p_a")))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert "IS estimate, ESS 20 → 9" in rows["kl_p_pi"]
    assert "exact p-samples" in rows["pool_kl_p_pi"]
    assert rows["kl_p_a"].count("1.18 ± 0.038") == 2 and "2.42" not in rows["kl_p_a"]
    bare = [{k: v for k, v in r.items() if not k.startswith("pool_")} for r in (before, after)]
    without_pool = render(before_after_table(bare, ("kl_p_a",)))
    assert "2.42" in without_pool and "IS estimate, ESS 20 → 9" in without_pool


def test_train_ends_with_the_before_after_table(tmp_path, capsys):
    out = tmp_path / "run"
    fast = ["--set", "training.steps=2", "--set", "eval.samples=64", "--set", "training.batch_size=32"]
    assert main(["train", str(CONFIG), "--out", str(out), *fast]) == 0
    err = capsys.readouterr().err
    assert "before (step 0, π = a) vs after (step 2)" in err
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["exact_kl_p_a"] + first["exact_log_z"]) < 1e-9  # constraints: KL(p‖a) = −log Z
    assert "step 0: exact_satisfaction_pi=" in err and "exact_kl_p_a=" in err


def test_how_a_number_was_measured_is_read_from_its_name():
    assert how_measured("exact_kl_p_pi") == "exact"
    assert how_measured("pool_kl_p_pi") == "exact p-samples"
    # the frontier's numbers and the KL split read E_π[b] on π's samples as well as the pool
    for name in ("frontier_excess", "frontier_kl_p_pi", "pool_kl_p_pi_within"):
        assert how_measured(name) == "π's samples + exact p-samples", name
    assert how_measured("kl_p_pi") == "IS estimate"
    assert how_measured("kl_pi_a") == "π's samples"
