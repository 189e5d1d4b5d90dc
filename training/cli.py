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

from features.errors import InputError, UserError
from features.log_source import QUERY_OPTION, TABLE_OPTION, URL_ENV_OPTION, data_option, log_source

CONFIG_HELP = (
    "YAML or TOML config file ('log:' section: columns, timezone, cancel_prefix, duplicates, ...)"
)


def threads_option() -> Any:
    """The ``--threads`` option of commands that train (LightGBM threads per booster)."""
    return typer.Option(
        None,
        "--threads",
        min=1,
        help="LightGBM threads (default: the cores this process may use per its CPU "
        "affinity and cgroup quota).",
    )


def map_option(help_text: str) -> Any:
    """The ``--map CANONICAL=SOURCE`` option (repeatable) of commands that read a log."""
    return typer.Option([], "--map", help=help_text)


def config_option(effect: str) -> Any:
    """The ``--config``/``-c`` log config file option; ``effect`` says what it does here."""
    return typer.Option(None, "--config", "-c", help=f"{CONFIG_HELP}{effect}")


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

    from training.bundle import RetainModels

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
    data: str | None = data_option(
        "Purchase log: CSV, Parquet or CDNOW .txt, or a database URL with --table/--query.",
        short=False,
    ),
    table: str | None = TABLE_OPTION,
    query: str | None = QUERY_OPTION,
    url_env: str | None = URL_ENV_OPTION,
    as_of: str = typer.Option(..., "--as-of", help="Cutoff date (UTC): train before, score after."),
    horizon: int = typer.Option(90, "--horizon", min=1, help="Label window in days."),
    mapping: list[str] = map_option(
        "Column mapping canonical=source, e.g. customer_id=CustomerID."
    ),
    config_file: Path | None = config_option("; --map, --timezone and --strict override it."),
    old_config_file: Path | None = typer.Option(
        None, "--log-config", hidden=True, help="Deprecated name of --config."
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
    threads: int | None = threads_option(),
) -> None:
    """Backtest retain's models against BG/NBD, Pareto/NBD and the recency rule at a cutoff."""
    console = Console()
    err = Console(stderr=True)
    models_params = _parse_model_params(model_param)
    if threads is not None:
        models_params["num_threads"] = threads
    from features.config_file import LogConfigError, log_config_from_options
    from features.schema import PurchaseLogError
    from features.utc import to_utc_timestamp

    config_file = config_file or old_config_file
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
            from features.cdnow import read_cdnow

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
            from features.purchase_log import read_purchase_log

            loaded = read_purchase_log(source, config)
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
        from training.plots import write_backtest_plots

        for path in write_backtest_plots(result, plots):
            console.print(f"plot written to {path}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("evaluate")(evaluate_command)
