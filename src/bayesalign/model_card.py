"""The model card written to a run's final/ folder: what was aligned to what, how, with what
result, and how to load it."""

from __future__ import annotations

from pathlib import Path

from bayesalign.atomic import write_atomic
from bayesalign.config import Config
from bayesalign.report import LEADING
from bayesalign.targets import Target


def model_card(
    config: Config, target: Target, records: list[dict], *, merged: bool, seq2seq: bool = False
) -> str:
    """Markdown for final/README.md: base model, target, method, metrics before and after."""
    first, last = records[0], records[-1]
    fit = target.moment_fit
    moments = ""
    if fit is not None:
        moments = "\n".join(
            f"- E_p[{f.name}] = {f.moment:g} wanted, {f.achieved:.4g} achieved, λ = {f.lam:.4g}"
            for f in fit.features
        )
        moments = f"\nDistributional constraints (λ fitted before training):\n\n{moments}\n"
    scores = sorted(k for k in last if k.startswith("score_") and k.endswith("_pi"))
    wanted = [m for m in (*LEADING, *scores) if m in last]
    rows = "\n".join(f"| {m} | {_fmt(first.get(m))} | {_fmt(last.get(m))} |" for m in wanted)
    training = config.training
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    load = (
        f"from transformers import {auto}, AutoTokenizer\nmodel = {auto}.from_pretrained(path)"
        if merged
        else f"from peft import PeftModel\nfrom transformers import {auto}, AutoTokenizer\n"
        f"model = PeftModel.from_pretrained({auto}.from_pretrained({config.model.name!r}), path)"
    )
    return f"""---
library_name: transformers
tags: [bayesalign]
---
# Aligned with bayesalign

- Base model (the prior a): `{config.model.name}`{" with LoRA" if config.model.lora else ""}
- Prompt: {config.prompt!r}{" (contexts from " + str(config.contexts.train) + ")" if config.contexts else ""}
- Target (the posterior p ∝ …): `{target.describe()}`
- Method: `{training.method}`, {training.steps} steps × {training.batch_size} samples, lr {training.lr:g},
  proposal `{training.proposal.update}`, seed {training.seed}
{moments}
## Metrics (step 0 → step {last.get("step")})

| metric | before | after |
|---|---|---|
{rows}

{_estimates_note(last)}

## Load it

```python
path = "path/to/this/folder"
{load}
tokenizer = AutoTokenizer.from_pretrained(path)
```
"""


def _estimates_note(last: dict) -> str:
    """What kind of number each row is: exact, exact-sample (pool) or importance-sampling."""
    notes = ["π's satisfaction, scores and KL(π‖a) are measured on π's own samples."]
    if "exact_kl_p_pi" in last:
        notes.append("exact_* values are exact: the whole sequence space was enumerated.")
    if "pool_kl_p_pi" in last:
        notes.append(
            f"pool_* values are estimates from {last['pool_accepted']:.0f} exact posterior samples "
            f"(rejection from {last['pool_size']:.0f} prior samples); frontier_excess = KL(π‖a) / the "
            "least KL(π‖a) any model needs for π's satisfaction (1 = optimal)."
        )
    ess = last.get("ess")
    notes.append(
        "kl_p_pi, tv_p_pi and log_z are importance-sampling estimates from the proposal q"
        + (f" with an effective sample size of {ess:.0f}" if ess is not None else "")
        + (" — too few to trust (below 30)." if ess is not None and ess < 30 else ".")
    )
    return "\n".join(f"- {n}" for n in notes)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def write_model_card(
    folder: Path, config: Config, target: Target, records: list[dict], *, merged: bool, seq2seq: bool
) -> None:
    card = model_card(config, target, records, merged=merged, seq2seq=seq2seq)
    write_atomic(folder / "README.md", card)
