"""Run every PHF objective at an equal token budget on each task, plus "MLE then finetune with
feedback", one run after another through `bayesalign pretrain` (1 thread each).

Per task, in order (run folders under runs/phf/<task>/; seed 0 has no suffix):
  mle, conditional          for seed 0 and each --seeds (mle seed 0 is the reference model of
                            every other run's KL; each mle run saves checkpoint-<half>/)
  filtering, unlikelihood, rwr, awr   then, for every seed
  finetune[_seed<s>]        conditional training from mle's checkpoint at half the budget, on
                            the second half of the same stream ("MLE then finetune")
  mle_continued[_seed<s>]   its control: the same restart from the checkpoint, with MLE

    nohup nice python experiments/phf/run.py pep8 --seeds 1 2 > runs/phf/log_pep8.txt 2>&1 &
    python experiments/phf/run.py pii_dense --only rwr awr   # a subset (its mle must exist)
(experiments/phf/reproduce.sh runs the whole experiment, this included.)
Then `python experiments/phf/summarize.py` writes the tables and plots to docs/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RUNS = Path("runs/phf")
# training tokens per run; pii_dense's models need more before they write e-mail addresses at all
TOKENS = {"pep8": 200_704, "pii": 200_704, "pii_dense": 524_288}  # whole steps of 8 x 128
# filtering drops documents whose mean line/sentence score exceeds this; the other objectives
# use threshold 0 (any violation or PII item makes a segment misaligned). PEP8: the corpus's
# median document mean (about half the files dropped); PII: 0 (the documents with any PII).
FILTER_THRESHOLD = {"pep8": 0.0013, "pii": 0.0, "pii_dense": 0.0}
OBJECTIVES = ["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]


def runs(task: str, seeds: list[int]) -> list[tuple[str, list[str]]]:
    """The six objectives for each seed (seed 0 first, every objective of one seed before the
    next seed), then MLE-then-finetune for each seed: conditional training from the MLE run's
    checkpoint at half the budget, on the rest of the same stream."""
    reference = f"eval.reference_model={RUNS / task / 'mle' / 'final'}"
    half = TOKENS[task] // 2
    objectives = {
        "mle": [f"training.save_at_tokens={half}"],
        "filtering": ["objective.type=filtering", f"objective.threshold={FILTER_THRESHOLD[task]}"],
        "conditional": ["objective.type=conditional"],
        "unlikelihood": ["objective.type=unlikelihood"],
        "rwr": ["objective.type=rwr"],
        "awr": ["objective.type=awr", "objective.alpha=0.5"],
    }
    out = []
    # MLE and conditional training first, every seed, then the other objectives: cut short, the
    # experiment still has the paper's main comparison on every seed
    for group in (["mle", "conditional"], ["filtering", "unlikelihood", "rwr", "awr"]):
        for seed in [0, *seeds]:
            suffix = "" if seed == 0 else f"_seed{seed}"
            for name in group:
                extra = [] if name == "mle" and seed == 0 else [reference]  # mle seed 0: the reference
                out.append((name + suffix, [*objectives[name], f"training.seed={seed}", *extra]))
    for seed in [0, *seeds]:
        suffix = "" if seed == 0 else f"_seed{seed}"
        checkpoint = RUNS / task / f"mle{suffix}" / f"checkpoint-{half}"
        out.append(
            (
                f"finetune{suffix}",
                [
                    "objective.type=conditional",
                    f"training.init_from={checkpoint}",
                    f"training.skip_tokens={half}",
                    f"training.seed={seed}",
                    reference,
                ],
            )
        )
    for seed in [0, *seeds]:  # the control for finetune: the same restart, with MLE after it
        suffix = "" if seed == 0 else f"_seed{seed}"
        checkpoint = RUNS / task / f"mle{suffix}" / f"checkpoint-{half}"
        out.append(
            (
                f"mle_continued{suffix}",
                [
                    f"training.init_from={checkpoint}",
                    f"training.skip_tokens={half}",
                    f"training.seed={seed}",
                    reference,
                ],
            )
        )
    return out


def main(tasks: list[str], seeds: list[int], only: list[str] | None) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for task in tasks:
        for name, overrides in runs(task, seeds):
            if only and name not in only:
                continue
            out = RUNS / task / name
            if (out / "final" / "model.safetensors").is_file():
                print(f"{task}/{name}: done already", flush=True)
                continue
            sets = [f"training.tokens={TOKENS[task]}", *overrides]
            command = [sys.executable, "-m", "bayesalign.cli", "pretrain", str(HERE / f"{task}.yaml")]
            command += ["--out", str(out)] + [a for s in sets for a in ("--set", s)]
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True)
            seconds = time.perf_counter() - started
            print(json.dumps({"task": task, "run": name, "wall_s": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="*", default=["pep8", "pii", "pii_dense"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[], help="extra seeds of the six objectives")
    parser.add_argument("--only", nargs="*", help="these runs only (e.g. to spread them over processes)")
    args = parser.parse_args()
    main(args.tasks, args.seeds, args.only)
