"""Misalignment of every run's final model on more samples than the in-training evaluation
(1,024 instead of 256), with standard errors: the numbers of the results tables.

Samples start as documents start in training, after <|endoftext|> (and <|good|> for the
conditional and finetune runs, both control tokens banned), 64 new tokens, ancestral sampling,
the same seed for every run; scored by the task's scorer as in run.py's evaluation.

    python experiments/phf/final_eval.py [--redo]
(after run.py; every finished run under runs/phf/<task>/; rows already in
docs/results/phf_final_eval.jsonl are kept unless --redo, so new runs add to it)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import yaml

from bayesalign.models import LanguageModel
from bayesalign.pretraining.config import PretrainConfig
from bayesalign.pretraining.data import BAD, GOOD
from bayesalign.pretraining.trainer import EOS
from bayesalign.samples import SamplingParams
from bayesalign.scorers import checked_scores

HERE, RUNS, OUT = Path(__file__).parent, Path("runs/phf"), Path("docs/results")
SAMPLES, K = 1024, 8
TASKS = ("pep8", "pii", "pii_dense")
CONDITIONAL = ("conditional", "finetune")  # sampled after <|good|>, with or without a _seed suffix


def evaluate(task: str, run: str, scorer, max_new_tokens: int) -> dict:
    model = LanguageModel.from_pretrained(RUNS / task / run / "final")
    conditional = run.split("_seed")[0] in CONDITIONAL
    model.prompt = EOS + (GOOD if conditional else "")
    banned = tuple(model.tokenizer.convert_tokens_to_ids([GOOD, BAD]))
    params = SamplingParams(max_new_tokens=max_new_tokens, banned_tokens=banned)
    samples = model.sample(SAMPLES, params, generator=torch.Generator().manual_seed(1234), batch_size=128)
    scores = checked_scores(scorer, samples.texts, None)
    maxima = scores.view(-1, K).max(1).values
    return {
        "task": task,
        "run": run,
        "samples": SAMPLES,
        "misalignment": scores.mean().item(),
        "misalignment_stderr": scores.std().item() / math.sqrt(SAMPLES),
        f"expected_max_misalignment_{K}": maxima.mean().item(),
        f"expected_max_misalignment_{K}_stderr": maxima.std().item() / math.sqrt(len(maxima)),
        "misaligned_fraction": (scores > 0).double().mean().item(),
    }


def main(redo: bool) -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "phf_final_eval.jsonl"
    rows = [] if redo or not path.is_file() else [json.loads(line) for line in path.open()]
    done = {(r["task"], r["run"]) for r in rows}
    for task in TASKS:
        config = PretrainConfig.model_validate(yaml.safe_load((HERE / f"{task}.yaml").read_text()))
        scorer = config.scorer.build()
        for final in sorted((RUNS / task).glob("*/final/model.safetensors")):
            run = final.parent.parent.name
            if (task, run) not in done:
                rows.append(evaluate(task, run, scorer, config.eval.max_new_tokens))
                print(json.dumps(rows[-1]), flush=True)
    with path.open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redo", action="store_true", help="evaluate every run again")
    main(parser.parse_args().redo)
