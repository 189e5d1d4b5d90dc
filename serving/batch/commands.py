"""``retain score``: the batch sub-command.

Heavy imports happen inside the commands so ``retain --help`` stays fast. Expected input
errors (unreadable log, bad model, bad options) raise; the root app prints them as one
``error:`` line on stderr with exit code 2 (:mod:`serving.cli_errors`), and nothing is left
visible in the output directory.
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
    from serving.batch.chunks import Chunk
    from serving.batch.run import BatchSummary

_MAP_HELP = "Column mapping CANONICAL=SOURCE, repeatable, e.g. --map customer_id=CustomerID."
DEFAULT_MODEL_URI = "models:/retain@champion"


def _read_log_config(config_file: Path | None) -> LogConfig | None:
    """The ``--config`` file's log config (None without one), through the one loader."""
    if config_file is None:
        return None
    from features.config_file import load_log_config

    return load_log_config(config_file)


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
    """Load, score in chunks (pandas or Dask), publish; return the run summary.

    The log is read with the model's log config (from its manifest). ``log_config`` (a
    ``--config`` file) may change how the file is laid out (columns, time zone, date format,
    ...) but not the counting rules the model was trained with
    (:func:`features.schema.scoring_log_config` refuses a conflicting one, naming it);
    ``mapping`` (``--map``) then overrides column names one by one.
    """
    from features.config_file import apply_options
    from features.purchase_log import read_purchase_log
    from features.schema import LogConfig, scoring_log_config
    from features.utc import to_utc_timestamp
    from serving.batch.chunks import (
        DEFAULT_CHUNK_CUSTOMERS,
        BatchError,
        default_threads,
        pandas_runner,
    )
    from serving.batch.publish import BatchJob
    from serving.batch.run import artifact_with_label, data_identity, model_identity, run_batch
    from serving.scorer import ScoringModel

    if dask_address is not None and dask_local is not None:
        raise BatchError("give at most one of --dask and --dask-local")
    if dask_local is not None and dask_local < 1:
        raise BatchError(f"--dask-local needs at least 1 worker, got {dask_local}")
    if dask_address is not None:
        from serving.batch.dask import check_scheduler

        check_scheduler(dask_address)  # in seconds, before the log is read
    chunk = DEFAULT_CHUNK_CUSTOMERS if chunk_customers is None else chunk_customers
    as_of_ts = to_utc_timestamp(as_of, "--as-of")
    apply_options(LogConfig(), mapping)  # a malformed --map fails before the model loads
    if not data.exists():
        raise BatchError(f"purchase log not found: {data}")
    if chunk < 1:
        raise BatchError(f"--chunk-customers must be at least 1, got {chunk}")
    with artifact_with_label(model_uri) as (artifact_dir, label):
        model = ScoringModel.load(artifact_dir)
        config = apply_options(scoring_log_config(model.log_config, log_config), mapping)
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
        from serving.batch.dask import dask_client, dask_runner

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


def register(app: typer.Typer) -> None:
    """Add ``score`` to the root app."""

    @app.command("score")
    def score(
        data: Path = typer.Option(..., "--data", "-d", help="Purchase log: CSV or Parquet."),
        as_of: str = typer.Option(..., "--as-of", help="Scoring date (UTC if naive)."),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output: a link to the current directory of Parquet parts."
        ),
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
            None,
            "--config",
            "-c",
            help="Log config file (YAML or TOML, `log:` section): how this file is laid out "
            "(columns, timezone, date_format, ...); the model's counting rules "
            "(cancel_prefix, duplicates) apply and may not be changed.",
        ),
        threads: int | None = typer.Option(
            None,
            "--threads",
            min=1,
            help="Chunks scored at once on one machine (default: cores, at most 4).",
        ),
    ) -> None:
        """Score every customer with the champion model into partitioned Parquet."""
        log_config = _read_log_config(config_file)
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
        typer.echo("\n".join(summary.lines()), err=True)
        typer.echo(json.dumps(summary.to_dict(), sort_keys=True))
