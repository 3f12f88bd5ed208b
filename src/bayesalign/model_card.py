"""The model card written to a run's final/ folder, as the Hugging Face hub reads one
(`huggingface_hub.ModelCard`): metadata (base model, library, tags, pipeline), what was aligned
to what and how, the numbers before and after with the kind of each (exact, exact-sample or
importance-sampling estimate), and how to load and run it."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from bayesalign.atomic import write_atomic
from bayesalign.builtin_models import BUILTIN
from bayesalign.config import Config
from bayesalign.console import how_measured, pick
from bayesalign.runs import metric_names
from bayesalign.targets import Target


def base_model_id(name: str) -> str | None:
    """The hub id of the base model, for the card's ``base_model``: built-in models name the
    model they were converted from; a local folder or a toy model has none."""
    if name.startswith("builtin:"):
        return BUILTIN[name.removeprefix("builtin:")].hub_id
    if name == "toy" or Path(name).expanduser().exists():
        return None
    return name


def _cell(record: dict, key: str) -> tuple[str, str] | None:
    """(value ± s.e., how it was measured) of ``key``, exact where the run computed it."""
    found = pick(record, key)
    if found is None:
        return None
    name, value, stderr = found
    return f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else ""), how_measured(name)


def model_card(
    config: Config,
    target: Target,
    records: list[dict],
    *,
    merged: bool,
    seq2seq: bool = False,
    folder: Path | str = ".",
) -> ModelCard:
    """The card of final/ (``folder``, written into its loading example)."""
    first, last = records[0], records[-1]
    training = config.training
    data = ModelCardData(
        base_model=base_model_id(config.model.name),
        library_name="transformers" if merged else "peft",
        pipeline_tag="text2text-generation" if seq2seq else "text-generation",
        tags=["bayesalign", training.method, "alignment", "distribution-matching"],
    )
    fit = target.moment_fit
    moments = ""
    if fit is not None:
        lines = "\n".join(
            f"- E_p[{f.name}] = {f.moment:g} wanted, {f.achieved:.4g} achieved, λ = {f.lam:.4g}"
            for f in fit.features
        )
        moments = f"\nDistributional constraints (λ fitted before training):\n\n{lines}\n"
    rows = []
    for key in (*metric_names.HEADLINE, *metric_names.reward_scores(last)):
        before, after = _cell(first, key), _cell(last, key)
        if after is not None:
            rows.append(f"| {key} | {before[0] if before else '–'} | {after[0]} | {after[1]} |")
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    path = str(Path(folder).resolve())
    if config.training.method == "twist":
        # not a transformers folder: prior/ + twist/ + head (twisted.py); the library loads it
        load = (
            "from bayesalign import LanguageModel, SamplingParams\n\n"
            f"model = LanguageModel.from_pretrained({path!r}, {config.prompt!r})\n"
            + (
                "model.chat = True  # trained on the chat template\n"
                if config.model.prompt_format == "chat"
                else ""
            )
            + f"print(model.sample(4, SamplingParams({config.sampling.max_new_tokens})).texts)"
        )
    elif merged:
        # trained on chat prompts: the pipeline applies the same template to a list of messages
        chat = config.model.prompt_format == "chat"
        prompt = f'[{{"role": "user", "content": {config.prompt!r}}}]' if chat else repr(config.prompt)
        reply = '[-1]["content"]' if chat else ""  # a chat pipeline returns the whole conversation
        load = (
            f"from transformers import pipeline\n\npath = {path!r}\n"
            f'generate = pipeline("{data.pipeline_tag}", model=path)\n'
            f"print(generate({prompt}, max_new_tokens={config.sampling.max_new_tokens}, "
            f'do_sample=True)[0]["generated_text"]{reply})'
        )
    else:
        # a built-in prior was the hub model's Q4_1 GGUF, dequantised: the card loads the hub model
        base_name = base_model_id(config.model.name) or config.model.name
        load = (
            f"from peft import PeftModel\nfrom transformers import {auto}, AutoTokenizer\n\n"
            f"path = {path!r}\nbase = {auto}.from_pretrained({base_name!r})\n"
            "model = PeftModel.from_pretrained(base, path)\ntokenizer = AutoTokenizer.from_pretrained(path)"
        )
    lora = " with LoRA" if config.model.lora else ""
    if config.model.name.startswith("builtin:") and data.base_model:
        lora += f" (the Q4_1 GGUF of {data.base_model} that ships in a pip package, dequantised)"
    contexts = f" (contexts from {config.contexts.train})" if config.contexts else ""
    body = f"""# Aligned with bayesalign

- Base model (the prior a): `{config.model.name}`{lora}
- Prompt: {config.prompt!r}{contexts}
- Target (the posterior p ∝ …): `{target.describe()}`
- Method: `{training.method}`, {training.steps} steps × {training.batch_size} samples, lr {training.lr:g},
  proposal `{training.proposal.update}`, seed {training.seed}
{moments}
## Metrics (step 0 → step {last.get("step")})

| metric | before | after | how |
|---|---|---|---|
{chr(10).join(rows)}

{_estimates_note(last)}

## Load and run it

```python
{load}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _estimates_note(last: dict) -> str:
    """What kind of number each row is: exact, exact-sample (pool) or importance-sampling."""
    notes = ["π's satisfaction, scores and KL(π‖a) are measured on π's own samples."]
    if "exact_kl_p_pi" in last:
        notes.append("exact_* values are exact: the whole sequence space was enumerated.")
    if metric_names.POOL_KL_P_PI in last:
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


def write_model_card(
    folder: Path, config: Config, target: Target, records: list[dict], *, merged: bool, seq2seq: bool
) -> None:
    card = model_card(config, target, records, merged=merged, seq2seq=seq2seq, folder=folder)
    write_atomic(folder / "README.md", str(card))
