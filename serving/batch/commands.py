"""``retain score``: the batch sub-command.

Heavy imports happen inside the commands so ``retain --help`` stays fast. Expected input
errors (unreadable log, bad model, bad options) raise; the root app prints them as one
``error:`` line on stderr with exit code 2 (:mod:`serving.cli_errors`), and nothing is left
visible in the output directory.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from features.cli_options import (
    AsOfOption,
    ConfigOption,
    DaskLocalOption,
    DaskOption,
    DataOption,
    MapOption,
    ModelUriOption,
    QueryOption,
    TableOption,
    ThreadsOption,
    UrlEnvOption,
)
from features.errors import InputError
from features.sources.log_source import log_source

if TYPE_CHECKING:
    import pandas as pd

    from features.log.schema import LogConfig
    from features.sources.database import DatabaseUrl
    from features.sources.database_log import DatabaseLog
    from serving.batch.chunks import Chunk
    from serving.batch.run import BatchSummary
    from serving.batch.table_output import TableOutput
    from serving.scorer import ScoringModel

DEFAULT_MODEL_URI = "models:/retain@champion"


def _read_log_config(config_file: Path | None) -> LogConfig | None:
    """The ``--config`` file's log config (None without one), through the one loader."""
    if config_file is None:
        return None
    from features.config_file import load_log_config

    return load_log_config(config_file)


def score_command(
    data: Path | DatabaseLog,
    as_of: str,
    out: str | Path,
    *,
    out_table: str | None = None,
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
    (:func:`features.log.schema.scoring_log_config` refuses a conflicting one, naming it);
    ``mapping`` (``--map``) then overrides column names one by one.

    ``out`` a database URL (with ``out_table``) publishes into a table
    (:mod:`serving.batch.table_output`): the parts are written to a private directory (the
    same bytes a directory output gets), then staged and switched in.
    """
    from features.config_file import apply_options
    from features.log.purchase_log import read_purchase_log
    from features.log.schema import LogConfig, scoring_log_config
    from features.utc import to_utc_timestamp
    from serving.batch.chunks import (
        DEFAULT_CHUNK_CUSTOMERS,
        BatchError,
        default_threads,
        pandas_runner,
    )
    from serving.batch.database_ranges import is_range_source
    from serving.batch.partitioned import is_partitioned_source
    from serving.batch.publish import BatchJob
    from serving.batch.run import artifact_with_label, data_identity, model_identity, run_batch
    from serving.scorer import ScoringModel

    if dask_address is not None and dask_local is not None:
        raise BatchError("give at most one of --dask and --dask-local")
    if dask_local is not None and dask_local < 1:
        raise BatchError(f"--dask-local needs at least 1 worker, got {dask_local}")
    if dask_address is not None:
        from features.dask_cluster import check_scheduler

        check_scheduler(dask_address)  # in seconds, before the log is read
    chunk = DEFAULT_CHUNK_CUSTOMERS if chunk_customers is None else chunk_customers
    as_of_ts = to_utc_timestamp(as_of, "--as-of")
    apply_options(LogConfig(), mapping)  # a malformed --map fails before the model loads
    out_url = _table_target(out, out_table, resume)
    partitioned = is_partitioned_source(data) or is_range_source(data, dask_address, dask_local)
    if isinstance(data, Path) and not partitioned and not data.exists():
        raise BatchError(f"purchase log not found: {data}")
    if chunk < 1:
        raise BatchError(f"--chunk-customers must be at least 1, got {chunk}")
    with artifact_with_label(model_uri) as (artifact_dir, label), contextlib.ExitStack() as stack:
        on_cluster = partitioned and (dask_address is not None or dask_local is not None)
        model = _driver_model(artifact_dir) if on_cluster else ScoringModel.load(artifact_dir)
        config = apply_options(scoring_log_config(model.log_config, log_config), mapping)
        if partitioned:
            summary = _score_partitioned(
                data,
                out,
                out_url,
                out_table,
                stack,
                model=model,
                artifact_dir=artifact_dir,
                label=label,
                config=config,
                as_of=as_of_ts,
                chunk=chunk,
                campaign=campaign,
                features_out=features_out,
                resume=resume,
                dask_address=dask_address,
                dask_local=dask_local,
                threads=threads,
                on_chunk=on_chunk,
                progress=progress,
            )
            return summary
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
        directory, table_output = Path(out), None
        if out_url is not None and out_table is not None:
            from serving.batch.table_output import TableOutput

            # locked (a second run refused) and the target checked before any scoring
            table_output = stack.enter_context(TableOutput(out_url, out_table, job.run_id))
            private = stack.enter_context(tempfile.TemporaryDirectory(prefix="retain-score-"))
            directory = Path(private) / "scores"
        common = {
            "log": loaded.log,
            "report": loaded.report,
            "job": job,
            "out": directory,
            "features_out": features_out,
            "resume": resume,
            "model_label": label,
            "policy": model.policy,
            "read_seconds": read_seconds,
            "horizon_days": model.horizon_days,
            "total_log_spread": model.artifact.models.combination_.total_spreads(),
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
            summary = run_batch(runner=runner, executor="pandas", **common)
            return _published(summary, directory, table_output)
        from features.dask_cluster import dask_client
        from serving.batch.dask import dask_runner

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
            summary = run_batch(runner=runner, executor=f"dask {where}", **common)
        return _published(summary, directory, table_output)


def _driver_model(artifact_dir: Path) -> ScoringModel:
    """The model as the driver of a cluster run needs it: hash-checked, not compiled.

    The workers compile and score (:meth:`serving.batch.dask.ArtifactFiles.cached`); the
    driver reads only the policy, horizon and log config, so it skips the seconds and the
    memory compiling takes.
    """
    from serving.offers.policy import OfferPolicy
    from serving.scorer import ScoringModel
    from training.artifact import load_artifact

    artifact = load_artifact(artifact_dir)
    return ScoringModel(artifact=artifact, policy=OfferPolicy.from_yaml(artifact.policy_yaml))


def _score_partitioned(
    data: Path | DatabaseLog,
    out: str | Path,
    out_url: DatabaseUrl | None,
    out_table: str | None,
    stack: contextlib.ExitStack,
    *,
    model: ScoringModel,
    artifact_dir: Path,
    label: str,
    config: LogConfig,
    as_of: pd.Timestamp,
    chunk: int,
    campaign: str | None,
    features_out: Path | None,
    resume: bool,
    dask_address: str | None,
    dask_local: int | None,
    threads: int | None,
    on_chunk: Callable[[Chunk], None] | None,
    progress: bool,
) -> BatchSummary:
    """A directory or glob of Parquet files, or a PostgreSQL log on a cluster: tasks read,
    score and write their own parts.

    The driver never loads the log (:mod:`serving.batch.partitioned`,
    :mod:`serving.batch.database_ranges`); the tasks run on threads here, or on the Dask
    cluster with ``--dask``/``--dask-local``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from serving.batch.chunks import default_threads
    from serving.batch.partitioned import (
        files_identity,
        input_files,
        merged_report,
        plan_on,
        planned_runner,
    )
    from serving.batch.publish import BatchJob
    from serving.batch.run import PlannedRun, model_identity, run_batch

    t0 = time.perf_counter()
    if isinstance(data, Path):
        files = input_files(data)
        data_id = files_identity(files, config.model_dump_json())
    else:
        from serving.batch.database_ranges import plan_ranges

        ranges = stack.enter_context(plan_ranges(data, config, chunk))  # holds the snapshot
        data_id = ranges.identity(config.model_dump_json())
    job = BatchJob(
        as_of=as_of,
        chunk_customers=chunk,
        campaign=campaign,
        with_features=features_out is not None,
        model_id=model_identity(artifact_dir),
        data_id=data_id,
    )
    directory, table_output = Path(out), None
    if out_url is not None and out_table is not None:
        from serving.batch.table_output import TableOutput

        table_output = stack.enter_context(TableOutput(out_url, out_table, job.run_id))
        private = stack.enter_context(tempfile.TemporaryDirectory(prefix="retain-score-"))
        directory = Path(private) / "scores"
    shipped: object = model
    if dask_address is None and dask_local is None:
        executor = stack.enter_context(
            ThreadPoolExecutor(default_threads() if threads is None else threads)
        )
        where = "pandas"
    else:
        from features.dask_cluster import dask_client
        from serving.batch.dask import ArtifactFiles

        client = stack.enter_context(dask_client(dask_address, dask_local))
        executor = client.get_executor()
        shipped = client.scatter(ArtifactFiles.read(artifact_dir), broadcast=True)
        where = f"dask {dask_address or f'LocalCluster({dask_local} workers)'}"
    if not isinstance(data, Path):
        planned = ranges.planned_run(executor, shipped, as_of, campaign, job.with_features)
        where += f", {len(ranges.ranges)} customer range(s) of {data.what}"
    else:
        plans, _ = plan_on(executor, files, config, chunk)
        planned = PlannedRun(
            chunks=[p.chunk for p in plans],
            runner=lambda staging: planned_runner(
                executor,
                plans,
                config=config,
                model=shipped,
                as_of=as_of,
                campaign=campaign,
                with_features=job.with_features,
                staging=staging,
            ),
            report=lambda reports: merged_report(reports, str(data)),
        )
        where += f", {len(files)} partition file(s)"
    summary = run_batch(
        log=None,
        report=None,
        job=job,
        planned=planned,
        out=directory,
        features_out=features_out,
        resume=resume,
        model_label=label,
        executor=where,
        policy=model.policy,
        read_seconds=time.perf_counter() - t0,
        horizon_days=model.horizon_days,
        on_chunk=on_chunk,
        progress=progress,
        total_log_spread=model.artifact.models.combination_.total_spreads(),
    )
    return _published(summary, directory, table_output)


def _table_target(out: str | Path, out_table: str | None, resume: bool) -> DatabaseUrl | None:
    """The database ``--out`` names (None for a directory); ``--out-table`` goes with it."""
    from features.sources.database import is_database_url, parse_url
    from serving.batch.chunks import BatchError

    if not is_database_url(str(out)):
        if out_table is not None:
            raise BatchError(
                f"--out-table names a table in a database, but --out {str(out)!r} is a "
                "directory; give --out postgresql://user@host:port/db"
            )
        return None
    url = parse_url(str(out), option="--out")
    if out_table is None:
        raise BatchError(f"--out {url} is a database: give --out-table NAME")
    if resume:
        raise BatchError("--resume applies to a directory --out, not to a database table")
    return url


def _published(
    summary: BatchSummary, directory: Path, table_output: TableOutput | None
) -> BatchSummary:
    """``summary`` as is for a directory; for a table, after staging and switching the parts."""
    if table_output is None:
        return summary
    from serving.batch.publish import pause_hook

    started = time.perf_counter()
    summary.out = f"{table_output.url} table {table_output.label!r}"
    summary.files = {}
    parts = sorted(directory.glob("part-*.parquet"))
    table_output.publish(parts, summary.to_dict(), pause_hook("scores"))
    spent = time.perf_counter() - started
    summary.seconds["publish"] = round(summary.seconds.get("publish", 0.0) + spent, 3)
    summary.seconds["total"] = round(summary.seconds.get("total", 0.0) + spent, 3)
    return summary


def partition_command(
    data: Path,
    out: Path,
    parts: int,
    mapping: list[str] | None = None,
    chunk_customers: int | None = None,
) -> dict[str, object]:
    """Rewrite a Parquet log into ``parts`` customer-range files for cluster scoring.

    The files are aligned to ``chunk_customers`` (default: scoring's default chunk), so each
    chunk of a ``retain score`` with that chunk size reads one file.
    """
    from dataclasses import asdict

    from features.config_file import apply_options
    from features.log.schema import LogConfig
    from features.sources.partition_log import partition_log
    from serving.batch.chunks import DEFAULT_CHUNK_CUSTOMERS

    chunk = DEFAULT_CHUNK_CUSTOMERS if chunk_customers is None else chunk_customers
    config = apply_options(LogConfig(), mapping)
    return asdict(partition_log(data, out, parts, config, chunk_customers=chunk))


def partition(
    data: DataOption = None,
    out: Path = typer.Option(..., "--out", "-o", help="Directory of customer-range parts."),
    parts: int = typer.Option(..., "--parts", help="Number of files to write."),
    mapping: MapOption = None,
    chunk_customers: int | None = typer.Option(
        None,
        "--chunk-customers",
        help="Cut the files at multiples of this many customers, the --chunk-customers "
        "of the later `retain score` (default 100000), so each chunk reads one file.",
    ),
) -> None:
    """Rewrite a log once into files of disjoint customer ranges (for `score --dask`).

    --data is a Parquet file.
    """
    source = log_source(data)
    if not isinstance(source, Path):
        raise InputError("retain partition reads a Parquet file, not a database table")
    summary = partition_command(source, out, parts, mapping, chunk_customers)
    typer.echo(json.dumps(summary, sort_keys=True))


def score(
    *,
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    as_of: AsOfOption,
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output: a link to the current directory of Parquet parts, or a database "
        "(postgresql://user@host:port/db) with --out-table.",
    ),
    out_table: str | None = typer.Option(
        None,
        "--out-table",
        help="Table the scores are published into (with a database --out): switched in "
        "one transaction; a table retain did not create is refused.",
    ),
    model_uri: ModelUriOption = DEFAULT_MODEL_URI,
    mapping: MapOption = None,
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
    dask_address: DaskOption = None,
    dask_local: DaskLocalOption = None,
    config_file: ConfigOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Score every customer with the champion model into partitioned Parquet.

    The --config file says how this log is laid out (columns, timezone, date_format, ...);
    the model's counting rules (cancel_prefix, duplicates) apply and may not be changed.
    """
    log_config = _read_log_config(config_file)
    source = log_source(data, table=table, query=query, url_env=url_env, config_file=config_file)
    summary = score_command(
        source,
        as_of,
        out,
        out_table=out_table,
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


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``partition`` to the root app."""
    app.command("partition")(partition)
    app.command("score")(score)
