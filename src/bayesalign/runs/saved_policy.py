"""A policy saved by a training run, loaded back: as the proposal q of `bayesalign sample`, or as
the model `bayesalign eval` measures. Only the folder and the prior are needed, so this sits on
the ground floor: sampling and evaluation import it, it imports neither."""

from __future__ import annotations

from pathlib import Path

from bayesalign.models import LanguageModel
from bayesalign.scorer_tilt import MARKER as TILTED
from bayesalign.scorer_tilt import ScorerTilt, tilted
from bayesalign.scorers import Scorer
from bayesalign.twisted import MARKER as TWISTED


class SavedPolicyError(ValueError):
    """The folder holds no saved policy, or one that cannot stand beside the prior."""


def proposal_folder(folder: str | Path) -> Path:
    """The model folder of a proposal: ``folder`` itself, or its ``final/`` when given a run folder.
    Checks only the files, so a wrong path is reported before any model is loaded."""
    path = Path(folder)
    if (path / "final").is_dir():
        path = path / "final"
    if not path.is_dir():
        raise SavedPolicyError(f"proposal folder {folder} does not exist (pass a run's final/ folder)")
    if not any((path / name).exists() for name in ("config.json", "adapter_config.json", TWISTED)):
        raise SavedPolicyError(
            f"proposal folder {path} holds no model (no config.json, adapter_config.json or "
            f"{TWISTED}); pass a run's final/ folder"
        )
    return path


def load_proposal(
    folder: str | Path, prior: LanguageModel, scorers: dict[str, Scorer] | None = None
) -> LanguageModel:
    """A trained policy from a run's ``final/`` folder (or the run folder holding it), frozen, as a
    proposal for sampling from a target over ``prior``.

    Merged weights (a plain HF folder) and a learned twist (twisted.py) load directly; an
    adapter-only folder (LoRA saved with
    ``checkpoint.merge_lora: false``) is applied to a copy of the prior's weights. The tokenizer
    must be the prior's: P/q compares probabilities of the same token sequences. A policy saved
    with its scorer tilt (training.scorer_tilt) gets the tilt back, reading its scorer from
    ``scorers`` (the target's, by name).
    """
    model = _load_weights(folder, prior)
    path = proposal_folder(folder)
    if not (path / TILTED).exists():
        return model
    vocab = model.module.get_output_embeddings().weight.shape[0]
    return tilted(model, ScorerTilt.load(path, scorers or {}, model.tokenizer, vocab))


def _load_weights(folder: str | Path, prior: LanguageModel) -> LanguageModel:
    """The saved weights, without a tilt."""
    path = proposal_folder(folder)
    if (path / "adapter_config.json").exists():
        import copy

        from peft import PeftModel

        base = copy.deepcopy(prior.module)
        if hasattr(base, "disable_adapter"):  # the prior is a LoRA-wrapped module: take its base
            base = base.get_base_model()
        module = PeftModel.from_pretrained(base, path).eval()
        module.requires_grad_(False)
        return LanguageModel(module, prior.tokenizer, prior.prompt, chat=prior.chat)
    dtype = next(prior.module.parameters()).dtype
    proposal = LanguageModel.from_pretrained(path, prior.prompt, dtype=dtype)
    proposal.chat = prior.chat  # the prior's template: final/ saved the prior's tokenizer
    proposal.module.requires_grad_(False)
    if proposal.tokenizer.get_vocab() != prior.tokenizer.get_vocab():
        raise SavedPolicyError(
            f"the proposal in {path} has another tokenizer than the prior "
            f"({len(proposal.tokenizer)} vs {len(prior.tokenizer)} tokens); P/q needs the same one"
        )
    return proposal
