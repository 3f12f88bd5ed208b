"""Loading a config: reading a YAML file, ``a.b=c`` overrides, validation with one-line errors,
and importing the user's ``callable`` scorers before anything runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bayesalign.config.base import ConfigError, closest
from bayesalign.config.scorers import CallableSpec
from bayesalign.config.sections import Config
from bayesalign.scorers import import_callable


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            options = [o.strip("'") for o in expected.replace(" or ", ", ").split(", ")]
            msg = f"invalid value {e['input']!r}; {closest(str(e['input']), options)}"
        lines.append(f"  {where or '(top level)'}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as 'line L, column C: problem' (PyYAML counts from 0)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem


def read_yaml_file(path: str | Path) -> dict:
    """The mapping a YAML config file holds; every way it can be unreadable is a ConfigError
    that names the file (and the line of a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" + (" (a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML at {_yaml_problem(err)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = raw
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)})"
            ) from None
    return raw


def parse_config(raw: dict) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read, override and validate a config file, and import its ``callable`` scorers, looking
    beside the file first (see :func:`import_callables`)."""
    path = Path(path)
    config = parse_config(apply_overrides(read_yaml_file(path), overrides))
    import_callables(config, path.parent)
    return config


def callable_specs(node: Any, where: str = "") -> Iterator[tuple[str, CallableSpec]]:
    """Every ``callable`` scorer in a config (or any section), with its place (``target.constraints[0]``)."""
    if isinstance(node, CallableSpec):
        yield where, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from callable_specs(getattr(node, name), f"{where}.{name}" if where else name)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            yield from callable_specs(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from callable_specs(item, f"{where}.{key}")


def import_callables(config: BaseModel, folder: str | Path) -> None:
    """Import every ``callable`` scorer's function now, with the config file's ``folder`` first
    on the import path: a module beside the config needs no ``PYTHONPATH``, and a bad name fails
    here, as a one-line ConfigError, before any run folder or model exists."""
    for where, spec in callable_specs(config):
        try:
            import_callable(spec.function, folder)
        except ValueError as err:
            raise ConfigError(f"{where}: scorer {spec.name!r}: {err}") from None
