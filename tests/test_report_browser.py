"""The report renders in a real browser: headless Chromium (Debian's `chromium`) opens the page
from disk and takes a screenshot, in which the plotted curves of both runs must be visible. An
<img> whose embedded PNG did not decode would leave no pixel of either run's colour.

Deselected by default (marker `browser`): it needs Chromium, which `make test-browser` installs
when missing (apt-get), and the browser's start costs seconds that the default run does not pay.
"""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib import colors
from matplotlib import image as mpimg

from bayesalign.config import apply_overrides, parse_config
from bayesalign.report import build_report
from bayesalign.session import train

pytestmark = pytest.mark.browser

RAW = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"steps": 4, "batch_size": 32, "lr": 3e-2},
    "eval": {"every": 2, "samples": 16, "save_samples": 3, "report": False},
    "checkpoint": {"every": 4},
}


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.fail("no Chromium on PATH: `make test-browser` installs Debian's chromium package")
    return found


def pixels_of(rgb: np.ndarray, colour: str, tol: float = 0.04) -> int:
    return int((np.abs(rgb - np.array(colors.to_rgb(colour))).max(-1) < tol).sum())


def test_report_renders_both_runs_curves_in_headless_chromium(tmp_path):
    runs = []
    for method in ("gdc++", "dpg"):
        folder = tmp_path / method
        train(parse_config(apply_overrides(copy.deepcopy(RAW), [f"training.method={method}"])), folder)
        runs.append(folder)
    page = build_report(runs, tmp_path / "report.html", title="two runs")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,2400",  # the plots come below the summary and the samples
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    rgb = mpimg.imread(shot)[..., :3]
    assert rgb.shape[:2] == (2400, 1280)
    assert (rgb < 0.9).any(-1).mean() > 0.02  # not a blank page
    # matplotlib's first two colours: run 1 and run 2 of every plot
    assert pixels_of(rgb, "C0") > 200 and pixels_of(rgb, "C1") > 200
