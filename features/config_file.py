"""Read a :class:`~features.schema.LogConfig` from a YAML or TOML file.

The file holds the same fields as ``LogConfig`` at its top level, e.g. (YAML)::

    columns:
      customer_id: CustomerID
      timestamp: InvoiceDate
    timezone: Europe/London
    cancel_prefix: C

so a source log's quirks are written down once, next to the data, instead of in CLI flags.
The fields may instead sit under a top-level ``log:`` section (``[log]`` in TOML), so one file
can also hold other sections (e.g. ``segments:``) read by other commands; those are ignored here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from features.schema import LogConfig

__all__ = ["LogConfigError", "load_log_config"]

_YAML_SUFFIXES = (".yaml", ".yml")
_TOML_SUFFIXES = (".toml",)


class LogConfigError(ValueError):
    """A log-config file that cannot be used; the message names the file and the key."""


def load_log_config(path: str | Path) -> LogConfig:
    """Parse and validate a log-config file (``.yaml``, ``.yml`` or ``.toml``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _YAML_SUFFIXES + _TOML_SUFFIXES:
        raise LogConfigError(
            f"{path}: unsupported config file type {suffix!r}; use .yaml, .yml or .toml"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = tomllib.loads(text) if suffix in _TOML_SUFFIXES else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise LogConfigError(f"{path}: not valid {suffix[1:].upper()}: {error}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LogConfigError(
            f"{path}: expected a mapping of LogConfig fields at the top level, "
            f"got {type(data).__name__}"
        )
    if isinstance(data.get("log"), dict):
        data = data["log"]
    known = set(LogConfig.model_fields)
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise LogConfigError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    if isinstance(data.get("discount_true_values"), list):
        data["discount_true_values"] = tuple(data["discount_true_values"])
    try:
        return LogConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or '(top level)'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise LogConfigError(f"{path}: invalid log config: {problems}") from error
