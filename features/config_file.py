"""The one reader of retain's config files (YAML or TOML) for every command that reads a log.

A config file writes a source log's quirks down once, next to the data, instead of in CLI
flags. Its ``log:`` section (``[log]`` in TOML) holds :class:`~features.log.schema.LogConfig`
fields, its ``segments:`` section :class:`~features.retention.segments.SegmentConfig` thresholds::

    log:
      columns:
        customer_id: CustomerID
        timestamp: InvoiceDate
      timezone: Europe/London
      cancel_prefix: C
    segments:
      lapsed_gap_ratio: 4

The ``log:`` section may also say where the log lives in a database (``table:`` or
``query:``, and ``url_env:``, the environment variable holding the URL); those keys are read
by :func:`load_log_source_settings` and are not ``LogConfig`` fields (a model's counting
rules do not depend on where its rows were stored).

A file with neither section is read as ``LogConfig`` fields at its top level (the older,
flat form). A key written twice in one mapping is an error (YAML's own rule, which PyYAML
does not enforce: the last one would win silently), and so is a file nested too deeply or
holding a number too long to convert, in one line rather than a traceback;
:func:`parse_config_text` is the parser every YAML file of retain goes through (the offer
policy too). Other top-level sections are left to whatever reads them. ``--map`` entries
(and ``--strict``, ``--timezone`` where a command has them) are applied on top of the file
by :func:`log_config_from_options` / :func:`apply_options`, so every command resolves its
options the same way.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from features.errors import InputError
from features.log.schema import LogConfig
from features.retention.segments import SegmentConfig

__all__ = [
    "ConfigSyntaxError",
    "LogConfigError",
    "apply_options",
    "load_log_config",
    "load_log_source_settings",
    "load_segment_config",
    "log_config_from_options",
    "parse_config_text",
    "read_config_file",
]

_YAML_SUFFIXES = (".yaml", ".yml")
_TOML_SUFFIXES = (".toml",)
_SECTIONS = ("log", "segments")
_SOURCE_KEYS = ("table", "query", "url_env")


class LogConfigError(InputError):
    """A config file or option that cannot be used; the message names the file and the key."""


class ConfigSyntaxError(LogConfigError):
    """Text that does not parse as YAML or TOML; the message says where, without the path."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges another mapping; its keys may be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: PyYAML reports it below
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config_text(text: str, kind: str) -> Any:
    """``text`` parsed as ``kind`` (``"yaml"`` or ``"toml"``): safe types only, unique keys.

    :class:`ConfigSyntaxError` in one line for a syntax error, a duplicate key, nesting
    deeper than Python's recursion limit or an integer over Python's digit limit.
    """
    try:
        if kind == "toml":
            return tomllib.loads(text)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: safe types only
    except RecursionError:
        raise ConfigSyntaxError(f"not valid {kind.upper()}: nested too deeply") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        context = f"{error.context}: " if error.context else ""
        raise ConfigSyntaxError(f"not valid YAML: {context}{error.problem}{where}") from None
    except (ValueError, yaml.YAMLError) as error:  # TOMLDecodeError is a ValueError
        problem = " ".join(str(error).split())
        if "integer string conversion" in problem:
            problem = "an integer has more digits than Python converts (4300)"
        raise ConfigSyntaxError(f"not valid {kind.upper()}: {problem}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The file's top-level mapping (``.yaml``, ``.yml`` or ``.toml``); empty file: ``{}``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _YAML_SUFFIXES + _TOML_SUFFIXES:
        raise LogConfigError(
            f"{path}: unsupported config file type {suffix!r}; use .yaml, .yml or .toml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LogConfigError(f"{path}: cannot read config file: {error}") from None
    try:
        data = parse_config_text(text, "toml" if suffix in _TOML_SUFFIXES else "yaml")
    except ConfigSyntaxError as error:
        raise LogConfigError(f"{path}: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LogConfigError(
            f"{path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    return data


def _section(path: Path, data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A section's mapping; None when the file has no such section."""
    if name not in data:
        return None
    section = data[name]
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise LogConfigError(f"{path}: '{name}' must be a mapping, got {type(section).__name__}")
    return dict(section)


def _validate(path: Path, model: type[BaseModel], fields: dict[str, Any], what: str) -> Any:
    known = set(model.model_fields)
    unknown = sorted(str(key) for key in fields if key not in known)
    if unknown:
        raise LogConfigError(
            f"{path}: {what}: unknown key(s) {unknown}; known keys: {sorted(known)}"
        )
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        problems = _problems(error, top_level="(top level)")
        raise LogConfigError(f"{path}: invalid {what}: {problems}") from None


def _problems(error: ValidationError, *, top_level: str) -> str:
    """Pydantic's errors as one line: ``field.path: message; ...`` (``top_level`` for no path)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or top_level}: {issue['msg']}"
        for issue in error.errors()
    )


def _log_fields(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    if not any(name in data for name in _SECTIONS):
        return dict(data)
    stray = sorted(str(key) for key in data if key in LogConfig.model_fields)
    if stray:
        raise LogConfigError(
            f"{path}: {stray} beside a 'log:' or 'segments:' section; move them under 'log:'"
        )
    return _section(path, data, "log") or {}


def load_log_config(path: str | Path) -> LogConfig:
    """Parse and validate a file's log config (its ``log:`` section, or flat fields).

    Only the fields the file sets count as set (``model_fields_set``): ``retain score`` uses
    that to tell a rule the user wrote down from a default.
    """
    path = Path(path)
    fields = _log_fields(path, read_config_file(path))
    for key in _SOURCE_KEYS:
        fields.pop(key, None)
    for key in ("discount_true_values", "discount_false_values"):
        if isinstance(fields.get(key), list):
            fields[key] = tuple(fields[key])
    return _validate(path, LogConfig, fields, "log config")


def load_log_source_settings(path: str | Path) -> dict[str, str]:
    """The ``log:`` section's database keys (``table``, ``query``, ``url_env``) that are set."""
    path = Path(path)
    fields = _log_fields(path, read_config_file(path))
    settings: dict[str, str] = {}
    for key in _SOURCE_KEYS:
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise LogConfigError(f"{path}: log config: {key!r} must be a non-empty string")
        settings[key] = value
    if "table" in settings and "query" in settings:
        raise LogConfigError(f"{path}: log config: give 'table' or 'query', not both")
    return settings


def load_segment_config(path: str | Path | None) -> SegmentConfig:
    """The file's ``segments:`` section (defaults without a file or section)."""
    if path is None:
        return SegmentConfig()
    path = Path(path)
    data = read_config_file(path)
    if not any(name in data for name in _SECTIONS):
        stray = sorted(str(key) for key in data if key in SegmentConfig.model_fields)
        if stray:
            raise LogConfigError(
                f"{path}: {stray} are segment thresholds; put them under 'segments:'"
            )
    fields = _section(path, data, "segments") or {}
    return _validate(path, SegmentConfig, fields, "segments config")


def log_config_from_options(
    config_file: str | Path | None,
    mapping: Sequence[str] | None = None,
    *,
    strict: bool = False,
    timezone: str | None = None,
) -> LogConfig:
    """The log config a command runs with: its ``--config`` file, then its options on top."""
    config = load_log_config(config_file) if config_file is not None else LogConfig()
    return apply_options(config, mapping, strict=strict, timezone=timezone)


def apply_options(
    config: LogConfig,
    mapping: Sequence[str] | None = None,
    *,
    strict: bool = False,
    timezone: str | None = None,
) -> LogConfig:
    """``config`` with command-line options on top.

    ``--map CANONICAL=SOURCE`` entries override the config's column names one by one;
    ``--strict`` and ``--timezone`` override its fields. Fields the file or an option set
    stay marked as set (``model_fields_set``), the rest are defaults.
    """
    from features.log.reading import parse_mapping

    update: dict[str, Any] = {}
    if mapping:
        update["columns"] = {**config.columns, **parse_mapping(mapping)}
    if strict:
        update["strict"] = True
    if timezone is not None:
        update["timezone"] = timezone
    if not update:
        return config
    fields = {name: getattr(config, name) for name in config.model_fields_set} | update
    try:
        return LogConfig.model_validate(fields)
    except ValidationError as error:
        problems = _problems(error, top_level="config")
        raise LogConfigError(f"invalid log configuration: {problems}") from None
