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

from features.errors import InputError
from features.log_source import QUERY_OPTION, TABLE_OPTION, URL_ENV_OPTION, data_option, log_source

if TYPE_CHECKING:
    from features.database_log import DatabaseLog
    from features.schema import LogConfig

_MAP_HELP = "Column mapping CANONICAL=SOURCE, repeatable, e.g. --map customer_id=CustomerID."


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
    from features.purchase_log import read_purchase_log
    from features.schema import LogConfig
    from serving.report.page import build_report, write_report

    config = apply_options(log_config or LogConfig(), mapping)
    log = read_purchase_log(data, config).log
    measured = None
    if lift is not None:
        try:
            measured = json.loads(lift.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--lift {lift}: not the JSON of `retain lift --json` ({exc})"
            ) from None
    html = build_report(log, scores_dir=scores, as_of=as_of, lift=measured)
    return write_report(html, out)


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""

    @app.command("report")
    def report(
        data: str | None = data_option(),
        table: str | None = TABLE_OPTION,
        query: str | None = QUERY_OPTION,
        url_env: str | None = URL_ENV_OPTION,
        out: Path = typer.Option(..., "--out", "-o", help="HTML file to write."),
        scores: Path | None = typer.Option(
            None, "--scores", help="Output directory of `retain score` (risk, offers)."
        ),
        as_of: str | None = typer.Option(
            None, "--as-of", help="Report date (UTC if naive); default: day after the last row."
        ),
        mapping: list[str] | None = typer.Option(None, "--map", "-m", help=_MAP_HELP),
        config_file: Path | None = typer.Option(
            None, "--config", "-c", help="Log config file (YAML or TOML, `log:` section)."
        ),
        lift: Path | None = typer.Option(
            None, "--lift", help="JSON written by `retain lift --json` (campaign results)."
        ),
    ) -> None:
        """Write the retention report: one self-contained HTML page."""
        from features.config_file import load_log_config

        source = log_source(
            data, table=table, query=query, url_env=url_env, config_file=config_file
        )
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
