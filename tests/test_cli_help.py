"""The command line's first impression: ``--help`` answers without importing torch, every
command and argument says what it is for in plain text, and the README lists every command."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bayesalign
from bayesalign.cli import build_parser

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)
HEAVY = ("torch", "transformers", "peft", "accelerate", "matplotlib", "pydantic", "rich")
README = Path(__file__).parents[1] / "README.md"


def test_help_imports_nothing_heavy():
    """In a fresh interpreter, since this test process has imported torch long ago."""
    script = f"""
import sys
from bayesalign.cli import main
for argv in [["--help"], *[[c, "--help"] for c in {COMMANDS!r}]]:
    try:
        main(argv)
    except SystemExit:
        pass
print("loaded:", *[m for m in {HEAVY!r} if m in sys.modules])
"""
    env = os.environ | {"PYTHONPATH": str(Path(bayesalign.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.splitlines()[-1] == "loaded:"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_argument_has_plain_help(command, capsys):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, f"{command} {action.dest} has no help"
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and text.count("\n") > 3


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text
    assert all(command in text for command in COMMANDS)


def test_readme_shows_every_command():
    text = README.read_text()
    assert [c for c in COMMANDS if f"bayesalign {c} " not in text] == []
