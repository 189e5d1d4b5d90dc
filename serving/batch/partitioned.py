"""Batch scoring where the data is: each task reads its own Parquet files, scores, writes.

A log given as a directory or glob of Parquet files, whose files hold disjoint customer
ranges (what ``retain partition`` writes), is scored without the driver ever loading it:

1. **plan** - one small task per file reads only its customer-id column and returns
   (first id, last id, customers, rows) (:func:`summarize_file`). The driver orders the files
   by first id, refuses overlapping ranges (a customer split over files could not be scored
   whole), and cuts the global customer order into the chunks the single-machine path cuts:
   chunk ``i`` is customers ``[i*N, (i+1)*N)`` of the sorted ids, as pieces of one or more
   files (:func:`plan_chunks`). So parts do not depend on where or how they are computed.
2. **score** - one task per chunk loads its files with the canonical loader (cached per
   worker process), takes the chunk's customers, scores them with the shared scorer and
   writes the Parquet parts straight into the run's staging directory
   (:func:`score_planned_chunk`); it returns the small manifest entry (customers, rows,
   offers, file digests, its share of the load report).
3. **publish** - the driver records the entries and publishes exactly as for any run
   (:func:`serving.batch.run.run_batch`): manifest, resume, atomic switch, lock.

The same tasks run on threads in this process or on a Dask cluster (any
``concurrent.futures.Executor``): on a cluster the input files and the output's staging
directory must be on storage every worker can reach; the model travels as its files.
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.errors import UserError
from features.log.canonical import LoadReport
from features.log.purchase_log import read_purchase_log
from features.log.reading import resolve_columns
from features.log.schema import LogConfig, PurchaseLogError
from features.log.text_columns import code_customers
from serving.batch.chunks import (
    BatchError,
    Chunk,
    ChunkResult,
    ChunkRunner,
    StagedChunk,
    chunk_frame,
    score_chunk,
)
from serving.batch.publish import write_chunk
from serving.scorer import ScoringModel

if TYPE_CHECKING:
    from serving.batch.dask import ArtifactFiles

PARQUET_SUFFIXES = (".parquet", ".pq")
_GLOB_CHARS = "*?["
LOADED_FILES_PER_PROCESS = 2


class PartitionError(BatchError):
    """A partitioned log cannot be scored as given (overlap, bad rows in a file, ...)."""


def is_partitioned_source(data: object) -> bool:
    """True for a directory or a glob pattern: the log comes as several Parquet files."""
    if not isinstance(data, Path):
        return False
    return data.is_dir() or any(c in str(data) for c in _GLOB_CHARS)


def input_files(data: Path) -> list[Path]:
    """The Parquet files of a directory (not recursive) or glob, sorted by name."""
    if data.is_dir():
        found = [p for p in data.iterdir() if p.name.lower().endswith(PARQUET_SUFFIXES)]
    else:
        found = [Path(p) for p in glob.glob(str(data))]
    files = sorted(p for p in found if p.is_file() and not p.name.startswith((".", "_")))
    if not files:
        raise PartitionError(f"no Parquet files (*.parquet) in {data}")
    return files


def files_identity(files: Sequence[Path], config_json: str) -> str:
    """Cheap identity of a partitioned input: every file's path, size and mtime, the config."""
    sha = hashlib.sha256(config_json.encode())
    for path in files:
        st = path.stat()
        sha.update(f"|{path.absolute()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return sha.hexdigest()[:16]


@dataclass(frozen=True)
class FileSummary:
    """What planning needs of one input file (read from its id column only)."""

    path: str
    first_id: str | None
    last_id: str | None
    customers: int
    rows: int


@dataclass(frozen=True)
class Piece:
    """Customers ``[code_start, code_stop)`` of one file (codes into its sorted ids)."""

    path: str
    code_start: int
    code_stop: int


@dataclass(frozen=True)
class PlannedChunk:
    """One output part: the chunk (as the single-machine path numbers it) and its pieces."""

    chunk: Chunk
    pieces: tuple[Piece, ...]
    reports: tuple[str, ...]  # files whose load report this chunk returns (their first piece)


def summarize_file(path: str, config: LogConfig) -> FileSummary:
    """First and last customer id, customer and row counts of one file (a worker task)."""
    try:
        names = resolve_columns(pq.read_schema(path).names, config)
        column = names["customer_id"]
        ids = pd.read_parquet(path, columns=[column])[column]
        _, customers = code_customers(ids)
    except (UserError, OSError, ValueError) as exc:
        raise PartitionError(f"{path}: {exc}") from None
    first = str(customers[0]) if len(customers) else None
    last = str(customers[-1]) if len(customers) else None
    return FileSummary(path, first, last, len(customers), len(ids))


def plan_chunks(
    summaries: Sequence[FileSummary], chunk_customers: int
) -> tuple[list[PlannedChunk], int]:
    """Chunks of ``chunk_customers`` customers in global id order; and the customer total.

    Files must hold disjoint, non-interleaved id ranges; files with no customer only
    contribute their load report (to the first chunk).
    """
    if chunk_customers < 1:
        raise BatchError(f"chunk size must be at least 1 customer, got {chunk_customers}")
    holding = sorted((s for s in summaries if s.customers), key=lambda s: str(s.first_id))
    for before, after in itertools.pairwise(holding):
        if str(after.first_id) <= str(before.last_id):
            raise PartitionError(
                f"customer ids of {before.path} ({before.first_id}..{before.last_id}) and "
                f"{after.path} ({after.first_id}..{after.last_id}) overlap: a customer's rows "
                "must be in one file; rewrite the log once with `retain partition --data LOG "
                "--out DIR --parts N`"
            )
    offsets = np.cumsum([0] + [s.customers for s in holding])
    total = int(offsets[-1])
    empty = tuple(s.path for s in summaries if not s.customers)
    plans: list[PlannedChunk] = []
    for index, start in enumerate(range(0, max(total, 1), chunk_customers)):
        stop = min(start + chunk_customers, total)
        pieces = []
        for summary, offset in zip(holding, offsets[:-1], strict=True):
            a, b = max(start - int(offset), 0), min(stop - int(offset), summary.customers)
            if a < b:
                pieces.append(Piece(summary.path, a, b))
        reports = tuple(p.path for p in pieces if p.code_start == 0)
        if index == 0:
            reports = empty + reports
        plans.append(PlannedChunk(Chunk(index, start, stop, 0, 0), tuple(pieces), reports))
    return plans, total


_LOADED: OrderedDict[tuple[str, str], Any] = OrderedDict()
_LOAD_LOCK = threading.Lock()


def load_file(path: str, config: LogConfig) -> Any:
    """The canonical log of one file, cached per process (a chunk's neighbour reuses it)."""
    st = Path(path).stat()
    key = (f"{path}|{st.st_size}|{st.st_mtime_ns}", config.model_dump_json())
    with _LOAD_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    try:
        loaded = read_purchase_log(Path(path), config)
    except PurchaseLogError as exc:
        raise PurchaseLogError(f"{path}: {exc}") from None
    except (UserError, OSError) as exc:
        raise PartitionError(f"{path}: {exc}") from None
    with _LOAD_LOCK:
        _LOADED[key] = loaded
        while len(_LOADED) > LOADED_FILES_PER_PROCESS:
            _LOADED.popitem(last=False)
    return loaded


def _piece_frame(log: pd.DataFrame, piece: Piece) -> pd.DataFrame:
    codes = np.asarray(log["customer_id"].array.codes)
    rows = np.searchsorted(codes, [piece.code_start, piece.code_stop], side="left")
    return chunk_frame(log, Chunk(0, piece.code_start, piece.code_stop, int(rows[0]), int(rows[1])))


def chunk_log(plan: PlannedChunk, config: LogConfig) -> pd.DataFrame:
    """The chunk's rows as one canonical log (the pieces' customers, in id order)."""
    frames = [_piece_frame(load_file(p.path, config).log, p) for p in plan.pieces]
    if len(frames) == 1:
        return frames[0]
    categories = pd.Index(np.concatenate([f["customer_id"].cat.categories for f in frames]))
    shift = np.cumsum([0] + [len(f["customer_id"].cat.categories) for f in frames])
    codes = np.concatenate(
        [np.asarray(f["customer_id"].array.codes) + s for f, s in zip(frames, shift, strict=False)]
    )
    out = pd.concat(frames, ignore_index=True)
    out["customer_id"] = pd.Categorical.from_codes(codes, categories=categories)
    return out


def score_planned_chunk(
    plan: PlannedChunk,
    config: LogConfig,
    model: ScoringModel | ArtifactFiles,
    as_of: pd.Timestamp,
    campaign: str | None,
    with_features: bool,
    staging: str,
) -> dict[str, Any]:
    """Score one planned chunk and write its parts into ``staging``; return its entry.

    ``model`` is a :class:`serving.scorer.ScoringModel` (threads) or a
    :class:`serving.batch.dask.ArtifactFiles` (a worker loads it once per process).
    """
    scoring = model if isinstance(model, ScoringModel) else model.cached()
    log = chunk_log(plan, config)
    scores, features = score_chunk(
        scoring, log, as_of, campaign=campaign, with_features=with_features
    )
    chunk = plan.chunk
    result = ChunkResult(
        Chunk(chunk.index, chunk.code_start, chunk.code_stop, 0, len(log)), scores, features
    )
    entry = write_chunk(Path(staging), result, as_of)
    entry["not_used"] = int((log["timestamp"] >= as_of).sum())
    entry["reports"] = [_report_dict(path, load_file(path, config).report) for path in plan.reports]
    return entry


def _report_dict(path: str, report: LoadReport) -> dict[str, Any]:
    data = report.to_dict()
    data["warnings"] = [f"{path}: {w}" for w in report.warnings]
    data["source"] = path
    return data


def merged_report(parts: Sequence[dict[str, Any]], source: str) -> LoadReport:
    """One load report for the whole input, summed over the files' reports."""
    dropped: dict[str, int] = {}
    for part in parts:
        for reason, count in part["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + int(count)
    firsts = [pd.Timestamp(p["first_timestamp"]) for p in parts if p["first_timestamp"]]
    lasts = [pd.Timestamp(p["last_timestamp"]) for p in parts if p["last_timestamp"]]
    ordered = sorted(parts, key=lambda p: str(p["source"]))
    return LoadReport(
        rows_read=sum(int(p["rows_read"]) for p in parts),
        rows_kept=sum(int(p["rows_kept"]) for p in parts),
        dropped=dict(sorted(dropped.items())),
        n_returns=sum(int(p["n_returns"]) for p in parts),
        n_customers=sum(int(p["n_customers"]) for p in parts),
        first_timestamp=min(firsts) if firsts else None,
        last_timestamp=max(lasts) if lasts else None,
        warnings=[w for p in ordered for w in p["warnings"]],
        n_exact_duplicates=sum(int(p["n_exact_duplicates"]) for p in parts),
        source=source,
    )


def plan_on(
    executor: cf.Executor, files: Sequence[Path], config: LogConfig, chunk_customers: int
) -> tuple[list[PlannedChunk], int]:
    """Summarize every file on ``executor`` and plan the chunks."""
    futures = [executor.submit(summarize_file, str(path), config) for path in files]
    return plan_chunks([f.result() for f in futures], chunk_customers)


def staged_runner(submit: Callable[[Chunk], cf.Future[dict[str, Any]]]) -> ChunkRunner:
    """A runner that submits one task per chunk (``submit``) and yields each
    :class:`StagedChunk` as its task finishes (any order); unfinished tasks are cancelled
    when the consumer stops early (a failed chunk)."""

    def run(chunks: Sequence[Chunk]) -> Iterator[ChunkResult | StagedChunk]:
        futures = {submit(c): c for c in chunks}
        try:
            for future in cf.as_completed(futures):
                yield StagedChunk(futures[future], future.result())
        finally:
            for future in futures:
                future.cancel()

    return run


def planned_runner(
    executor: cf.Executor,
    plans: Sequence[PlannedChunk],
    *,
    config: LogConfig,
    model: Any,  # ScoringModel, ArtifactFiles or a Dask future of them (resolved on workers)
    as_of: pd.Timestamp,
    campaign: str | None,
    with_features: bool,
    staging: Path,
) -> ChunkRunner:
    """A runner yielding :class:`StagedChunk` as tasks finish (any order)."""
    by_index = {p.chunk.index: p for p in plans}
    return staged_runner(
        lambda c: executor.submit(
            score_planned_chunk,
            by_index[c.index],
            config,
            model,
            as_of,
            campaign,
            with_features,
            str(staging),
        )
    )
