"""`bayesalign eval`: measure a trained policy (or the prior, or any HF checkpoint with the
prior's tokenizer) against a config's target without training: the very metrics of a training
run's evaluations (IS estimates, posterior-pool estimates and the KL frontier point when
``eval.pool`` is set, satisfaction, diversity, extras, exact values on toy spaces), on
``eval.samples`` fresh samples. Two models evaluated on one config share one pool and one
estimator, so their numbers compare."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from bayesalign.config import Config
from bayesalign.config.build import build_evaluator, build_models, build_target, load_context_sets
from bayesalign.moments import MomentFit
from bayesalign.progress import Heartbeat, with_count
from bayesalign.runs import RunFolder
from bayesalign.runs.saved_policy import load_proposal, proposal_folder


def evaluate_policy(config: Config, policy: str | Path | None, console: Console) -> dict[str, float]:
    """Metrics of the policy saved at ``policy`` (a run folder, its final/, or a model folder;
    None: the prior itself). A run folder's target.json supplies its fitted λ, so a
    distributional target is the one the run trained towards rather than a new fit."""
    folder = proposal_folder(policy) if policy is not None else None
    contexts = load_context_sets(config)
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    with console.status("loading models"):
        _, prior = build_models(
            config.model.model_copy(update={"lora": None}), config.prompt, config.training.seed
        )
    run = None if folder is None else folder.parent if folder.name == "final" else folder
    saved = RunFolder(run).read_target() if run is not None and (run / "target.json").exists() else None
    fitted = MomentFit.from_dict(saved["fit"]) if saved and saved.get("fit") else None
    with console.status("building the target"):
        target = build_target(config.target, prior, config.sampling, fitted=fitted)
    with console.status("loading the policy"):
        model = prior if folder is None else load_proposal(folder, prior, target.scorers)
    with console.status("evaluating") as status, Heartbeat(console, None) as beat:

        def show(phase: str, done: int | None = None, total: int | None = None) -> None:
            status.update(with_count(phase, done, total))  # the spinner on a terminal
            beat.update(phase=phase, part=None if total is None else (done or 0, total))  # off one

        evaluator = build_evaluator(
            config,
            target,
            eval_contexts=None if contexts is None else contexts.eval,
            references=None if contexts is None else contexts.references,
            status=show,
        )
        metrics = evaluator.evaluate(model, prior)
    return metrics
