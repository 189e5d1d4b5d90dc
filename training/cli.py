"""Training-side sub-commands of ``retain``: ``evaluate`` (the time-based backtest).

Errors a user can fix (a bad file, column, value or date) print one readable message and
exit with code 2, without a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from features.cli_options import (
    AsOfOption,
    ConfigOption,
    DataOption,
    MapOption,
    QueryOption,
    StrictOption,
    TableOption,
    ThreadsOption,
    UrlEnvOption,
    with_old_spelling,
)
from features.errors import InputError, UserError
from features.sources.log_source import log_source


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


def _parse_model_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items for RetainModels; unknown keys are a usage error (exit 2)."""
    import inspect

    import yaml

    from training.models.bundle import RetainModels

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


def evaluate_command(
    *,
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    as_of: AsOfOption,
    horizon: int = typer.Option(90, "--horizon", min=1, help="Label window in days."),
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    old_config_file: Path | None = typer.Option(
        None, "--log-config", hidden=True, help="Deprecated name of --config."
    ),
    timezone: str | None = typer.Option(
        None, "--timezone", help="Time zone of naive timestamps (default UTC)."
    ),
    strict: StrictOption = False,
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
    threads: ThreadsOption = None,
) -> None:
    """Backtest retain's models against BG/NBD, Pareto/NBD and the recency rule at a cutoff.

    The models train before --as-of and are scored after it. --map, --timezone and --strict
    override --config; a CDNOW .txt file (--format) is read in its fixed layout, without them.
    """
    console = Console()
    err = Console(stderr=True)
    models_params = _parse_model_params(model_param)
    if threads is not None:
        models_params["num_threads"] = threads
    from features.config_file import LogConfigError, log_config_from_options
    from features.log.schema import PurchaseLogError
    from features.utc import to_utc_timestamp

    config_file = with_old_spelling(config_file, old_config_file, "--config", "--log-config")
    try:
        cutoff = to_utc_timestamp(as_of, "--as-of")
        source = log_source(
            data, table=table, query=query, url_env=url_env, config_file=config_file
        )
        if isinstance(source, Path) and (cdnow or _is_cdnow(source, log_format)):
            if mapping or config_file is not None or timezone is not None:
                raise PurchaseLogError(
                    "--map, --config and --timezone do not apply to CDNOW files "
                    "(fixed format); drop them or use --format table"
                )
            if not source.exists():
                raise PurchaseLogError(f"--data file not found: {source}")
            from features.sources.cdnow import read_cdnow

            loaded = read_cdnow(source)
        else:
            try:
                config = log_config_from_options(
                    config_file, mapping, strict=strict, timezone=timezone
                )
            except LogConfigError as exc:
                raise PurchaseLogError(f"--config: {exc}") from None
            if isinstance(source, Path) and not source.exists():
                raise PurchaseLogError(f"--data file not found: {source}")
            from features.log.purchase_log import read_purchase_log

            loaded = read_purchase_log(source, config)
        err.print(loaded.report.summary(), markup=False, highlight=False)

        from training.evaluation.backtest import evaluate

        result = evaluate(
            loaded.log,
            cutoff,
            horizon_days=horizon,
            models_params=models_params,
            seed=seed,
            baseline_penalizer=baseline_penalizer,
        )
    except UserError:
        raise
    except ValueError as exc:  # a log the backtest cannot use (too few customers, ...)
        raise InputError(f"backtest at {as_of}: {exc}") from None

    console.print(result.table())
    for line in result.notes():
        console.print(line, markup=False, highlight=False)
    if result.training_seconds is not None:
        console.print(f"model training time: {result.training_seconds:.1f} s")
    if json_path is not None:
        result.write_json(json_path)
        console.print(f"figures written to {json_path}")
    if plots is not None:
        from training.evaluation.plots import write_backtest_plots

        for path in write_backtest_plots(result, plots):
            console.print(f"plot written to {path}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("evaluate")(evaluate_command)
