"""A whole training run from a config: build the objects, resume if asked, train with progress,
write final/. The CLI and Python users share this one path."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bayesalign.config import Config, ConfigError, build_models, build_objective, build_target, parse_config
from bayesalign.console import before_after_table, headline
from bayesalign.model_card import write_model_card
from bayesalign.models import LanguageModel
from bayesalign.moments import MomentFit
from bayesalign.progress import progress_bar, show_record
from bayesalign.report import build_report
from bayesalign.sampling_backends import require_vllm
from bayesalign.targets import Target, Tilt
from bayesalign.training.distributed import Distributed
from bayesalign.training.run import RunFolder
from bayesalign.training.tracking import log_record, make_tracker
from bayesalign.training.trainer import Trainer

HEADLINE = ("satisfaction_pi", "kl_p_pi", "kl_pi_p", "kl_pi_a", "kl_p_a")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b, where = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, where + ".")
        elif a != b:
            out.append(f"{where}: {a!r} -> {b!r}")
    return out


def prepare_run(config: Config, out: str | Path, resume: bool) -> RunFolder:
    """Check the run folder before any work: a new run needs a fresh folder, a resumed one the
    same configuration (only training.steps may change)."""
    run = RunFolder(out)
    resolved = config.model_dump(mode="json")
    if resume:
        if not run.config_file.exists():
            raise ConfigError(f"--resume: {run.path} holds no run (no config.yaml)")
        # parsed again, so that options added since the run was written compare at their defaults
        old = parse_config(run.read_config()).model_dump(mode="json")
        old["training"]["steps"] = resolved["training"]["steps"]
        changed = _differences(old, resolved)
        if changed:
            raise ConfigError("--resume with a different config:\n  " + "\n  ".join(changed))
    elif run.metrics_file.exists() or run.latest_checkpoint() is not None:
        raise ConfigError(f"{run.path} already holds a run; pass --resume or choose another --out")
    run.create().write_config(resolved)
    return run


LOW_ESS = 100  # below this effective sample size, the fitted moments are shaky: say so


def prepare_target(
    config: Config, prior: LanguageModel, run: RunFolder, resume: bool, console: Console
) -> Target:
    """Build the target; λ of distributional constraints is fitted once per run and written to
    target.json, which a resumed run reads back, so that it trains towards the very same target."""
    saved = run.read_target() if resume else None
    fitted = MomentFit.from_dict(saved["fit"]) if saved and saved.get("fit") else None
    fitting = bool(config.target.distributional) and fitted is None
    phase = f"fitting λ on {config.target.fit.samples} samples" if fitting else "building target"
    with console.status(phase):
        target = build_target(config.target, prior, config.sampling, fitted=fitted)
    fit = target.moment_fit
    if saved is None:
        run.write_target({"target": target.describe(), "fit": None if fit is None else fit.to_dict()})
    if fit is not None:
        print_fit(fit, console, "read back from target.json" if fitted is not None else "")
    return target


def print_fit(fit: MomentFit, console: Console, note: str = "") -> None:
    table = Table(title=f"distributional constraints: {fit.summary()}" + (f"; {note}" if note else ""))
    for column in ("feature", "wanted E_p[φ]", "achieved", "λ"):
        table.add_column(column, justify="left" if column == "feature" else "right")
    for f in fit.features:
        lam = f"{f.lam:.4g}" + (f" ± {f.lam_stderr:.2g}" if f.lam_stderr is not None else "")
        table.add_row(f.name, f"{f.moment:.4g}", f"{f.achieved:.4g}", lam)
    console.print(table)
    if fit.ess is not None and fit.ess < LOW_ESS:
        console.print(
            f"[yellow]warning:[/] the fitted target rests on an effective sample size of only "
            f"{fit.ess:.0f}: raise target.fit.samples for a more reliable λ"
        )


def train(
    config: Config, out: str | Path, *, resume: bool = False, console: Console | None = None
) -> Trainer:
    """Train as the config says, writing everything to the run folder ``out``. Under
    ``accelerate launch`` every process runs this; the main one alone writes and prints."""
    dist = Distributed(config.training.sample_shards, config.training.mixed_precision)
    if config.sampling.backend == "vllm":
        require_vllm()
    console = (console or Console(stderr=True)) if dist.is_main else Console(quiet=True)
    dist.main_first(lambda: prepare_run(config, out, resume))
    run = RunFolder(out, writable=dist.is_main)
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    with console.status("loading models"):
        policy, prior = build_models(config.model, config.prompt, config.training.seed)
    # the main process fits λ (if any) and writes target.json; the others read it back
    target = dist.main_first(lambda: prepare_target(config, prior, run, resume, console))
    if not dist.is_main:
        target = prepare_target(config, prior, run, True, console)
    trainer = Trainer(policy, target, build_objective(config.training, target), config, run, dist)
    if resume and trainer.resume():
        console.print(f"resumed at step {trainer.state.step}")
    with progress_bar(console, "train") as progress:
        task = progress.add_task(
            "train", total=config.training.steps, completed=trainer.state.step, phase="", info=""
        )
        trainer.status = lambda phase: progress.update(task, phase=phase)

        moments = tuple(f"moment_{f.scorer.name}_pi" for f in target.features)
        moments += tuple(f"score_{t.scorer.name}_pi" for t in target.terms if isinstance(t, Tilt))

        tracker = None
        if config.tracking is not None and dist.is_main:
            tracker = make_tracker(config.tracking.backend, config.tracking.project, run)

        def on_record(record: dict) -> None:
            if tracker is not None:
                log_record(tracker, record, run)
            progress.update(task, completed=record["step"], info=headline(record, HEADLINE + moments))
            show_record(console, f"step {record['step']}", record, HEADLINE + moments)

        trainer.fit(on_record=on_record, on_step=lambda step: progress.update(task, completed=step))
        if tracker is not None:
            tracker.finish()
    if dist.is_main:
        merged = config.checkpoint.merge_lora
        policy.save_pretrained(run.final, merge_lora=merged)
        records = run.read_metrics()
        write_model_card(run.final, config, target, records, merged=merged, seq2seq=policy.is_seq2seq)
        console.print(before_after_table(records, HEADLINE + moments))
        if config.eval.report:
            build_report([run.path], run.path / "report.html", title=f"bayesalign: {run.path.name}")
    dist.close()
    return trainer
