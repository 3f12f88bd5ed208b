"""docs/getting-started.md and docs/concepts.md against a real run: the first command of the
getting-started page runs as written (shortened to 10 steps), prints the lines the page shows,
and writes every metric key the concepts page explains."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from bayesalign.cli import main

ROOT = Path(__file__).parents[1]
START = (ROOT / "docs" / "getting-started.md").read_text()
CONCEPTS = (ROOT / "docs" / "concepts.md").read_text()


def numbers(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.e]+)", line)}


def test_the_first_toy_run_prints_what_the_page_shows(tmp_path, capsys, monkeypatch):
    command = next(line for line in START.splitlines() if line.startswith("bayesalign train configs/toy"))
    argv = shlex.split(command)[1:]
    assert argv == ["train", "configs/toy_word.yaml", "--out", "runs/toy"]
    monkeypatch.chdir(ROOT)  # the page runs from the clone's root
    out = tmp_path / "toy"
    assert main([*argv[:3], str(out), "--set", "training.steps=10", "--set", "eval.report=false"]) == 0
    printed = capsys.readouterr().err
    for step in (0, 10):
        shown = next(line for line in START.splitlines() if line.startswith(f"step {step}: "))
        got = next(line for line in printed.splitlines() if line.startswith(f"step {step}: "))
        want, have = numbers(shown), numbers(got)
        assert want.keys() == have.keys()
        assert all(abs(want[k] - have[k]) < 0.01 for k in want), (shown, got)
    assert "before (step 0, π = a) vs after (step 10)" in printed

    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    table = CONCEPTS.split("## The metrics")[1]
    keys = {k for k in re.findall(r"`([a-z_0-9]+)`", table) if k not in ("kl_pi_p", "_pi", "_q", "_a", "_p")}
    exact = set(re.findall(r"`(exact_[a-z_]+)`", table))
    assert keys - set(record) == set() and exact - set(record) == set()
    assert len(keys) > 10 and len(exact) >= 6
