"""Batch scoring: every customer of a purchase log, chunk by chunk, to partitioned Parquet.

``retain score`` loads the log once (``features.log.purchase_log``), cuts it into customer chunks
(:mod:`serving.batch.chunks`) and scores each with :func:`serving.scorer.score`, the same
function the HTTP service calls; :func:`run_batch` stages every chunk, resuming finished ones,
and publishes the output (:mod:`serving.batch.publish`). A chunked run gives the same rows as
one whole-log call, as long as the offer policy does not rank customers against each other
(``min_value_quantile`` does: see :func:`serving.batch.chunks.chunk_dependent_rules`; the run
summary warns about it).

A run holds an ``flock`` on ``.DIR.retain/lock`` from start to publish, so a second run on the
same ``DIR`` is refused with the holder's pid; a ``DIR`` that is a plain directory holding
files is refused and left as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.atomic import VersionedDir, sha256_file
from features.log.canonical import LoadReport
from features.sources.database_log import DatabaseLog
from serving.batch.chunks import (
    PART_TEMPLATE,
    BatchError,
    Chunk,
    ChunkRunner,
    StagedChunk,
    chunk_dependent_rules,
    customer_chunks,
)
from serving.batch.publish import (
    FEATURES_DIR,
    SUCCESS_NAME,
    SUMMARY_NAME,
    BatchJob,
    Staging,
    json_text,
    pause_hook,
    plain_output,
)
from serving.offers.policy import OfferPolicy


@dataclass(frozen=True)
class PlannedRun:
    """A run whose chunks were planned without loading the log (a partitioned input).

    ``runner(staging_root)`` scores chunks and writes their parts into that directory;
    ``report(file_reports)`` merges the per-file load reports the tasks returned.
    """

    chunks: Sequence[Chunk]
    runner: Callable[[Path], ChunkRunner]
    report: Callable[[list[dict[str, Any]]], LoadReport]


@dataclass
class BatchSummary:
    """What one run did; printed and written as ``_summary.json``."""

    run_id: str
    out: str
    features_out: str | None
    as_of: str
    model: str
    data: str
    campaign: str | None
    horizon_days: int | None
    rows_in: int
    rows_kept: int
    dropped: dict[str, int]
    not_used: dict[str, int]  # kept rows the scores do not use, e.g. at or after as_of
    customers_in_log: int
    customers_scored: int
    chunks: int
    chunks_resumed: int
    chunk_customers: int
    executor: str
    offers: dict[str, int]
    seconds: dict[str, float]
    files: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    # the model's past log-error spread of the total purchases and spend (the report draws
    # the 90 % interval of the scores' totals from it); None: the model records none
    total_log_spread: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def lines(self) -> list[str]:
        per_min = self.customers_scored / max(self.seconds.get("total", 0.0), 1e-9) * 60.0
        out = [
            f"scored {self.customers_scored:,} customers as of {self.as_of} -> {self.out}",
            f"  rows in: {self.rows_in:,}   rows kept: {self.rows_kept:,}",
        ]
        out += [f"  dropped ({k}): {v:,}" for k, v in sorted(self.dropped.items())]
        out += [f"  kept, not used ({k}): {v:,}" for k, v in self.not_used.items()]
        out.append(
            f"  chunks: {self.chunks} ({self.chunks_resumed} resumed), "
            f"{self.chunk_customers:,} customers each, executor {self.executor}"
        )
        out.append(
            "  time: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
            + f"  ({per_min:,.0f} customers/min overall)"
        )
        out += [f"  offer {k}: {v:,}" for k, v in sorted(self.offers.items())]
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def run_batch(
    *,
    log: pd.DataFrame | None,
    report: LoadReport | None,
    job: BatchJob,
    runner: ChunkRunner | None = None,
    planned: PlannedRun | None = None,
    out: str | Path,
    features_out: str | Path | None = None,
    resume: bool = False,
    model_label: str = "",
    executor: str = "pandas",
    policy: OfferPolicy | None = None,
    read_seconds: float = 0.0,
    horizon_days: int | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    progress: bool = False,
    total_log_spread: dict[str, float] | None = None,
) -> BatchSummary:
    """Score every chunk not yet finished, then publish the output atomically.

    ``on_chunk`` is called after each chunk is safely staged (tests use it to interrupt a
    run); an exception anywhere leaves the staging directory for ``resume`` and ``out`` as it
    was. ``out`` (and ``features_out``) are locked for the whole run.

    Without a loaded ``log`` (a partitioned input), ``planned`` gives the chunks and the
    runner, which writes into the staging directory itself; the load report is then merged
    from the files' reports the tasks return.
    """
    if (log is None) != (planned is not None) or (runner is None) != (planned is not None):
        raise ValueError("give log and runner, or planned (and no log)")
    started = time.perf_counter()
    out_dir = Path(out)
    if job.with_features != (features_out is not None):
        raise ValueError("job.with_features must be True exactly when features_out is given")
    if features_out is not None:
        one, other = out_dir.absolute(), Path(features_out).absolute()
        if one == other or one in other.parents or other in one.parents:
            raise BatchError(
                f"--features-out ({features_out}) and --out ({out_dir}) must not be the same "
                "directory or one inside the other: each is published as a whole"
            )
    targets = [out_dir] if features_out is None else [out_dir, Path(features_out)]
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context(VersionedDir(t, adopt=plain_output)) for t in targets]
        summary, staging = _score_and_summarize(
            log=log,
            report=report,
            job=job,
            runner=runner,
            planned=planned,
            store=outputs[0].store,
            out_dir=out_dir,
            features_out=features_out,
            resume=resume,
            model_label=model_label,
            executor=executor,
            policy=policy,
            horizon_days=horizon_days,
            on_chunk=on_chunk,
            progress=progress,
        )
        summary.total_log_spread = total_log_spread
        scored = time.perf_counter()
        names = [PART_TEMPLATE.format(i) for i in range(summary.chunks)]
        success = {SUCCESS_NAME: f"{job.run_id}\n"}
        if len(outputs) > 1:
            outputs[1].publish(
                {n: staging.root / FEATURES_DIR / n for n in names},
                success,
                digests={n: summary.files[f"{FEATURES_DIR}/{n}"] for n in names},
                before_switch=pause_hook("features"),
            )
        summary.seconds = {
            "read": round(read_seconds, 3),
            "score": round(scored - started, 3),  # chunks scored and their parts staged
            "publish": round(time.perf_counter() - scored, 3),
            "total": round(read_seconds + time.perf_counter() - started, 3),
        }
        outputs[0].publish(
            {n: staging.root / n for n in names},
            {**success, SUMMARY_NAME: json_text(summary.to_dict())},
            digests={n: summary.files[n] for n in names},
            before_switch=pause_hook("scores"),
        )
        shutil.rmtree(staging.root, ignore_errors=True)
        for output in outputs:
            summary.warnings.extend(output.warnings)
    return summary


def _score_and_summarize(
    *,
    log: pd.DataFrame | None,
    report: LoadReport | None,
    job: BatchJob,
    runner: ChunkRunner | None,
    planned: PlannedRun | None,
    store: Path,
    out_dir: Path,
    features_out: str | Path | None,
    resume: bool,
    model_label: str,
    executor: str,
    policy: OfferPolicy | None,
    horizon_days: int | None,
    on_chunk: Callable[[Chunk], None] | None,
    progress: bool,
) -> tuple[BatchSummary, Staging]:
    """Stage every chunk (resuming finished ones) and build the run summary."""
    if planned is not None:
        chunks = list(planned.chunks)
    else:
        assert log is not None
        chunks = customer_chunks(log, job.chunk_customers)
    staging = Staging(store, job)
    resumed = staging.open(resume)
    pending = [c for c in chunks if c.index not in staging.done]

    run = planned.runner(staging.root) if planned is not None else runner
    assert run is not None
    with _progress_bar(progress, len(chunks), resumed) as advance:
        for result in run(pending):
            if isinstance(result, StagedChunk):
                staging.add(result.chunk.index, result.entry)
            else:
                staging.record(result, job.as_of)
            advance(1)
            if on_chunk is not None:
                on_chunk(result.chunk)
    missing = sorted({c.index for c in chunks} - set(staging.done))
    if missing:
        raise RuntimeError(f"runner did not return chunk(s) {missing[:10]}")

    warnings: list[str] = []
    dependent = chunk_dependent_rules(policy) if policy is not None else []
    if dependent and len(chunks) > 1:
        warnings.append(
            f"offer rule(s) {dependent} use min_value_quantile, which ranks customers within "
            f"each chunk: offers depend on --chunk-customers ({job.chunk_customers:,}); use "
            "min_expected_spend_365d for chunk-independent offers"
        )
    if report is None:
        assert planned is not None
        reports = [r for c in chunks for r in staging.done[c.index].get("reports", [])]
        report = planned.report(reports)
    if log is not None:
        not_used = int((log["timestamp"] >= job.as_of).sum())
    else:
        not_used = sum(int(staging.done[c.index].get("not_used", 0)) for c in chunks)
    offers: dict[str, int] = {}
    files: dict[str, str] = {}
    for c in chunks:
        entry = staging.done[c.index]
        for k, v in entry["offers"].items():
            offers[k] = offers.get(k, 0) + v
        files.update(entry["files"])
    summary = BatchSummary(
        run_id=job.run_id,
        out=str(out_dir),
        features_out=None if features_out is None else str(features_out),
        as_of=job.as_of.isoformat(),
        model=model_label or job.model_id,
        data=report.source or job.data_id,
        campaign=job.campaign,
        horizon_days=horizon_days,
        rows_in=report.rows_read,
        rows_kept=report.rows_kept,
        dropped=dict(report.dropped),
        not_used={"at or after as_of": not_used},
        customers_in_log=report.n_customers,
        customers_scored=sum(staging.done[c.index]["customers"] for c in chunks),
        chunks=len(chunks),
        chunks_resumed=resumed,
        chunk_customers=job.chunk_customers,
        executor=executor,
        offers=dict(sorted(offers.items())),
        seconds={},
        files=dict(sorted(files.items())),
        warnings=warnings,
    )
    return summary, staging


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, done: int) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("scoring chunks"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("score", total=total, completed=done)
        yield lambda rows: bar.advance(task)


# ---- model and data identity ------------------------------------------------------------


def model_identity(artifact_dir: Path) -> str:
    """sha256 of the artifact manifest, which itself lists the sha256 of every file."""
    from training.artifact import MANIFEST_NAME as ARTIFACT_MANIFEST

    return sha256_file(artifact_dir / ARTIFACT_MANIFEST)


def data_identity(source: str | Path | DatabaseLog, report: LoadReport, config_json: str) -> str:
    """Cheap identity of the input: path, size, mtime, loader config and row counts.

    A database table or query has no size or mtime: its URL (password masked), table or
    query, and what the load report says of its rows (counts, customers, time span) stand in.
    """
    if isinstance(source, DatabaseLog):
        key = "|".join(
            str(x)
            for x in (
                source,
                source.query,
                config_json,
                report.rows_read,
                report.rows_kept,
                report.n_returns,
                report.n_customers,
                report.first_timestamp,
                report.last_timestamp,
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(source)
    st = path.stat()
    key = f"{path.absolute()}|{st.st_size}|{st.st_mtime_ns}|{config_json}|{report.rows_read}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@contextlib.contextmanager
def artifact_with_label(model_uri: str) -> Iterator[tuple[Path, str]]:
    """(artifact directory, label) for a local directory or ``models:/name@alias``.

    The directory lives as long as the run (Dask workers receive the files from it).
    """
    from serving.model_source import ModelResolutionError
    from serving.model_source import resolved_artifact as resolve

    try:
        with resolve(model_uri) as (path, source):
            label = (
                source.uri
                if source.version == "local"
                else (f"models:/{source.name}/{source.version} ({model_uri})")
            )
            yield path, label
    except ModelResolutionError as exc:
        raise BatchError(str(exc)) from exc
