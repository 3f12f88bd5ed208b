"""Command line: ``bayesalign train CONFIG --out DIR [--set k=v ...] [--resume]`` and ``bayesalign demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bayesalign.config import ConfigError, load_config
from bayesalign.estimators import ZeroPartitionError
from bayesalign.exact import SpaceTooLargeError
from bayesalign.training import NonFiniteLossError, RunFolder
from bayesalign.training.session import train


def _train(args: argparse.Namespace, console: Console) -> None:
    config = load_config(args.config, args.set)
    train(config, args.out, resume=args.resume, console=console)
    console.print(f"run written to {args.out} (metrics.jsonl, samples/, final/)")


def _demo(args: argparse.Namespace, console: Console) -> None:
    path = resources.files("bayesalign") / "configs" / "demo.yaml"
    with resources.as_file(path) as config_path:
        config = load_config(config_path, args.set)
    console.print(
        "[bold]bayesalign demo[/]: prior a = SmolLM2-135M-Instruct, evidence b(x) = "
        f"[VADER compound > 0.5], prompt {config.prompt!r}; GDC++ with LoRA on the CPU"
    )
    started = time.perf_counter()
    args.out = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    train(config, args.out, resume=args.resume, console=console)
    summarise(RunFolder(args.out), console, time.perf_counter() - started)


def summarise(run: RunFolder, console: Console, seconds: float) -> None:
    """Before/after table from the run folder: the first and last evaluation."""
    records = run.read_metrics()
    before, after = records[0], records[-1]
    table = Table(title=f"before (step 0, π = a) vs after (step {after['step']}), {seconds:.0f} s")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    rows = [
        (escape("satisfaction E_π[b]"), "satisfaction_pi"),
        ("KL(p‖π)  (IS)", "kl_p_pi"),
        ("KL(π‖a)", "kl_pi_a"),
        ("−log Z  (= KL(p‖a), lower bound for KL(π‖a) at full satisfaction)", "minus_log_z"),
    ]
    for label, key in rows:
        table.add_row(
            label,
            *(f"{r[key]:.3f} ± {r.get(key + '_stderr') or 0:.3f}" for r in (before, after)),
        )
    console.print(table)
    for title, step in (("before", before["step"]), ("after", after["step"])):
        rows = [json.loads(line) for line in (run.samples / f"step_{step:06d}.jsonl").open()]
        console.print(f"[bold]samples {title}[/] (1 = constraint holds)")
        for row in rows[:5]:
            flags = " ".join(f"{k}={v:g}" for k, v in row.items() if k not in ("text", "log_pi"))
            console.print(escape(f"  [{flags}] {row['text']!r}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayesalign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a policy towards a target described by a YAML config")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.set_defaults(handler=_train)
    d = sub.add_parser("demo", help="align SmolLM2-135M towards positive continuations (no hub)")
    d.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    d.add_argument("--resume", action="store_true")
    d.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # transformers/peft deprecation notices say nothing actionable to a user of the CLI
    warnings.filterwarnings("ignore", category=FutureWarning)
    console = Console(stderr=True)
    try:
        args.handler(args, console)
    except (ConfigError, ZeroPartitionError, NonFiniteLossError, SpaceTooLargeError, ImportError) as err:
        console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
