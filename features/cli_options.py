"""The options ``retain`` commands share, each defined once: one name, one short flag, one help.

A user who learnt ``-m customer_id=CustomerID`` on ``kpis`` types it on ``train`` too, and
``--help`` says the same thing about it everywhere. So every command that reads a purchase
log, a model or the MLflow store takes these aliases instead of writing its own
``typer.Option``. Each is a typer ``Annotated`` alias; the default stays in the command's
signature, because that is where commands differ (``--as-of`` is required by ``score`` and
optional for ``report``; an option without a default is required). What an option means
for one command in particular (``train`` saves ``--config`` with the model, ``score``
forbids changing its counting rules) is said in that command's docstring.

Older spellings keep working, hidden from ``--help``: ``--name`` of the registered model,
``--artifact`` of ``uplift-train``'s model, ``--log-config`` of ``evaluate``'s config;
:func:`with_old_spelling` merges one into its option.

This module lives in ``features`` because ``features``' commands use it and the layering
allows ``training`` and ``serving`` to import from ``features`` only. It imports typer
alone, so ``retain --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import typer

__all__ = [
    "DEFAULT_REGISTERED_MODEL",
    "AsOfOption",
    "ConfigOption",
    "DaskLocalOption",
    "DaskOption",
    "DataOption",
    "ExperimentOption",
    "MapOption",
    "ModelUriOption",
    "OldNameOption",
    "OptionalAsOfOption",
    "OptionalModelUriOption",
    "OptionalRegisteredModelOption",
    "QueryOption",
    "RegisteredModelOption",
    "StrictOption",
    "TableOption",
    "ThreadsOption",
    "TrackingUriOption",
    "UrlEnvOption",
    "required",
    "with_old_spelling",
]

T = TypeVar("T")

DEFAULT_REGISTERED_MODEL = "retain"

# Where the purchase log comes from (see features.sources.log_source.log_source).
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        metavar="LOG",
        help="Purchase log: a CSV or Parquet file, or a database URL "
        "(postgresql://user@host:port/db, sqlite:///path.db) with --table or --query.",
    ),
]
TableOption = Annotated[
    str | None,
    typer.Option(
        "--table",
        metavar="NAME",
        help="Database table (or schema.table) holding the purchase log.",
    ),
]
QueryOption = Annotated[
    str | None,
    typer.Option(
        "--query",
        metavar="SQL",
        help="SQL query returning the purchase log's rows (instead of --table).",
    ),
]
UrlEnvOption = Annotated[
    str | None,
    typer.Option(
        "--url-env",
        metavar="NAME",
        help="Environment variable holding the database URL (password included); "
        "replaces --data. Otherwise the password comes from PGPASSWORD, ~/.pgpass or a "
        "service file.",
    ),
]

# How the log is read.
MapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        "-m",
        metavar="CANONICAL=SOURCE",
        help="Purchase-log column mapping, repeatable, e.g. -m customer_id=CustomerID "
        "-m timestamp=InvoiceDate; overrides the columns of --config.",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML or TOML file; its 'log:' section says how the log is laid out and "
        "counted (columns, timezone, cancel_prefix, duplicates, strict, date_format, ...). "
        "Options on the command line win.",
    ),
]
StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Fail on rows without a customer id instead of dropping them with a warning.",
    ),
]
_AS_OF_HELP = (
    "Cut-off date or time (UTC if naive): the purchases strictly before it are the history."
)
_AS_OF = typer.Option("--as-of", metavar="DATE", help=_AS_OF_HELP)
AsOfOption = Annotated[str, _AS_OF]
OptionalAsOfOption = Annotated[str | None, _AS_OF]

# The model and the MLflow store.
_MODEL_URI_HELP = (
    "The model: an artifact directory, or models:/NAME@ALIAS or models:/NAME/VERSION "
    "in the MLflow registry."
)
_MODEL_URI = typer.Option("--model-uri", metavar="URI", help=_MODEL_URI_HELP)
ModelUriOption = Annotated[str, _MODEL_URI]
OptionalModelUriOption = Annotated[str | None, _MODEL_URI]
TrackingUriOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db).",
    ),
]
_REGISTERED_MODEL = typer.Option(
    "--registered-model", metavar="NAME", help="Name of the model in the MLflow registry."
)
RegisteredModelOption = Annotated[str, _REGISTERED_MODEL]
OptionalRegisteredModelOption = Annotated[str | None, _REGISTERED_MODEL]
OldNameOption = Annotated[
    str | None, typer.Option("--name", hidden=True, help="Old name of --registered-model.")
]
ExperimentOption = Annotated[
    str,
    typer.Option("--experiment", metavar="NAME", help="MLflow experiment the run is logged in."),
]

# Where the work runs.
DaskOption = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Run on this Dask scheduler, e.g. tcp://host:8786.",
    ),
]
DaskLocalOption = Annotated[
    int | None,
    typer.Option(
        "--dask-local",
        metavar="N",
        help="Run on a local Dask cluster of N worker processes.",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        metavar="N",
        min=1,
        help="Threads at work on this machine. Training: LightGBM threads (default: the "
        "cores this process may use per its CPU affinity and cgroup quota). score: chunks "
        "scored at once (default: the machine's cores, at most 4).",
    ),
]


def with_old_spelling(
    value: T | None, old: T | None, option: str, old_option: str, default: T | None = None
) -> T | None:
    """``value``, or what was given under the option's older, hidden name ``old_option``.

    Giving both with different values is a usage error (exit 2) rather than a silent pick.
    """
    if old is None:
        return value
    if value is not None and value != default and value != old:
        raise typer.BadParameter(
            f"{old_option} is the old name of {option}; give {option} only", param_hint=option
        )
    return old


def required(value: T | None, option: str) -> T:
    """``value`` of an option that is required but optional in the signature (because an
    old spelling may stand in for it); missing, it is a usage error, exit 2."""
    if value is None:
        raise typer.BadParameter("missing; this option is required", param_hint=f"'{option}'")
    return value
