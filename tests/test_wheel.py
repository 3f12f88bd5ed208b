"""The package as users install it: a wheel built from this tree, installed into a fresh venv
(no source tree, no PYTHONPATH), answers ``bayesalign --help`` with the standard library alone
and trains the toy config with its dependencies present.

Offline: the wheel is built without build isolation (this venv's setuptools), and the fresh
venv borrows this venv's site-packages for the dependencies (torch etc.) through a path file
instead of downloading them; the bayesalign it runs is the wheel's, which the test checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(*command: str | Path, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # from a copy: setuptools builds in the tree, and a stale build/lib would leak into the wheel
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source]
    run(*pip, *build, cwd=tmp_path, env=env)
    (wheel,) = (tmp_path / "dist").glob("bayesalign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bayesalign/configs/demo.yaml" in names and "bayesalign/pretraining/trainer.py" in names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    run(*pip, "--python", python, "install", "--no-deps", wheel, cwd=tmp_path, env=env)

    started = time.perf_counter()
    helped = run(venv / "bin" / "bayesalign", "--help", cwd=tmp_path, env=env)
    assert time.perf_counter() - started < 5  # nothing but the standard library: no torch here yet
    assert "red-team" in helped.stdout and "train" in helped.stdout

    # the dependencies, from this venv: a plain path line (so that its .pth files, among them the
    # editable install of the source tree, are not processed)
    here = sysconfig.get_paths()["purelib"]
    fresh = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path, env=env
    )
    (Path(fresh.stdout.strip()) / "borrowed_dependencies.pth").write_text(here + "\n")
    where = run(python, "-c", "import bayesalign; print(bayesalign.__file__)", cwd=tmp_path, env=env)
    assert str(venv) in where.stdout  # the wheel's copy, not the source tree

    config = ROOT / "configs" / "toy_word.yaml"
    fast = ["--set", "training.steps=2", "--set", "eval.samples=64", "--set", "eval.report=false"]
    run(venv / "bin" / "bayesalign", "train", config, "--out", tmp_path / "run", *fast, cwd=tmp_path, env=env)
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
