"""One token budget's PHF results, per objective over its seeds: misalignment of the final models
(final_eval.py's 1,024 samples; after <|good|> for conditional runs, both control tokens banned),
its ratio to MLE's (the MLE runs of the same variant: conditional_untied against mle_untied) and
the difference in standard errors of the seed means (inside 2 s.e.: no difference), the
conditional runs' misalignment with <|good|> at every segment and after <|bad|>, and the fair LM
loss (held-out text summed over control tokens at segment starts) at the end.

    python experiments/phf/budget_table.py docs/results/phf_final_eval_pii_dense_1m.jsonl \
        runs/phf_long/pii_dense
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch

from bayesalign import estimators as est
from bayesalign.estimators import Estimate


def mean_se(values: list[float]) -> Estimate:
    """Mean ± s.e. over seeds (`estimators.mean`)."""
    return est.mean(torch.tensor(values, dtype=torch.float64))


evals, runs = Path(sys.argv[1]), Path(sys.argv[2])
groups: dict[str, list[dict]] = defaultdict(list)
with evals.open() as f:
    for line in f:
        row = json.loads(line)
        with (runs / row["run"] / "metrics.jsonl").open() as m:
            last = [json.loads(x) for x in m][-1]
        row["fair_loss"] = last.get("heldout_loss_marginal", last["heldout_loss"])
        row["p_bad_after_eos"] = last.get("p_bad_after_eos")
        groups[row["run"].rsplit("_seed", 1)[0]].append(row)


def reference(name: str) -> Estimate:
    """MLE's misalignment (mean, s.e. over seeds) for the variant of run group ``name``."""
    variant = name.split("_", 1)[1] if "_" in name else ""
    key = f"mle_{variant}" if variant and f"mle_{variant}" in groups else "mle"
    return mean_se([r["misalignment"] for r in groups[key]])


print(
    "| objective | seeds | misalignment (PII/char) | × MLE | − MLE, in s.e. | per seed | "
    "<\\|good\\|> every segment | after <\\|bad\\|> | fair LM loss | P(<\\|bad\\|> \\| EOS) |"
)
print("|---|---|---|---|---|---|---|---|---|---|")
for name, rows in groups.items():
    mis, mle = mean_se([r["misalignment"] for r in rows]), reference(name)
    is_mle = name.split("_")[0] == "mle"
    diff = (mis.value - mle.value) / math.hypot(mis.stderr, mle.stderr) if not is_mle else float("nan")
    per_seed = ", ".join(f"{r['misalignment']:.2e}" for r in rows)
    conditional = "after_bad_misalignment" in rows[0]
    every = f"{mean_se([r['good_every_segment_misalignment'] for r in rows]):.2e}" if conditional else "–"
    bad = f"{mean_se([r['after_bad_misalignment'] for r in rows]):.2e}" if conditional else "–"
    p_bad = f"{mean_se([r['p_bad_after_eos'] for r in rows]):.3f}" if conditional else "–"
    print(
        f"| {name} | {len(rows)} | {mis:.2e} | {mis.value / mle.value:.2f} | "
        f"{'–' if is_mle else f'{diff:+.1f}'} | {per_seed} | {every} | {bad} | "
        f"{mean_se([r['fair_loss'] for r in rows]):.3f} | {p_bad} |"
    )
