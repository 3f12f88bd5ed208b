"""Run every PHF objective at an equal token budget on both tasks, plus "MLE then finetune with
feedback", one run after another through `bayesalign pretrain` (1 thread each).

Per task, in order (run folders under runs/phf/<task>/):
  mle            MLE, seed 0: the reference model of every other run's KL (its own KL is 0)
  filtering, conditional, unlikelihood, rwr, awr   the feedback objectives, same budget and seed
  mle_half       MLE on the first half of the budget (the same blocks as mle's first half)
  finetune       conditional training from mle_half's weights on the second half of the stream
  mle_seed1      MLE with seed 1: how far two MLE runs are from each other (the KL noise floor)

    nohup nice python experiments/phf/run.py > runs/phf/log.txt 2>&1 &
(experiments/phf/reproduce.sh runs the whole experiment, this included.)
Then `python experiments/phf/summarize.py` writes the tables and plots to docs/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RUNS = Path("runs/phf")
TOKENS = 200_000
# filtering drops documents whose mean line/sentence score exceeds this; the other objectives
# use threshold 0 (any violation or PII item makes a segment misaligned). PEP8: the corpus's
# median document mean (about half the files dropped); PII: 0 (the 6 % of documents with PII).
FILTER_THRESHOLD = {"pep8": 0.0013, "pii": 0.0}


def runs(task: str) -> list[tuple[str, list[str]]]:
    reference = f"eval.reference_model={RUNS / task / 'mle' / 'final'}"
    half = TOKENS // 2
    return [
        ("mle", []),
        (
            "filtering",
            ["objective.type=filtering", f"objective.threshold={FILTER_THRESHOLD[task]}", reference],
        ),
        ("conditional", ["objective.type=conditional", reference]),
        ("unlikelihood", ["objective.type=unlikelihood", reference]),
        ("rwr", ["objective.type=rwr", reference]),
        ("awr", ["objective.type=awr", "objective.alpha=0.5", reference]),
        ("mle_half", [f"training.tokens={half}"]),
        (
            "finetune",
            [
                "objective.type=conditional",
                f"training.init_from={RUNS / task / 'mle_half' / 'final'}",
                f"training.skip_tokens={half}",
                reference,
            ],
        ),
        ("mle_seed1", ["training.seed=1", reference]),
    ]


def main(tasks: list[str]) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for task in tasks:
        for name, overrides in runs(task):
            out = RUNS / task / name
            if (out / "final" / "model.safetensors").is_file():
                print(f"{task}/{name}: done already", flush=True)
                continue
            sets = [f"training.tokens={TOKENS}", *overrides]
            command = [sys.executable, "-m", "bayesalign.cli", "pretrain", str(HERE / f"{task}.yaml")]
            command += ["--out", str(out)] + [a for s in sets for a in ("--set", s)]
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True)
            seconds = time.perf_counter() - started
            print(json.dumps({"task": task, "run": name, "wall_s": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["pep8", "pii"])
