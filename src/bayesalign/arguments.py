"""The base of every group of options, whether a YAML section or a Python argument object:
frozen, validated, and an unknown key names the closest valid one. The training loop's own
arguments (training/args.py) and the config's sections (config/) share it, so that a field's
default, bounds and help text are written once and feed the YAML schema and the docs."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def closest(name: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean {match[0]!r}? " if match else ""
    return f"{hint}valid: {', '.join(valid)}"


class Args(BaseModel):
    """Frozen options; an unknown key names the closest valid one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(f"unknown key {key!r}; {closest(str(key), cls.model_fields)}")
        return data
