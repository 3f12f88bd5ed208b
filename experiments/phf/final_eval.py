"""Misalignment of every run's final model on more samples than the in-training evaluation
(1,024 instead of 256), with standard errors: the numbers of the results tables.

Samples start as documents start in training, after <|endoftext|> (and <|good|> for the
conditional and finetune runs, both control tokens banned), 64 new tokens, ancestral sampling,
the same seed for every run; scored by the task's scorer as in run.py's evaluation.

    python experiments/phf/final_eval.py   (after run.py; writes docs/results/phf_final_eval.jsonl)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import yaml

from bayesalign.models import LanguageModel, SamplingParams
from bayesalign.pretraining.config import PretrainConfig
from bayesalign.pretraining.data import BAD, GOOD
from bayesalign.pretraining.trainer import EOS
from bayesalign.scorers import checked_scores

HERE, RUNS, OUT = Path(__file__).parent, Path("runs/phf"), Path("docs/results")
SAMPLES, K = 1024, 8
RUN_NAMES = [
    "mle",
    "filtering",
    "conditional",
    "unlikelihood",
    "rwr",
    "awr",
    "mle_half",
    "finetune",
    "mle_seed1",
]


def evaluate(task: str, run: str, scorer, max_new_tokens: int) -> dict:
    model = LanguageModel.from_pretrained(RUNS / task / run / "final")
    conditional = run in ("conditional", "finetune")
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


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in ("pep8", "pii"):
        config = PretrainConfig.model_validate(yaml.safe_load((HERE / f"{task}.yaml").read_text()))
        scorer = config.scorer.build()
        for run in RUN_NAMES:
            if (RUNS / task / run / "final" / "model.safetensors").is_file():
                rows.append(evaluate(task, run, scorer, config.eval.max_new_tokens))
                print(json.dumps(rows[-1]), flush=True)
    with (OUT / "phf_final_eval.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
