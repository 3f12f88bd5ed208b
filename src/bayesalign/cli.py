"""The ``bayesalign`` command. Only the standard library is imported at start, so ``--help`` and
argument errors answer at once; each command imports torch, transformers and the rest of the
library when it runs."""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from bayesalign import commands

if TYPE_CHECKING:
    from rich.console import Console


DESCRIPTION = """\
Align a language model with preferences as Bayesian inference: the pretrained model is the
prior a(x), preferences are evidence (constraints b(x), rewards r(x)), and training moves a
policy π towards the posterior p(x) ∝ a(x)·b(x). Every command but report and demo reads a
YAML config (examples under configs/; the schema is src/bayesalign/config/)."""

EXAMPLES = """\
examples:
  bayesalign demo
  bayesalign train configs/toy_word.yaml --out runs/toy
  bayesalign eval configs/toy_word.yaml --policy runs/toy
  bayesalign sample configs/toy_word.yaml --out samples.jsonl --n 100 --method rejection
  bayesalign report runs/toy
  bayesalign push runs/toy your-name/toy-aligned --private

'bayesalign COMMAND --help' describes a command's options."""

CONFIG_HELP = "YAML config (see configs/ for examples)"
SET_HELP = "override one config value, e.g. training.steps=10 (repeatable; the value is YAML)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayesalign",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary)

    p = command("train", "train a policy towards a target described by a YAML config")
    p.add_argument("config", type=Path, help=CONFIG_HELP)
    p.add_argument("--out", type=Path, required=True, help="run folder (new, or the one to resume)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.set_defaults(handler=commands.run_train)
    c = command("compare", "run several methods on one target and budget; summary table")
    c.add_argument("config", type=Path, help=CONFIG_HELP)
    c.add_argument(
        "--methods", required=True, help="comma-separated, e.g. gdc++,dpg,reinforce,kl-reinforce,ppo"
    )
    c.add_argument("--seeds", type=int, default=3, help="runs per method (seeds base, base+1, ...)")
    c.add_argument("--out", type=Path, required=True, help="new folder: OUT/<method>/seed<k>/ and summary")
    c.add_argument("--grad-samples", type=int, default=16, help="samples for the gradient variance")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    c.set_defaults(handler=commands.run_compare)
    t = command("pretrain", "pretrain a small LM from scratch with human feedback (PHF)")
    t.add_argument("config", type=Path, help="YAML pretraining config (see experiments/phf/)")
    t.add_argument("--out", type=Path, required=True, help="run folder")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    t.set_defaults(handler=commands.run_pretrain)
    rt = command("red-team", "red-team a trained LM: prompts from a red LM, scored per round")
    rt.add_argument("config", type=Path, help="YAML red-teaming config (see experiments/phf/)")
    rt.add_argument("--out", type=Path, required=True, help="new folder: pool.jsonl and rounds.jsonl")
    rt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    rt.set_defaults(handler=commands.run_red_team)
    e = command("eval", "measure a trained policy (or the prior) against a config's target")
    e.add_argument("config", type=Path, help="YAML config whose model, sampling and target are used")
    e.add_argument("--policy", type=Path, help="a run folder or its final/ (default: the prior itself)")
    e.add_argument("--out", type=Path, help="JSON file of the metrics")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    e.set_defaults(handler=commands.run_eval)
    r = command("report", "an HTML page of one or more runs: curves, samples, configs")
    r.add_argument("runs", nargs="+", type=Path, help="run folders (their curves are overlaid)")
    r.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html of the first run)")
    r.set_defaults(handler=commands.run_report)
    d = command("demo", "align SmolLM2-135M towards positive continuations (no hub)")
    d.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    d.add_argument("--resume", action="store_true", help="continue the run in --out")
    d.set_defaults(handler=commands.run_demo)
    s = command("sample", "draw samples from the target without training (no training run)")
    s.add_argument("config", type=Path, help="a config: its model, prompt, sampling and target sections")
    s.add_argument("--out", type=Path, required=True, help="JSONL file of the samples")
    s.add_argument("--n", type=int, required=True, help="number of samples to write")
    s.add_argument("--method", help="rejection | qrs | importance (sample.method, default qrs)")
    s.add_argument("--beta", type=float, help="qrs: accept with probability min(1, P/(β q))")
    s.add_argument("--acceptance", type=float, help="qrs: choose β for this acceptance rate")
    s.add_argument("--bound", type=float, help="rejection: M ≥ P/q (default 1 when it is known to hold)")
    s.add_argument("--pool", type=int, help="importance: proposals to resample from (default 10·n)")
    s.add_argument("--max-proposals", type=int, help="give up beyond this many proposals")
    s.add_argument("--seed", type=int, help="seed of the sampler (sample.seed)")
    s.add_argument("--proposal", type=Path, help="a trained policy (RUN/final) as q (default: the prior)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    s.set_defaults(handler=commands.run_sample)
    u = command("push", "upload a run's final/ (model and model card) to the Hugging Face Hub")
    u.add_argument("run", type=Path, help="a run folder (or its final/)")
    u.add_argument(
        "repo_id", help="the model repository, e.g. your-name/my-aligned-model (created if needed)"
    )
    u.add_argument("--private", action="store_true", help="create the repository private (a new one only)")
    u.set_defaults(handler=commands.run_push)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix, printed as one line instead of a traceback.
    Imported only once a command runs: their modules pull in torch."""
    from bayesalign.compare import CompareRunError
    from bayesalign.config import ConfigError
    from bayesalign.contexts import ContextError
    from bayesalign.estimators import ZeroPartitionError
    from bayesalign.exact import SpaceTooLargeError
    from bayesalign.hub_push import PushError
    from bayesalign.objectives import InfiniteDivergenceError
    from bayesalign.preflight import PreflightError
    from bayesalign.prior_draws import PoolError
    from bayesalign.proposals import NonFiniteLogProbError
    from bayesalign.report import ReportError
    from bayesalign.runs import RunFolderError
    from bayesalign.runs.saved_policy import SavedPolicyError
    from bayesalign.sampling import SamplingError
    from bayesalign.scorers import ScorerError
    from bayesalign.training import NonFiniteLossError, UnworkableRunError

    return (
        ConfigError,
        ZeroPartitionError,
        NonFiniteLossError,
        UnworkableRunError,
        NonFiniteLogProbError,
        SpaceTooLargeError,
        SamplingError,
        SavedPolicyError,
        InfiniteDivergenceError,
        CompareRunError,
        ContextError,
        ReportError,
        RunFolderError,
        ScorerError,
        PreflightError,
        PoolError,
        PushError,
        ImportError,
    )


def _show_run_warnings(console: Console) -> None:
    """A repaired or skipped part of a run folder is said in one line, like an error, without
    the source location Python's warnings print (it points into bayesalign, not at the cause)."""
    from bayesalign.runs import RunFolderWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, RunFolderWarning):
            console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _quiet_transformers() -> None:
    """transformers' own progress bars ("Loading weights" at every load, "Writing model shards"
    at every checkpoint) interleave with the command's progress lines and fill redirected logs;
    the command reports its phases itself. Downloads from the hub keep their bars."""
    import huggingface_hub
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # also turns off huggingface_hub's bars: back on for downloads
    huggingface_hub.utils.enable_progress_bars()


def main(argv: list[str] | None = None) -> int:
    """Run one command; a mistake in the input is one ``error:`` line and exit status 2, an
    interrupt (Ctrl-C, SIGTERM) one line and 128 + the signal's number."""
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from bayesalign.training.interrupt import TrainingInterrupted

    # transformers/peft deprecation notices say nothing actionable to a user of the CLI
    warnings.filterwarnings("ignore", category=FutureWarning)
    console = Console(stderr=True)
    errors = user_errors()
    shown = warnings.showwarning
    _show_run_warnings(console)
    if args.handler not in (commands.run_report, commands.run_push):
        _quiet_transformers()
    try:
        args.handler(args, console)
    except errors as err:
        console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except TrainingInterrupted as stop:
        console.print(str(stop), highlight=False, soft_wrap=True)
        return 128 + stop.signum
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        return 128 + signal.SIGINT
    finally:
        warnings.showwarning = shown
    return 0


if __name__ == "__main__":
    sys.exit(main())
