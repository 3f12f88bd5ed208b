"""What each ``bayesalign`` command does, once its arguments are parsed (cli.py): load the
config, build the objects, call the one public function that does the work, print. Only the
standard library is imported here at start; each command imports the rest when it runs."""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from bayesalign.sampling import QRSTable, SampleArgs


def run_train(args: argparse.Namespace, console: Console) -> None:
    from bayesalign.config import load_config
    from bayesalign.session import train

    config = load_config(args.config, args.set)
    train(config, args.out, resume=args.resume, console=console)
    console.print(f"run written to {args.out} (metrics.jsonl, samples/, final/)")


def run_compare(args: argparse.Namespace, console: Console) -> None:

    from bayesalign.compare import compare
    from bayesalign.config import apply_overrides
    from bayesalign.config.loading import read_yaml_file

    raw = apply_overrides(read_yaml_file(args.config), args.set)
    compare(
        raw,
        args.methods.split(","),
        args.seeds,
        args.out,
        grad_samples=args.grad_samples,
        console=console,
        config_folder=args.config.parent,
    )
    console.print(f"comparison written to {args.out} (summary.md, summary.json, one folder per run)")


def _load_schema_config(args: argparse.Namespace, schema: type) -> Any:
    """A pretraining or red-teaming config: read, overridden, validated against ``schema`` and
    its callable scorers imported, as `load_config` does for training configs."""
    from pydantic import ValidationError

    from bayesalign.config import ConfigError, apply_overrides
    from bayesalign.config.loading import format_validation_error, import_callables, read_yaml_file

    raw = apply_overrides(read_yaml_file(args.config), args.set)
    try:
        config = schema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    import_callables(config, args.config.parent)
    return config


def run_pretrain(args: argparse.Namespace, console: Console) -> None:
    from bayesalign.config import ConfigError
    from bayesalign.console import headline
    from bayesalign.pretraining.config import PretrainConfig
    from bayesalign.pretraining.corpus import CorpusError
    from bayesalign.pretraining.trainer import Pretrainer
    from bayesalign.progress import progress_bar, show_record
    from bayesalign.runs import RunFolder

    config = _load_schema_config(args, PretrainConfig)
    if RunFolder(args.out).metrics_file.exists():
        raise ConfigError(f"{args.out} already holds a run; choose another --out")
    try:
        with console.status("segmenting, scoring and packing the corpus; training the tokenizer"):
            trainer = Pretrainer(config, args.out)
    except CorpusError as err:
        raise ConfigError(str(err)) from None
    console.print(f"{len(trainer.blocks)} training blocks of {config.model.block_size} tokens")
    shown = ("train_loss", "heldout_loss", "misalignment", "misaligned_fraction")
    with progress_bar(console, f"pretrain {config.objective.type}") as progress:
        task = progress.add_task("pretrain", total=config.training.tokens, phase="tokens", info="")

        def show(record: dict) -> None:
            progress.update(task, completed=record["tokens"], info=headline(record, shown))
            show_record(console, f"tokens {record['tokens']:,}", record, shown)

        trainer.train(on_record=show)
    console.print(f"run written to {args.out} (metrics.jsonl, samples/, final/)")


def run_red_team(args: argparse.Namespace, console: Console) -> None:
    from rich.markup import escape

    from bayesalign.config import ConfigError
    from bayesalign.pretraining.config import RedTeamConfig

    config = _load_schema_config(args, RedTeamConfig)
    if args.out.exists():
        raise ConfigError(f"{args.out} exists; choose another --out")
    try:
        with console.status("loading the models"):
            team = config.build()
    except ValueError as err:  # a banned token the model does not have
        raise ConfigError(str(err)) from None
    pool, records = team.run(config.prompts)
    args.out.mkdir(parents=True)
    for name, rows in (("pool", [vars(e) for e in pool]), ("rounds", records)):
        (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in records:
        console.print(
            escape(
                f"round {r['round']}: pool {r['pool_size']}, misalignment {r['pool_misalignment']:.4g} "
                f"(max {r['pool_max_misalignment']:.4g}: {r['most_misaligned_prompt']!r})"
            )
        )
    console.print(f"red teaming written to {args.out} (pool.jsonl, rounds.jsonl)")


def run_eval(args: argparse.Namespace, console: Console) -> None:
    from rich.table import Table

    from bayesalign.config import load_config
    from bayesalign.evaluation import evaluate_policy

    config = load_config(args.config, args.set)
    metrics = evaluate_policy(config, args.policy, console)
    table = Table(title=f"{args.policy or 'the prior'} against the target of {args.config}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if not name.endswith("_stderr"):
            stderr = metrics.get(f"{name}_stderr")
            table.add_row(name, f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else ""))
    console.print(table)
    if args.out is not None:
        args.out.write_text(json.dumps(metrics, indent=2) + "\n")
        console.print(f"metrics written to {args.out}")


def run_report(args: argparse.Namespace, console: Console) -> None:
    from bayesalign.report import build_report

    out = args.out or Path(args.runs[0]) / "report.html"
    console.print(f"report written to {build_report(args.runs, out)}")


def run_push(args: argparse.Namespace, console: Console) -> None:
    from bayesalign.hub_push import final_folder, push_run

    with console.status(f"uploading {final_folder(args.run)} to {args.repo_id}"):
        url = push_run(args.run, args.repo_id, private=args.private)
    console.print(f"pushed {args.run} to {url}")


def run_demo(args: argparse.Namespace, console: Console) -> None:
    from bayesalign.config import load_config
    from bayesalign.run_summary import summarise
    from bayesalign.runs import RunFolder
    from bayesalign.session import train

    path = resources.files("bayesalign") / "configs" / "demo.yaml"
    with resources.as_file(path) as config_path:
        config = load_config(config_path, args.set)
    console.print(
        "[bold]bayesalign demo[/]: prior a = SmolLM2-135M-Instruct, evidence b(x) = "
        f"[VADER compound > 0.5], prompt {config.prompt!r}; π = a tilted token by token by VADER, its "
        "weights fitted by DPG's maximum likelihood on exact posterior samples (a posterior pool drawn "
        "from a, a third held out to measure KL(p‖π)), on the CPU"
    )
    started = time.perf_counter()
    args.out = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    train(config, args.out, resume=args.resume, console=console, table=False)
    summarise(RunFolder(args.out), console, time.perf_counter() - started)


# -- bayesalign sample ---------------------------------------------------------------------------
SAMPLE_FLAGS = ("method", "beta", "acceptance", "bound", "pool", "max_proposals", "seed")


def _sample_request(args: argparse.Namespace, config) -> SampleArgs:
    """The sampler's options, with every error that can be known before loading a model."""
    from bayesalign.config import ConfigError
    from bayesalign.config.sections import SamplerSection
    from bayesalign.sampling import SampleArgs

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.out.exists() and not args.overwrite:
        raise ConfigError(f"{args.out} already exists; pass --overwrite or choose another --out")
    options = SampleArgs(**(config.sample or SamplerSection()).model_dump())
    options.check_bound(
        trained_proposal=args.proposal is not None,
        ancestral=config.sampling.params().is_ancestral,
        reward=config.target.reward is not None,
        distributional=bool(config.target.distributional),
    )
    return options


def _qrs_table(table: QRSTable) -> Table:
    from rich.markup import escape
    from rich.table import Table

    title = f"quasi-rejection: acceptance and distance to p vs β (IS, {table.proposals:,} proposals)"
    out = Table(title=title)
    for name in ("β", "acceptance Z_β/β", "TV(p, p_β)", "KL(p‖p_β)"):
        out.add_column(escape(name), justify="right")
    for row in table.rows:
        mark = " ←" if row.beta == table.chosen else ""
        out.add_row(
            f"{row.beta:.4g}{mark}",
            f"{row.acceptance.value:.4f} ± {row.acceptance.stderr:.4f}",
            f"{row.tv.value:.4f} ± {row.tv.stderr:.4f}",
            f"{row.kl.value:.4f} ± {row.kl.stderr:.4f}",
        )
    return out


def run_sample(args: argparse.Namespace, console: Console) -> None:
    import torch
    import yaml

    from bayesalign.config import load_config
    from bayesalign.config.build import build_models, build_target
    from bayesalign.preflight import check_generation_fits
    from bayesalign.progress import progress_bar
    from bayesalign.runs.saved_policy import load_proposal, proposal_folder
    from bayesalign.sampling import SamplerStats, sample

    # flags are overrides of the config's sample section (dumped as YAML so every value round-trips)
    flags = [f"sample.{k}={yaml.safe_dump(v)}" for k in SAMPLE_FLAGS if (v := getattr(args, k)) is not None]
    config = load_config(args.config, [*args.set, *flags])
    options = _sample_request(args, config)
    folder = proposal_folder(args.proposal) if args.proposal is not None else None
    if config.training.threads:
        torch.set_num_threads(config.training.threads)

    with console.status("loading models"):
        _, prior = build_models(config.model.model_copy(update={"lora": None}), config.prompt, options.seed)
    check_generation_fits(prior, config.sampling.max_new_tokens, [config.prompt])
    with console.status("building the target"):  # fits λ of distributional constraints, seeded
        target = build_target(config.target, prior, config.sampling)
    with console.status("loading the proposal"):
        proposal = prior if folder is None else load_proposal(folder, prior, target.scorers)

    pool = options.method == "importance"
    with progress_bar(console, f"sample {options.method}") as progress:
        phase = "drawing the pool" if pool else "accepted"
        if options.acceptance is not None:
            phase = f"pilot: {options.proposals_per_round} proposals to choose β"
        task = progress.add_task("sample", total=None, phase=phase, info="")

        def on_beta(beta: float) -> None:
            console.print(f"β = {beta:.4g}: estimated acceptance rate {options.acceptance:g} on the pilot")
            progress.update(task, phase="accepted")

        def on_round(st: SamplerStats) -> None:
            info = "" if pool else f"proposed {st.proposed:,}  acceptance {st.acceptance_rate:.3f}"
            progress.update(task, total=st.wanted, completed=min(st.accepted, st.wanted), info=info)

        run = sample(
            target,
            proposal,
            args.n,
            options,
            params=config.sampling.params(),
            batch_size=config.sampling.batch_size,
            on_round=on_round,
            on_beta=on_beta,
        )

    result = run.result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for row in result.scored.rows():
            f.write(json.dumps(row) + "\n")
    source = "q = a (the prior)" if folder is None else f"q = {folder}"
    if pool:
        console.print(
            f"wrote {args.n} samples to {args.out}: resampled ∝ P/q from {result.stats.proposed:,} "
            f"proposals of {source}; ESS {result.ess:.1f}, {result.distinct} distinct, "
            f"log Z ≈ {result.log_z:.4g}"
        )
        return
    st = result.stats
    console.print(
        f"wrote {args.n} samples to {args.out}: {run.rule.describe()}, proposal {source}; accepted "
        f"{st.accepted:,} of {st.proposed:,} proposals (rate {st.acceptance_rate:.4f} ± "
        f"{st.acceptance_stderr:.4f})"
    )
    if run.table is not None:
        console.print(_qrs_table(run.table))
        console.print(
            "TV and KL are 0 from the largest P/q seen on: a heavier weight not seen would make "
            "them positive. Rows at larger β are more faithful and slower."
        )
