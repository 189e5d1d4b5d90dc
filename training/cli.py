"""Training-side sub-commands of ``retain``: ``evaluate`` (the time-based backtest).

Errors a user can fix (a bad file, column, value or date) print one readable message and
exit with code 2, without a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from pydantic import ValidationError
from rich.console import Console

from features.schema import LogConfig, PurchaseLogError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class LogFormat(StrEnum):
    """How to read ``--data``: ``auto`` picks ``cdnow`` for files named CDNOW*.txt."""

    auto = "auto"
    table = "table"
    cdnow = "cdnow"


def _is_cdnow(path: Path, log_format: LogFormat) -> bool:
    if log_format is LogFormat.auto:
        name = path.name.lower()
        return name.startswith("cdnow") and name.endswith(".txt")
    return log_format is LogFormat.cdnow


def _load_config(
    log_config: Path | None, mapping: list[str], timezone: str | None, strict: bool
) -> LogConfig:
    """LogConfig from an optional YAML/TOML file, then the command-line overrides on top."""
    from features.config_file import LogConfigError, load_log_config
    from features.purchase_log import parse_mapping

    try:
        base = load_log_config(log_config).model_dump() if log_config else {}
    except (LogConfigError, FileNotFoundError) as exc:
        raise PurchaseLogError(f"--log-config: {exc}") from None
    base["columns"] = {**base.get("columns", {}), **parse_mapping(mapping)}
    if timezone is not None:
        base["timezone"] = timezone
    if strict:
        base["strict"] = True
    try:
        return LogConfig(**base)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PurchaseLogError(f"invalid log configuration: {problems}") from None


def _parse_model_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items for RetainModels; unknown keys are a usage error (exit 2)."""
    import inspect

    import yaml

    from training.models import RetainModels

    known = set(inspect.signature(RetainModels.__init__).parameters) - {"self", "horizon_days"}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--model-param")
        if key not in known:
            raise typer.BadParameter(
                f"unknown RetainModels parameter {key!r}; known: {', '.join(sorted(known))}",
                param_hint="--model-param",
            )
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise typer.BadParameter(
                f"{item!r}: unreadable value", param_hint="--model-param"
            ) from None
    return out


def _parse_date(value: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise PurchaseLogError(
            f"--as-of {value!r} is not a date; use YYYY-MM-DD (UTC) or an ISO timestamp"
        ) from None
    if ts is pd.NaT:
        raise PurchaseLogError(f"--as-of {value!r} is not a date; use YYYY-MM-DD")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def evaluate_command(
    data: Path = typer.Option(..., "--data", help="Purchase log: CSV, Parquet or CDNOW .txt."),
    as_of: str = typer.Option(..., "--as-of", help="Cutoff date (UTC): train before, score after."),
    horizon: int = typer.Option(90, "--horizon", min=1, help="Label window in days."),
    mapping: list[str] = typer.Option(
        [], "--map", help="Column mapping canonical=source, e.g. customer_id=CustomerID."
    ),
    log_config: Path | None = typer.Option(
        None, "--log-config", help="YAML/TOML file with LogConfig fields."
    ),
    timezone: str | None = typer.Option(
        None, "--timezone", help="Time zone of naive timestamps (default UTC)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Reject bad rows instead of dropping."),
    json_path: Path | None = typer.Option(None, "--json", help="Write all figures as JSON."),
    plots: Path | None = typer.Option(None, "--plots", help="Directory for the PNG plots."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the models."),
    log_format: LogFormat = typer.Option(
        LogFormat.auto, "--format", help="auto: CDNOW*.txt is read as CDNOW, else a table."
    ),
    cdnow: bool = typer.Option(False, "--cdnow", help="Shorthand for --format cdnow."),
    model_param: list[str] = typer.Option(
        [],
        "--model-param",
        help="RetainModels parameter KEY=VALUE (YAML value), e.g. n_snapshots=4.",
    ),
    baseline_penalizer: float = typer.Option(
        0.0, "--baseline-penalizer", min=0.0, help="L2 penalty of the BG/NBD, Pareto/NBD fits."
    ),
) -> None:
    """Backtest retain's models against BG/NBD, Pareto/NBD and the recency rule at a cutoff."""
    console = Console()
    err = Console(stderr=True)
    models_params = _parse_model_params(model_param)
    try:
        cutoff = _parse_date(as_of)
        if cdnow or _is_cdnow(data, log_format):
            if mapping or log_config is not None or timezone is not None:
                raise PurchaseLogError(
                    "--map, --log-config and --timezone do not apply to CDNOW files "
                    "(fixed format); drop them or use --format table"
                )
            if not data.exists():
                raise PurchaseLogError(f"--data file not found: {data}")
            from features.cdnow import read_cdnow

            loaded = read_cdnow(data)
        else:
            config = _load_config(log_config, mapping, timezone, strict)
            if not data.exists():
                raise PurchaseLogError(f"--data file not found: {data}")
            from features.purchase_log import read_purchase_log

            loaded = read_purchase_log(data, config)
        err.print(loaded.report.summary(), markup=False, highlight=False)

        from training.backtest import evaluate

        result = evaluate(
            loaded.log,
            cutoff,
            horizon_days=horizon,
            models_params=models_params,
            seed=seed,
            baseline_penalizer=baseline_penalizer,
        )
    except PurchaseLogError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        err.print(f"error: cannot read {data}: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except ValueError as exc:
        err.print(f"error: backtest failed: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None

    console.print(result.table())
    for line in result.notes():
        console.print(line, markup=False, highlight=False)
    if result.training_seconds is not None:
        console.print(f"model training time: {result.training_seconds:.1f} s")
    if json_path is not None:
        result.write_json(json_path)
        console.print(f"figures written to {json_path}")
    if plots is not None:
        from training.plots import write_backtest_plots

        for path in write_backtest_plots(result, plots):
            console.print(f"plot written to {path}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("evaluate")(evaluate_command)
