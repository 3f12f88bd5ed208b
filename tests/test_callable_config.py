"""A ``callable`` scorer in a module beside the config file: imported without PYTHONPATH, from
any working directory; a bad one fails as one ``error:`` line before any run folder exists."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from bayesalign.cli import main

TOY = yaml.safe_load((Path(__file__).parents[1] / "configs" / "toy_word.yaml").read_text())
FAST = [
    "--set",
    "training.steps=2",
    "--set",
    "eval.samples=64",
    "--set",
    "training.batch_size=32",
    "--set",
    "eval.report=false",
]


@pytest.fixture
def isolated_imports(monkeypatch, tmp_path):
    """The modules these tests write, and the folders put on sys.path, go away afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if str(tmp_path) in (getattr(sys.modules[name], "__file__", None) or ""):
            del sys.modules[name]


def write_config(folder: Path, function: str, module: str | None = None, code: str = "") -> Path:
    """A toy config whose constraint is ``function``; ``code`` written as ``module``.py beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    if module is not None:
        (folder / f"{module}.py").write_text(code)
    raw = TOY | {"target": {"constraints": [{"type": "callable", "function": function, "boolean": True}]}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_module_beside_the_config_imports_from_anywhere(tmp_path, monkeypatch, isolated_imports):
    code = "def has_b(text):\n    return float('b' in text.split())\n"
    config = write_config(tmp_path / "project", "my_scorers:has_b", "my_scorers", code)
    monkeypatch.chdir(tmp_path)  # not the config's folder: nothing but the fix can find the module
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert main(["train", str(config.relative_to(tmp_path)), "--out", "run", *FAST]) == 0
    assert (tmp_path / "run" / "final").is_dir()


@pytest.mark.parametrize(
    ("function", "module", "code", "says"),
    [
        ("my_missing:score", None, "", "looked for module 'my_missing' in"),
        ("my_broken:score", "my_broken", "import my_no_such_dependency\n", "No module named"),
        ("my_raises:score", "my_raises", "raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
        ("my_empty:score", "my_empty", "x = 1\n", "has no 'score'"),
        ("my_noncallable:x", "my_noncallable", "x = 1\n", "is not callable"),
    ],
)
def test_a_bad_callable_is_one_error_line_before_any_run_folder(
    tmp_path, capsys, isolated_imports, function, module, code, says
):
    config = write_config(tmp_path, function, module, code)
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: target.constraints[0]: scorer 'callable'"), err
    assert function in lines[0] and says in lines[0]
    assert not out.exists()


def test_the_documented_example_works(tmp_path, monkeypatch, isolated_imports):
    """docs/scorers-and-metrics.md: its module and YAML, as written, load and score."""
    from bayesalign.config import load_config

    page = (Path(__file__).parents[1] / "docs" / "scorers-and-metrics.md").read_text()
    section = page.split("### Your own Python function")[1]
    code = section.split("```python\n")[1].split("```")[0]
    target = yaml.safe_load(section.split("```yaml\n")[1].split("```")[0])["target"]
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_scorers.py").write_text(code)
    (folder / "my_config.yaml").write_text(yaml.safe_dump(TOY | {"target": target}))
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("project") / "my_config.yaml")
    scorer = config.target.constraints[0].build()
    assert scorer(["Please sit down", "Sit down"]).tolist() == [1.0, 0.0]
