"""Run every method's example config (configs/methods/*.yaml) and write the numbers quoted on the
method pages of the documentation (docs/methods/) to docs/results/methods.json.

    .venv/bin/python experiments/methods/run.py [--only dpg,ppo] [--out runs/methods]

Each config trains on a toy space of 121 sequences, so the figures are exact (enumeration), not
estimates: KL(p‖π) to the method's target, KL(π‖a), the constraint's satisfaction under π.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rich.console import Console

from bayesalign.config import load_config
from bayesalign.runs import RunFolder
from bayesalign.session import train

ROOT = Path(__file__).resolve().parents[2]
SHOWN = ("exact_kl_p_pi", "exact_kl_pi_p", "exact_kl_pi_a", "exact_satisfaction_pi", "exact_entropy_pi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated config names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "methods")
    args = parser.parse_args()
    configs = sorted((ROOT / "configs" / "methods").glob("*.yaml"))
    if args.only:
        configs = [c for c in configs if c.stem in args.only.split(",")]
    results_file = ROOT / "docs" / "results" / "methods.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    console = Console(stderr=True)
    for path in configs:
        out = args.out / path.stem
        shutil.rmtree(out, ignore_errors=True)
        train(load_config(path, []), out, console=console)
        records = RunFolder(out).read_metrics()
        first, last = records[0], records[-1]
        results[path.stem] = {
            "config": f"configs/methods/{path.name}",
            "steps": last["step"],
            "seconds": round(last["seconds"], 1),
            "start": {k: first[k] for k in SHOWN if k in first},
            "end": {k: last[k] for k in SHOWN if k in last},
        }
        row = "  ".join(f"{k}={last[k]:.3f}" for k in SHOWN if k in last)
        console.print(f"{path.stem}: {row}  ({last['seconds']:.1f} s)")
    results_file.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
