"""The picture of a report's top in docs (docs/results/report_top.png), drawn with matplotlib
where no headless browser is at hand: a toy run (exact values, a posterior pool, keep_best)
is trained, its report built, and the report's summary table (the same cells, runs.summary)
and its KL frontier plot (the PNG embedded in the page) are drawn as the page shows them.

    nice .venv/bin/python experiments/report_top/screenshot.py [--out docs/results/report_top.png]
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bayesalign.config import parse_config  # noqa: E402
from bayesalign.report import build_report  # noqa: E402
from bayesalign.runs import RunFolder, metric_names, summary  # noqa: E402
from bayesalign.session import train  # noqa: E402

RAW = {
    "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
    "sampling": {"max_new_tokens": 4},
    "target": {"constraints": [{"type": "word", "words": ["b"], "name": "has_b"}]},
    "training": {"steps": 12, "batch_size": 32, "lr": 3e-2, "keep_best": True},
    "eval": {"every": 3, "samples": 64, "save_samples": 4, "exact": True, "pool": {"samples": 1024}},
    "checkpoint": {"every": 12},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/results/report_top.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "toy-gdc++"
        train(parse_config(RAW), folder, table=False)
        page = build_report([folder], Path(tmp) / "report.html", title="bayesalign report").read_text()
        run = RunFolder(folder)
        records = run.read_metrics()
        columns = summary.columns(run, records)
        cells = [
            [metric_names.title(key)]
            + [(c.text() if (c := summary.cell(r, key)) else "–") for _, r in columns]
            for key in summary.rows(records)
        ]
        constants = "; ".join(f"{metric_names.title(k)} = {c.text()}" for k, c in summary.constants(records))
        frontier = re.search(r'<img alt="KL frontier" src="data:image/png;base64,([^"]+)"', page).group(1)
    fig = plt.figure(figsize=(9.6, 7.6), dpi=100)
    fig.text(0.02, 0.97, "bayesalign report", fontsize=16, weight="bold", va="top")
    fig.text(0.02, 0.925, "summary: first and last evaluation", fontsize=13, weight="bold", va="top")
    ax = fig.add_axes((0.02, 0.64, 0.96, 0.25))
    ax.axis("off")
    heads = ["metric"] + [f"{name} (step {r['step']})" for name, r in columns]
    table = ax.table(cellText=cells, colLabels=heads, loc="upper left", cellLoc="right", colLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.35)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("#ccc")
        if col == 0:
            cell.get_text().set_ha("left")
        if row == 0:
            cell.set_text_props(weight="bold")
    fig.text(
        0.02, 0.655, f"constants of the target (they do not move with π): {constants}", fontsize=9, va="top"
    )
    fig.text(0.02, 0.595, "KL frontier", fontsize=13, weight="bold", va="top")
    image = plt.imread(io.BytesIO(base64.b64decode(frontier)))
    ax = fig.add_axes((0.02, 0.0, 0.66, 0.575))
    ax.imshow(image)
    ax.axis("off")
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
