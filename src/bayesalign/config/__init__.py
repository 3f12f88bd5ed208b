"""The YAML configuration, split by concern:

- `base`: `Section` and `ConfigError`;
- `scorers`: the scorer schema (also used by pretraining configs);
- `target`, `methods`, `sections`: the target, the training methods and their registry, the run
  sections and `Config`;
- `loading`: reading, overriding and validating a YAML file;
- `build`: the single place where names become objects (models, target, objective, evaluator).

The main entry points are importable from here; everything else from its module. Like the
package's own names, they are imported on first use (PEP 562), so importing ``config.scorers``
does not pull in the whole config."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayesalign.config.base import ConfigError
    from bayesalign.config.loading import apply_overrides, load_config, parse_config
    from bayesalign.config.sections import Config

_HOME = {
    "Config": "bayesalign.config.sections",
    "ConfigError": "bayesalign.config.base",
    "apply_overrides": "bayesalign.config.loading",
    "load_config": "bayesalign.config.loading",
    "parse_config": "bayesalign.config.loading",
}

__all__ = ["Config", "ConfigError", "apply_overrides", "load_config", "parse_config"]


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module 'bayesalign.config' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
