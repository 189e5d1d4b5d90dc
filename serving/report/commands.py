"""``retain report``: the report sub-command.

Heavy imports happen inside the command so ``retain --help`` stays fast. Expected input
errors (unreadable log, bad scores, bad ``--lift`` JSON) raise; the root app prints them as
one ``error:`` line on stderr with exit code 2 (:mod:`serving.cli_errors`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from features.cli_options import (
    ConfigOption,
    DataOption,
    MapOption,
    OptionalAsOfOption,
    QueryOption,
    TableOption,
    UrlEnvOption,
)
from features.errors import InputError
from features.sources.log_source import log_source

if TYPE_CHECKING:
    from features.log.schema import LogConfig
    from features.sources.database_log import DatabaseLog


def report_command(
    data: Path | DatabaseLog,
    out: Path,
    *,
    scores: Path | None = None,
    as_of: str | None = None,
    mapping: list[str] | None = None,
    log_config: LogConfig | None = None,
    lift: Path | None = None,
) -> Path:
    """Load the log (and scores, and campaign results) and write the HTML report atomically."""
    from features.config_file import apply_options
    from features.log.purchase_log import read_purchase_log
    from features.log.schema import LogConfig
    from serving.report.campaigns import check_lift_json
    from serving.report.page import build_report, write_report

    config = apply_options(log_config or LogConfig(), mapping)
    log = read_purchase_log(data, config).log
    measured = None
    if lift is not None:
        try:
            measured = json.loads(lift.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(
                f"--lift {lift}: not the JSON of `retain lift --json` ({exc})"
            ) from None
        measured = check_lift_json(measured, str(lift))
    html = build_report(log, scores_dir=scores, as_of=as_of, lift=measured)
    return write_report(html, out)


def report(
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    out: Path = typer.Option(..., "--out", "-o", help="HTML file to write."),
    scores: Path | None = typer.Option(
        None, "--scores", help="Output directory of `retain score` (risk, offers)."
    ),
    as_of: OptionalAsOfOption = None,
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    lift: Path | None = typer.Option(
        None, "--lift", help="JSON written by `retain lift --json` (campaign results)."
    ),
) -> None:
    """Write the retention report: one self-contained HTML page.

    --as-of is the report date (default: the day after the log's last row).
    """
    from features.config_file import load_log_config

    source = log_source(data, table=table, query=query, url_env=url_env, config_file=config_file)
    path = report_command(
        source,
        out,
        scores=scores,
        as_of=as_of,
        mapping=mapping,
        log_config=None if config_file is None else load_log_config(config_file),
        lift=lift,
    )
    typer.echo(f"wrote {path}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""
    app.command("report")(report)
