"""What every config section shares: `Section` (frozen; an unknown key names the closest valid
one) and `ConfigError`, the one-line error a mistaken config gives."""

from __future__ import annotations

from bayesalign.arguments import Args, closest

__all__ = ["ConfigError", "Section", "closest"]


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and the closest valid value."""


class Section(Args):
    """Base of every config section: frozen, and an unknown key names the closest valid one
    (`arguments.Args`, which the training loop's own argument objects share)."""
