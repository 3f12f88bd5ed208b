"""Did conditional training learn its control tokens? Sample the conditional model after
<|good|> and after <|bad|> (both tokens banned while sampling, as in evaluation) and compare the
misalignment of the two sets of samples: the model learned the tokens' meaning iff <|bad|>
samples are clearly worse.

Every conditional-training run of each task is checked: conditional, finetune, and
conditional_seed<s> where run.py --seeds made them.

    python experiments/phf/control_check.py   (after run.py; prints one JSON line per task)
"""

from __future__ import annotations

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

HERE, RUNS = Path(__file__).parent, Path("runs/phf")


def main() -> None:
    torch.set_num_threads(1)
    for task in ("pep8", "pii", "pii_dense"):
        config = PretrainConfig.model_validate(yaml.safe_load((HERE / f"{task}.yaml").read_text()))
        scorer = config.scorer.build()
        result: dict = {"task": task}
        runs = ["conditional", "finetune"] + sorted(p.name for p in (RUNS / task).glob("conditional_seed*"))
        for run in runs:
            model = LanguageModel.from_pretrained(RUNS / task / run / "final")
            banned = tuple(model.tokenizer.convert_tokens_to_ids([GOOD, BAD]))
            params = SamplingParams(max_new_tokens=config.eval.max_new_tokens, banned_tokens=banned)
            for token in (GOOD, BAD):
                model.prompt = EOS + token
                samples = model.sample(
                    512, params, generator=torch.Generator().manual_seed(0), batch_size=128
                )
                scores = checked_scores(scorer, samples.texts, None)
                stderr = scores.std().item() / math.sqrt(len(scores))
                result[f"{run} after {token}"] = {
                    "misalignment": scores.mean().item(),
                    "stderr": stderr,
                    "misaligned_fraction": (scores > 0).double().mean().item(),
                }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
