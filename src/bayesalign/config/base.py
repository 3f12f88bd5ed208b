"""What every config section shares: `Section` (frozen; an unknown key names the closest valid
one) and `ConfigError`, the one-line error a mistaken config gives."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and the closest valid value."""


def closest(name: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean {match[0]!r}? " if match else ""
    return f"{hint}valid: {', '.join(valid)}"


class Section(BaseModel):
    """Base of every config section: frozen, and an unknown key names the closest valid one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(f"unknown key {key!r}; {closest(str(key), cls.model_fields)}")
        return data
