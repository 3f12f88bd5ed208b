"""`bayesalign eval`: measure a trained policy (or the prior) against a config's target without
training: the very metrics of a training run's evaluations (IS estimates of Z, KL and moments,
satisfaction, diversity, perplexity and misalignment where configured, exact values on toy
spaces), on ``eval.samples`` fresh samples."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from bayesalign.config import Config, build_models, build_objective, build_target
from bayesalign.moments import MomentFit
from bayesalign.samplers import load_proposal, proposal_folder
from bayesalign.training.run import RunFolder
from bayesalign.training.trainer import Trainer


def evaluate_policy(config: Config, policy: str | Path | None, console: Console) -> dict[str, float]:
    """Metrics of the policy saved at ``policy`` (a run folder or its final/; None: the prior
    itself). A run folder's target.json supplies its fitted λ, so a distributional target is
    the one the run trained towards rather than a new fit."""
    folder = proposal_folder(policy) if policy is not None else None
    with console.status("loading models"):
        _, prior = build_models(
            config.model.model_copy(update={"lora": None}), config.prompt, config.training.seed
        )
        model = prior.trainable_copy() if folder is None else load_proposal(folder, prior)
    # the Trainer's bookkeeping wants trainable weights; nothing here takes a step
    model.module.requires_grad_(True)
    run = None if folder is None else folder.parent if folder.name == "final" else folder
    saved = RunFolder(run).read_target() if run is not None else None
    fitted = MomentFit.from_dict(saved["fit"]) if saved and saved.get("fit") else None
    with console.status("building the target"):
        target = build_target(config.target, prior, config.sampling, fitted=fitted)
    trainer = Trainer(model, target, build_objective(config.training, target), config)
    with console.status("evaluating") as status:
        trainer.status = lambda phase: status.update(phase)
        return trainer.evaluate()
