"""A whole training run from a config: build the objects, resume if asked, train with progress,
write final/. The CLI and Python users share this one path."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from bayesalign.atomic import write_atomic
from bayesalign.config import Config, ConfigError, parse_config
from bayesalign.config.build import ContextSets, build_models, build_target, build_trainer, load_context_sets
from bayesalign.console import before_after_table, headline
from bayesalign.model_card import write_model_card
from bayesalign.models import DTYPES, LanguageModel
from bayesalign.moments import MomentFit
from bayesalign.preflight import check_generation_fits
from bayesalign.progress import Heartbeat, Status, progress_bar, show_record, with_count
from bayesalign.report import build_report
from bayesalign.runs import RunFolder
from bayesalign.runs.metric_names import HEADLINE, POOL_KL_P_PI
from bayesalign.sampling_backends import require_vllm
from bayesalign.targets import Target, Tilt
from bayesalign.training.distributed import Distributed
from bayesalign.training.tilt_stage import STAGE, keep_tilt, tilt_stage
from bayesalign.training.tracking import log_record, make_tracker
from bayesalign.training.trainer import Trainer


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
    """Check the run folder before any work, and take its lock (the caller releases it): a new
    run needs a folder that holds no run and nothing of the user's, a resumed one the same
    configuration (only training.steps may change, and not below the step already reached)."""
    run = RunFolder(out)
    if run.path.exists() and not run.path.is_dir():
        raise ConfigError(f"--out {run.path} is a file; a run needs a folder")
    if foreign := run.foreign_entries():
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(
            f"--out {run.path} is a folder that holds no bayesalign run ({shown}); writing the run "
            "there would overwrite files in it: choose a new or empty folder"
        )
    run.lock()
    try:
        _check_folder(config, run, resume)
        run.create().write_config(config.model_dump(mode="json"))
    except BaseException:
        run.unlock()
        raise
    return run


def _check_folder(config: Config, run: RunFolder, resume: bool) -> None:
    resolved = config.model_dump(mode="json")
    steps = run.checkpoint_steps()
    if not resume:
        if run.holds_run():
            raise ConfigError(f"{run.path} already holds a run; pass --resume or choose another --out")
        run.metrics_file.unlink(missing_ok=True)  # at most a torn line of a run that never started
        return
    if not run.config_file.exists():
        raise ConfigError(f"--resume: {run.path} holds no run (no config.yaml)")
    if not steps:  # nothing was kept: the run starts over, and may do so with another config
        run.target_file.unlink(missing_ok=True)
        return
    # parsed again, so that options added since the run was written compare at their defaults
    old = parse_config(run.read_config()).model_dump(mode="json")
    old["training"]["steps"] = resolved["training"]["steps"]
    changed = _differences(old, resolved)
    if changed:
        raise ConfigError("--resume with a different config:\n  " + "\n  ".join(changed))
    if config.training.steps < steps[-1]:
        raise ConfigError(
            f"--resume: training.steps {config.training.steps} is below step {steps[-1]}, which the "
            f"run has already reached (its newest checkpoint); its weights are from step {steps[-1]}"
        )


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
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    table: bool = True,
) -> Trainer:
    """Train as the config says, writing everything to the run folder ``out``. Under
    ``accelerate launch`` every process runs this; the main one alone writes and prints.
    ``table``: end with the before/after table (the demo prints its own)."""
    dist = Distributed(config.training.sample_shards, config.training.mixed_precision)
    if config.sampling.backend == "vllm":
        require_vllm()
    console = (console or Console(stderr=True)) if dist.is_main else Console(quiet=True)
    contexts = load_context_sets(config)  # a bad contexts file fails before the run folder exists
    locked = dist.main_first(lambda: prepare_run(config, out, resume))
    run = locked if locked is not None else RunFolder(out, writable=False)
    try:
        return _train(config, run, resume, console, dist, table, contexts)
    finally:
        run.unlock()


def _scorer_tilt(
    config: Config, trainer: Trainer, final: LanguageModel, chosen: dict | None, console: Console
) -> tuple[LanguageModel, dict, dict]:
    """training.scorer_tilt (training/tilt_stage.py): final/ holds the tilted π if its held-out
    KL(p‖π) is lower than the π it tilts; the selection says which, with both numbers."""
    untilted = chosen if chosen is not None else trainer.run.read_metrics()[-1]
    untilted = {"step": untilted["step"], POOL_KL_P_PI: untilted.get(POOL_KL_P_PI)}
    model, record = tilt_stage(trainer, config.training.scorer_tilt)
    kept = keep_tilt(record, untilted[POOL_KL_P_PI])
    tilted_kl = record.get(POOL_KL_P_PI, float("nan"))
    console.print(
        f"scorer tilt over π of step {untilted['step']}: held-out KL(p‖π) {tilted_kl:.4f} against "
        f"{untilted[POOL_KL_P_PI] or float('nan'):.4f} untilted; final/ holds "
        + ("the tilted π" if kept else "π without the tilt")
    )
    if not kept:
        return final, {**untilted, "scorer_tilt_kl": tilted_kl}, record
    selection = {"step": record["step"], POOL_KL_P_PI: tilted_kl, "stage": STAGE, "tilts": untilted}
    return model, selection, record


def _prompts(config: Config, contexts: ContextSets | None) -> list[str]:
    """What generation starts from: the prompt, or each context a conditional run will use."""
    return [config.prompt] if contexts is None else contexts.train + contexts.eval


def _shown(progress: Progress, task: TaskID, heartbeat: Heartbeat) -> Status:
    """The `Status` that shows a phase on the bar's task (on a terminal) and on the heartbeat
    (off one), with its count when it has one."""

    def status(phase: str, done: int | None = None, total: int | None = None) -> None:
        progress.update(task, phase=with_count(phase, done, total))
        heartbeat.update(phase=phase, part=None if total is None else (done or 0, total))

    return status


def _train(
    config: Config,
    run: RunFolder,
    resume: bool,
    console: Console,
    dist: Distributed,
    table: bool,
    contexts: ContextSets | None,
) -> Trainer:
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    # off a terminal, a line every 20 s from here on: loading and fitting take minutes too
    with Heartbeat(console, config.training.steps) as heartbeat:
        heartbeat.update(phase="loading models")
        with console.status("loading models"):
            policy, prior = build_models(
                config.model, config.prompt, config.training.seed, twist=config.training.twist
            )
        check_generation_fits(prior, config.sampling.max_new_tokens, _prompts(config, contexts))
        # the main process fits λ (if any) and writes target.json; the others read it back
        heartbeat.update(phase="building the target")
        target = dist.main_first(lambda: prepare_target(config, prior, run, resume, console))
        if not dist.is_main:
            target = prepare_target(config, prior, run, True, console)
        trainer = build_trainer(config, policy, target, run=run, distributed=dist, contexts=contexts)
        if sharded := trainer.describe_sharding():
            console.print(sharded)
        if resume:
            resumed = trainer.resume()
            console.print(
                f"resumed at step {trainer.state.step}" if resumed else "no checkpoint: starting over"
            )
        heartbeat.update(phase="training", done=trainer.state.step)
        with progress_bar(console, "train") as progress:
            task = progress.add_task(
                "train", total=config.training.steps, completed=trainer.state.step, phase="", info=""
            )

            trainer.status = _shown(progress, task, heartbeat)

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

            def on_step(step: int) -> None:
                progress.update(task, completed=step)
                heartbeat.update(done=step)

            trainer.fit(on_record=on_record, on_step=on_step)
        chosen = trainer.restore_best()  # every process: under FSDP, writing weights is collective
        final = policy.unsharded()  # and so is reading them (the policy itself without FSDP)
        if config.training.scorer_tilt is not None:
            with progress_bar(console, "scorer tilt") as progress:
                task = progress.add_task("scorer tilt", total=None, phase="", info="")
                trainer.status = _shown(progress, task, heartbeat)
                final, chosen, record = _scorer_tilt(config, trainer, final, chosen, console)
            show_record(console, f"step {record['step']} (scorer tilt)", record, HEADLINE + moments)
            if tracker is not None:
                log_record(tracker, record, run)
        if tracker is not None:
            tracker.finish()
    if dist.is_main:
        merged = config.checkpoint.merge_lora
        final.save_pretrained(run.final, merge_lora=merged, dtype=DTYPES[config.checkpoint.final_dtype])
        if chosen is not None:  # what final/ holds and why: the evaluated π closest to p
            last = run.read_metrics()[-1]
            chosen |= {"last_step": last["step"], f"last_{POOL_KL_P_PI}": last.get(POOL_KL_P_PI)}
            write_atomic(run.final / "selection.json", json.dumps(chosen, indent=1))
            console.print(
                f"final/ holds π of step {chosen['step']}: the lowest pool KL(p‖π) on the validation "
                f"split, {chosen['pool_kl_p_pi']:.4f} (last step {last['step']}: "
                f"{last.get('pool_kl_p_pi') or float('nan'):.4f})"
            )
        records = run.read_metrics()
        if chosen is not None:  # the card and the table describe the π that final/ holds
            records = [r for r in records if r["step"] <= chosen["step"]]
        write_model_card(run.final, config, target, records, merged=merged, seq2seq=policy.is_seq2seq)
        if table:
            console.print(before_after_table(records, HEADLINE + moments))
        if config.eval.report:
            build_report([run.path], run.path / "report.html", title=f"bayesalign: {run.path.name}")
    dist.close()
    return trainer
