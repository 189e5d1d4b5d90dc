"""``retain score`` and ``retain report``: the batch sub-commands.

Heavy imports happen inside the commands so ``retain --help`` stays fast. Expected input
errors (unreadable log, bad model, bad options) end with one ``error:`` line on stderr and
exit code 2; nothing is left visible in the output directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from features.schema import LogConfig
    from serving.batch import BatchSummary, Chunk

_MAP_HELP = "Column mapping CANONICAL=SOURCE, repeatable, e.g. --map customer_id=CustomerID."
DEFAULT_MODEL_URI = "models:/retain@champion"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from features.schema import PurchaseLogError
    from serving.batch import BatchError
    from serving.offers import OfferPolicyError, ScoresError
    from training.artifact import ArtifactError

    return (
        PurchaseLogError,
        ValidationError,
        BatchError,
        ArtifactError,
        OfferPolicyError,
        ScoresError,
        OSError,
        ValueError,
        KeyError,
    )


def score_command(
    data: Path,
    as_of: str,
    out: Path,
    *,
    model_uri: str = DEFAULT_MODEL_URI,
    mapping: list[str] | None = None,
    chunk_customers: int | None = None,
    features_out: Path | None = None,
    resume: bool = False,
    campaign: str | None = None,
    dask_address: str | None = None,
    dask_local: int | None = None,
    threads: int | None = None,
    log_config: LogConfig | None = None,
    progress: bool = True,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> BatchSummary:
    """Load, score in chunks (pandas or Dask), publish; return the run summary."""
    from features.builders import to_utc_timestamp
    from features.purchase_log import parse_mapping, read_purchase_log
    from features.schema import LogConfig
    from serving.batch import (
        DEFAULT_CHUNK_CUSTOMERS,
        BatchError,
        BatchJob,
        data_identity,
        default_threads,
        model_identity,
        pandas_runner,
        resolved_artifact,
        run_batch,
    )
    from serving.scorer import ScoringModel

    if dask_address is not None and dask_local is not None:
        raise BatchError("give at most one of --dask and --dask-local")
    chunk = DEFAULT_CHUNK_CUSTOMERS if chunk_customers is None else chunk_customers
    as_of_ts = to_utc_timestamp(as_of)
    config = log_config or LogConfig()
    if mapping:  # --map entries override the config file's column names
        columns = {**config.columns, **parse_mapping(mapping)}
        config = config.model_copy(update={"columns": columns})
    if not data.exists():
        raise BatchError(f"purchase log not found: {data}")
    if chunk < 1:
        raise BatchError(f"--chunk-customers must be at least 1, got {chunk}")
    with resolved_artifact(model_uri) as (artifact_dir, label):
        model = ScoringModel.load(artifact_dir)
        t0 = time.perf_counter()
        loaded = read_purchase_log(data, config)
        read_seconds = time.perf_counter() - t0
        job = BatchJob(
            as_of=as_of_ts,
            chunk_customers=chunk,
            campaign=campaign,
            with_features=features_out is not None,
            model_id=model_identity(artifact_dir),
            data_id=data_identity(data, loaded.report, config.model_dump_json()),
        )
        common = {
            "log": loaded.log,
            "report": loaded.report,
            "job": job,
            "out": out,
            "features_out": features_out,
            "resume": resume,
            "model_label": label,
            "policy": model.policy,
            "read_seconds": read_seconds,
            "horizon_days": model.horizon_days,
            "on_chunk": on_chunk,
            "progress": progress,
        }
        if dask_address is None and dask_local is None:
            runner = pandas_runner(
                model,
                loaded.log,
                as_of_ts,
                campaign=campaign,
                with_features=job.with_features,
                threads=default_threads() if threads is None else threads,
            )
            return run_batch(runner=runner, executor="pandas", **common)
        from serving.dask_jobs import dask_client, dask_runner

        with dask_client(dask_address, dask_local) as client:
            runner = dask_runner(
                client,
                artifact_dir,
                loaded.log,
                as_of_ts,
                campaign=campaign,
                with_features=job.with_features,
            )
            where = dask_address or f"LocalCluster({dask_local} workers)"
            return run_batch(runner=runner, executor=f"dask {where}", **common)


def report_command(
    data: Path,
    out: Path,
    *,
    scores: Path | None = None,
    as_of: str | None = None,
    mapping: list[str] | None = None,
    lift: Path | None = None,
) -> Path:
    """Load the log (and scores, and campaign results) and write the HTML report atomically."""
    from features.purchase_log import parse_mapping, read_purchase_log
    from features.schema import LogConfig
    from serving.report import build_report, write_report

    config = LogConfig(columns=parse_mapping(mapping or []))
    log = read_purchase_log(data, config).log
    measured = None
    if lift is not None:
        try:
            measured = json.loads(lift.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"--lift {lift}: not the JSON of `retain lift --json` ({exc})"
            ) from None
    html = build_report(log, scores_dir=scores, as_of=as_of, lift=measured)
    return write_report(html, out)


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``report`` to the root app."""

    @app.command("score")
    def score(
        data: Path = typer.Option(..., "--data", "-d", help="Purchase log: CSV or Parquet."),
        as_of: str = typer.Option(..., "--as-of", help="Scoring date (UTC if naive)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory of Parquet parts."),
        model_uri: str = typer.Option(
            DEFAULT_MODEL_URI, "--model-uri", help="models:/<name>@<alias> or an artifact dir."
        ),
        mapping: list[str] | None = typer.Option(None, "--map", "-m", help=_MAP_HELP),
        chunk_customers: int | None = typer.Option(
            None, "--chunk-customers", help="Customers per chunk / output part (default 100000)."
        ),
        features_out: Path | None = typer.Option(
            None, "--features-out", help="Also write the feature snapshot /score/ids reads."
        ),
        resume: bool = typer.Option(
            False, "--resume", help="Continue an interrupted run with the same inputs."
        ),
        campaign: str | None = typer.Option(None, "--campaign", help="Campaign (holdout seed)."),
        dask_address: str | None = typer.Option(
            None, "--dask", help="Dask scheduler address, e.g. tcp://host:8786."
        ),
        dask_local: int | None = typer.Option(
            None, "--dask-local", help="Start a local Dask cluster with N worker processes."
        ),
        config_file: Path | None = typer.Option(
            None, "--config", "-c", help="Log config file (YAML or TOML, `log:` section)."
        ),
        threads: int | None = typer.Option(
            None,
            "--threads",
            min=1,
            help="Chunks scored at once on one machine (default: cores, at most 4).",
        ),
    ) -> None:
        """Score every customer with the champion model into partitioned Parquet."""
        try:
            log_config = None
            if config_file is not None:
                from features.config_file import load_log_config

                log_config = load_log_config(config_file)
            summary = score_command(
                data,
                as_of,
                out,
                model_uri=model_uri,
                mapping=mapping,
                chunk_customers=chunk_customers,
                features_out=features_out,
                resume=resume,
                campaign=campaign,
                dask_address=dask_address,
                dask_local=dask_local,
                threads=threads,
                log_config=log_config,
            )
        except _expected_errors() as exc:
            raise _fail(str(exc)) from None
        typer.echo("\n".join(summary.lines()), err=True)
        typer.echo(json.dumps(summary.to_dict(), sort_keys=True))

    @app.command("report")
    def report(
        data: Path = typer.Option(..., "--data", "-d", help="Purchase log: CSV or Parquet."),
        out: Path = typer.Option(..., "--out", "-o", help="HTML file to write."),
        scores: Path | None = typer.Option(
            None, "--scores", help="Output directory of `retain score` (risk, offers)."
        ),
        as_of: str | None = typer.Option(
            None, "--as-of", help="Report date (UTC if naive); default: day after the last row."
        ),
        mapping: list[str] | None = typer.Option(None, "--map", "-m", help=_MAP_HELP),
        lift: Path | None = typer.Option(
            None, "--lift", help="JSON written by `retain lift --json` (campaign results)."
        ),
    ) -> None:
        """Write the retention report: one self-contained HTML page."""
        try:
            path = report_command(data, out, scores=scores, as_of=as_of, mapping=mapping, lift=lift)
        except _expected_errors() as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"wrote {path}", err=True)
