"""The documentation site (mkdocs + mkdocstrings API reference from the docstrings) builds with
--strict: a broken link, a page missing from the nav or a module that no longer imports fails.
(Not --quiet: mkdocs counts warnings only when it logs them.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_docs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "api" / "objectives" / "index.html").read_text()
    assert "KLController" in page and "GDCPlusPlus" in page  # the API reference came from the code


def test_method_pages_quote_what_their_configs_give():
    """Each example config parses, and the page that runs it quotes the final exact KL(p‖π) that
    experiments/methods/run.py recorded for it: a page cannot drift from its numbers unnoticed."""
    from bayesalign.config import load_config

    results = json.loads((ROOT / "docs" / "results" / "methods.json").read_text())
    pages = {p: p.read_text() for p in (ROOT / "docs" / "methods").glob("*.md") if p.name != "index.md"}
    configs = sorted((ROOT / "configs" / "methods").glob("*.yaml"))
    assert sorted(results) == sorted(c.stem for c in configs)
    for config in configs:
        load_config(config)
        quoting = [text for text in pages.values() if f"configs/methods/{config.name}" in text]
        assert quoting, f"no method page runs {config.name}"
        assert f"{results[config.stem]['end']['exact_kl_p_pi']:.3f}" in quoting[0], config.name


def test_methods_json_is_what_the_method_configs_give_now(tmp_path):
    """Regenerate the figures of docs/results/methods.json (each method's example config, toy
    space, exact values) and compare: the pages quote methods.json, so a code change that moves
    a method's result cannot leave the documentation behind. The tolerance absorbs rounding
    differences between CPUs (AVX2 vs AVX-512), not changes of behaviour."""
    from rich.console import Console

    from bayesalign.config import load_config
    from bayesalign.runs import RunFolder
    from bayesalign.session import train

    results = json.loads((ROOT / "docs" / "results" / "methods.json").read_text())
    for config in sorted((ROOT / "configs" / "methods").glob("*.yaml")):
        out = tmp_path / config.stem
        train(load_config(config, ["eval.report=false"]), out, console=Console(quiet=True), table=False)
        last = RunFolder(out).read_metrics()[-1]
        for name, documented in results[config.stem]["end"].items():
            assert last[name] == pytest.approx(documented, abs=0.02, rel=0.05), (config.stem, name)


def test_every_shipped_config_still_parses():
    """The configs the docs tell users to run (configs/*.yaml, the demo's) parse under today's
    schema: a renamed or removed key fails here, not in a user's first command."""
    from bayesalign.config import load_config

    demo = ROOT / "src" / "bayesalign" / "configs" / "demo.yaml"
    shipped = [*sorted((ROOT / "configs").glob("*.yaml")), demo]
    assert len(shipped) > 5
    for config in shipped:
        load_config(config)
