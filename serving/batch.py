"""Batch scoring: every customer of a purchase log, chunk by chunk, to partitioned Parquet.

``retain score`` loads the log once (``features.purchase_log``), cuts it into ranges of
customer codes (the canonical log is sorted by ``customer_id``, so a range is a contiguous
block of rows) and scores each chunk with :func:`serving.scorer.score`, the same function the
HTTP service calls. Features of one customer only depend on that customer's rows, so a
chunked run gives the same rows as one whole-log call, as long as the offer policy does not
rank customers against each other (``min_value_quantile`` does: see
:func:`chunk_dependent_rules`; the run summary warns about it).

Output layout (``DIR``; ``--features-out`` is published the same way)::

    DIR -> .DIR.retain/versions/000007     a link to the current version
    DIR/part-00000.parquet ...   one file per customer chunk, columns SCORE_COLUMNS
    DIR/_summary.json            the run summary (rows in, drops by reason, timings, files)
    DIR/_SUCCESS                 the output is complete
    DIR/_manifest.json           every file retain wrote there, with its sha256

Nothing half-done is ever visible, and nothing retain did not write is ever removed
(:class:`features.atomic.VersionedDir`): chunks are written into
``.DIR.retain/staging-<runid>/`` (beside ``DIR``, a dot-directory that Parquet dataset
readers skip) with a manifest updated after each chunk; a finished run hard-links them into a
new version directory with the summary and ``_SUCCESS``, then switches the ``DIR`` link to it
in one rename. A kill at any moment leaves ``DIR`` on the old version or the new one. A run
holds an ``flock`` on ``.DIR.retain/lock`` from start to publish, so a second run on the same
``DIR`` is refused with the holder's pid; a ``DIR`` that is a plain directory holding files
is refused and left as it is.

The run id is a hash of the inputs (data file, as_of, model, chunking, campaign), so
``--resume`` finds the staging directory of an interrupted run with the same inputs and
continues after its last finished chunk. Parquet files are written deterministically (fixed
schema and row order, no wall-clock metadata), so a rerun is byte-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.atomic import MANIFEST_NAME as VERSION_MANIFEST
from features.atomic import (
    VersionedDir,
    pinned,
    sha256_file,
    write_atomic,
    write_text_atomic,
)
from features.builders import COUNT_COLUMNS, build_feature_block
from features.canonical import LoadReport
from features.catalog import FEATURE_COLUMNS
from features.errors import UserError
from serving.offers import OfferPolicy
from serving.scorer import SCORE_COLUMNS, ScoringModel, score, score_block

DEFAULT_CHUNK_CUSTOMERS = 100_000
PART_TEMPLATE = "part-{:05d}.parquet"
STAGING_PREFIX = "staging-"
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "_summary.json"
SUCCESS_NAME = "_SUCCESS"
FEATURES_DIR = "features"
OUTPUT_FORMAT = 1
PARQUET_COMPRESSION = "zstd"
PAUSE_ENV = "RETAIN_TEST_PAUSE_AT"
"""Tests only: ``<output>:<step>`` (e.g. ``scores:link-made``) makes a run print
``paused at ...`` to stderr and wait there for a line on stdin, so a test can kill it (or let
it go on) at that point of publish. Steps: see :meth:`features.atomic.VersionedDir.publish`."""

_UTC = "UTC"
_TEXT_COLUMNS = (
    "customer_id",
    "campaign",
    "risk_band",
    "segment",
    "reason_1",
    "reason_2",
    "reason_3",
    "offer",
    "offer_channel",
    "offer_reason",
    "offer_rule",
    "suppressed_reason",
)
_BOOL_COLUMNS = ("holdout", "suppressed")
_NULLABLE_FLOATS = ("uplift",)  # null when the artifact has no uplift model
_TIME_UNITS = {"as_of": "us", "expected_next_purchase_date": "ns", "offer_send_date": "us"}


def _score_field(name: str) -> pa.Field:
    if name in _TEXT_COLUMNS:
        return pa.field(name, pa.string())
    if name in _BOOL_COLUMNS:
        return pa.field(name, pa.bool_())
    if name in _TIME_UNITS:
        return pa.field(name, pa.timestamp(_TIME_UNITS[name], tz=_UTC))
    return pa.field(name, pa.float64())


SCORE_SCHEMA: pa.Schema = pa.schema([_score_field(c) for c in SCORE_COLUMNS])
"""Fixed Arrow schema of every score part, so empty or all-missing chunks look the same."""

FEATURE_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        *(pa.field(c, pa.int64() if c in COUNT_COLUMNS else pa.float64()) for c in FEATURE_COLUMNS),
        pa.field("as_of", pa.timestamp("us", tz=_UTC)),
    ]
)
"""The feature snapshot that ``/score/ids`` reads: customer_id, the features, as_of."""


class BatchError(UserError, RuntimeError):
    """A batch run cannot start or continue; the message says what to do."""


# ---- chunks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """Customers with codes ``[code_start, code_stop)``, i.e. log rows ``[row_start, row_stop)``."""

    index: int
    code_start: int
    code_stop: int
    row_start: int
    row_stop: int

    @property
    def part_name(self) -> str:
        return PART_TEMPLATE.format(self.index)


def customer_chunks(log: pd.DataFrame, chunk_customers: int) -> list[Chunk]:
    """Split a canonical log into blocks of ``chunk_customers`` customer codes.

    Relies on the canonical sort (codes non-decreasing); checked here because a wrong order
    would silently split one customer over two chunks.
    """
    if chunk_customers < 1:
        raise BatchError(f"chunk size must be at least 1 customer, got {chunk_customers}")
    column = log["customer_id"]
    if not isinstance(column.dtype, pd.CategoricalDtype):
        raise BatchError(
            f"column customer_id must be categorical (the canonical log), got {column.dtype}"
        )
    codes = np.asarray(column.array.codes)
    if codes.size and (codes[0] < 0 or np.any(np.diff(codes) < 0)):
        raise BatchError(
            "the log is not sorted by customer_id (or has empty ids); load it with "
            "features.purchase_log.read_purchase_log"
        )
    n_codes = len(column.cat.categories)
    starts = np.arange(0, n_codes, chunk_customers, dtype=np.int64)
    stops = np.minimum(starts + chunk_customers, n_codes)
    row_starts = np.searchsorted(codes, starts, side="left")
    row_stops = np.searchsorted(codes, stops, side="left")
    return [
        Chunk(i, int(a), int(b), int(ra), int(rb))
        for i, (a, b, ra, rb) in enumerate(zip(starts, stops, row_starts, row_stops, strict=True))
    ]


def chunk_frame(log: pd.DataFrame, chunk: Chunk) -> pd.DataFrame:
    """The chunk's rows as a canonical log whose categories are only its own customers.

    Slicing keeps all (say 1M) categories, which every Dask transfer would then carry; the
    chunk's customers are a contiguous block of the sorted categories, so rebasing the codes
    is exact and costs nothing.
    """
    part = log.iloc[chunk.row_start : chunk.row_stop]
    column = part["customer_id"]
    codes = np.asarray(column.array.codes) - chunk.code_start
    categories = column.cat.categories[chunk.code_start : chunk.code_stop]
    customer = pd.Categorical.from_codes(codes, categories=categories)
    out = part.assign(customer_id=customer)
    out.index = pd.RangeIndex(len(out))
    return out


def score_chunk(
    model: ScoringModel,
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    campaign: str | None,
    with_features: bool,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Scores (and the feature snapshot if asked) of one chunk via the shared scorer.

    Without a snapshot this is exactly :func:`serving.scorer.score`; with one, the feature
    block is built once, scored with :func:`serving.scorer.score_block` (what ``score``
    does internally) and kept as the snapshot frame.
    """
    if not with_features:
        return score(model, log, as_of, campaign=campaign), None
    block = build_feature_block(log, as_of, model.artifact.feature_config)
    return score_block(model, block, as_of, campaign=campaign).frame(), block.to_frame()


def chunk_dependent_rules(policy: OfferPolicy) -> list[str]:
    """Rules whose match depends on the other customers of the call (value quantiles)."""
    return [r.name for r in policy.rules if r.match.min_value_quantile is not None]


# ---- Parquet ----------------------------------------------------------------------------


def _arrow_column(values: pd.Series, typ: pa.DataType, name: str) -> pa.Array:
    if pa.types.is_timestamp(typ):
        # via int64: pa.array on a tz-aware Series goes through the deprecated Series.values
        utc = pd.to_datetime(values, utc=True).dt.tz_convert(None).dt.as_unit(typ.unit)
        raw = utc.to_numpy()
        return pa.array(raw.view("int64"), type=pa.int64(), mask=np.isnat(raw)).cast(typ)
    if pa.types.is_string(typ):
        text = values.astype("str")
        return pa.array(text.array).cast(typ)
    if pa.types.is_boolean(typ):
        if values.isna().any():
            raise BatchError(f"column {name!r} has {int(values.isna().sum())} missing flag(s)")
        return pa.array(values.to_numpy(dtype=bool), type=typ)
    kind = np.int64 if pa.types.is_integer(typ) else np.float64
    numbers = values.to_numpy(dtype=kind)
    if name in _NULLABLE_FLOATS:  # NaN there means "no value": null in Parquet
        return pa.array(numbers, type=typ, mask=np.isnan(numbers))
    return pa.array(numbers, type=typ)


def to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of exactly ``schema`` (names the column that cannot fit)."""
    missing = [f.name for f in schema if f.name not in frame.columns]
    if missing:
        raise BatchError(f"frame lacks column(s) {missing} of the output schema")
    arrays = []
    for fld in schema:
        try:
            arrays.append(_arrow_column(frame[fld.name], fld.type, fld.name))
        except (ValueError, TypeError, pa.ArrowException) as exc:
            raise BatchError(f"column {fld.name!r} cannot be written as {fld.type}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def scores_table(scores: pd.DataFrame) -> pa.Table:
    return to_table(scores, SCORE_SCHEMA)


def features_table(features: pd.DataFrame, as_of: pd.Timestamp) -> pa.Table:
    frame = features.reset_index()
    frame["customer_id"] = frame["customer_id"].astype("str")
    frame["as_of"] = pd.Series(as_of, index=frame.index, dtype=f"datetime64[us, {_UTC}]")
    return to_table(frame, FEATURE_SCHEMA)


def write_parquet(table: pa.Table, path: Path) -> str:
    """Write deterministically (same table, same bytes) and atomically; return the sha256."""
    write_atomic(
        path,
        lambda tmp: pq.write_table(
            table,
            tmp,
            compression=PARQUET_COMPRESSION,
            use_dictionary=True,
            write_statistics=True,
            row_group_size=1 << 20,
        ),
    )
    return sha256_file(path)


def _json_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


# ---- the run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkResult:
    """One scored chunk, as produced by a runner (pandas here, Dask in ``dask_jobs``)."""

    chunk: Chunk
    scores: pd.DataFrame
    features: pd.DataFrame | None


ChunkRunner = Callable[[Sequence[Chunk]], Iterator[ChunkResult]]
"""Scores the given chunks and yields their results (any order)."""


@dataclass(frozen=True)
class BatchJob:
    """Everything that decides the output bytes; hashed into the run id."""

    as_of: pd.Timestamp
    chunk_customers: int
    campaign: str | None
    with_features: bool
    model_id: str
    data_id: str

    @property
    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": OUTPUT_FORMAT,
            "as_of": self.as_of.isoformat(),
            "chunk_customers": self.chunk_customers,
            "campaign": self.campaign,
            "with_features": self.with_features,
            "model_id": self.model_id,
            "data_id": self.data_id,
        }


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


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def pandas_runner(
    model: ScoringModel,
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    campaign: str | None,
    with_features: bool,
    threads: int = 1,
) -> ChunkRunner:
    """Chunks scored in this process, on up to ``threads`` threads, yielded in chunk order.

    Why threads: the heavy steps (numpy, Arrow, scipy's hyp2f1, LightGBM, the compiled
    boosters) run in C without the GIL, so two chunks in flight keep two cores busy where one
    left the second idle. At most ``threads`` chunks are scored at once plus the one being
    written, so memory stays a few chunks. Results do not depend on ``threads``.
    """

    def work(chunk: Chunk) -> ChunkResult:
        scores, features = score_chunk(
            model,
            chunk_frame(log, chunk),
            as_of,
            campaign=campaign,
            with_features=with_features,
        )
        return ChunkResult(chunk, scores, features)

    def run(chunks: Sequence[Chunk]) -> Iterator[ChunkResult]:
        if threads <= 1:
            for chunk in chunks:
                yield work(chunk)
            return
        pending = iter(chunks)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="retain-score") as pool:
            in_flight: deque[Future[ChunkResult]] = deque(
                pool.submit(work, chunk) for chunk in itertools.islice(pending, threads)
            )
            try:
                while in_flight:
                    result = in_flight.popleft().result()
                    following = next(pending, None)
                    if following is not None:
                        in_flight.append(pool.submit(work, following))
                    yield result
            finally:
                for future in in_flight:
                    future.cancel()

    return run


class _Staging:
    """The hidden directory a run writes into, with its manifest of finished chunks."""

    def __init__(self, store: Path, job: BatchJob) -> None:
        self.job = job
        self.root = store / f"{STAGING_PREFIX}{job.run_id}"
        self.manifest_path = self.root / MANIFEST_NAME
        self.done: dict[int, dict[str, Any]] = {}

    def open(self, resume: bool) -> int:
        """Create (or, resuming, reload) the staging dir; return the number of chunks kept."""
        if self.root.exists() and not resume:
            shutil.rmtree(self.root)
        if resume and self.manifest_path.is_file():
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if manifest.get("job") != self.job.to_dict():
                raise BatchError(f"{self.root} belongs to a different job; rerun without --resume")
            for key, entry in manifest.get("chunks", {}).items():
                if self._intact(entry):
                    self.done[int(key)] = entry
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / FEATURES_DIR).mkdir(exist_ok=True)
        self._save()
        return len(self.done)

    def _intact(self, entry: dict[str, Any]) -> bool:
        for rel, digest in entry.get("files", {}).items():
            path = self.root / rel
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def _save(self) -> None:
        chunks = {str(k): v for k, v in sorted(self.done.items())}
        write_text_atomic(
            self.manifest_path, _json_text({"job": self.job.to_dict(), "chunks": chunks})
        )

    def record(self, result: ChunkResult, as_of: pd.Timestamp) -> None:
        """Write the chunk's files, then mark it finished in the manifest (in that order)."""
        name = result.chunk.part_name
        files = {name: write_parquet(scores_table(result.scores), self.root / name)}
        if result.features is not None:
            rel = f"{FEATURES_DIR}/{name}"
            files[rel] = write_parquet(features_table(result.features, as_of), self.root / rel)
        offers = result.scores["offer"].astype("str").value_counts()
        self.done[result.chunk.index] = {
            "customers": len(result.scores),
            "rows": result.chunk.row_stop - result.chunk.row_start,
            "offers": {str(k): int(v) for k, v in offers.items()},
            "files": files,
        }
        self._save()


def _pause_hook(output: str) -> Callable[[str], None]:
    """The :data:`PAUSE_ENV` test hook for one output (``scores`` or ``features``)."""
    wanted = os.environ.get(PAUSE_ENV, "")

    def pause(step: str) -> None:
        if wanted == f"{output}:{step}":
            print(f"paused at {wanted} (pid {os.getpid()})", file=sys.stderr, flush=True)
            sys.stdin.readline()

    return pause


def run_batch(
    *,
    log: pd.DataFrame,
    report: LoadReport,
    job: BatchJob,
    runner: ChunkRunner,
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
) -> BatchSummary:
    """Score every chunk not yet finished, then publish the output atomically.

    ``on_chunk`` is called after each chunk is safely staged (tests use it to interrupt a
    run); an exception anywhere leaves the staging directory for ``resume`` and ``out`` as it
    was. ``out`` (and ``features_out``) are locked for the whole run.
    """
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
        outputs = [stack.enter_context(VersionedDir(t, adopt=_plain_output)) for t in targets]
        summary, staging = _score_and_summarize(
            log=log,
            report=report,
            job=job,
            runner=runner,
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
        scored = time.perf_counter()
        names = [PART_TEMPLATE.format(i) for i in range(summary.chunks)]
        success = {SUCCESS_NAME: f"{job.run_id}\n"}
        if len(outputs) > 1:
            outputs[1].publish(
                {n: staging.root / FEATURES_DIR / n for n in names},
                success,
                digests={n: summary.files[f"{FEATURES_DIR}/{n}"] for n in names},
                before_switch=_pause_hook("features"),
            )
        summary.seconds = {
            "read": round(read_seconds, 3),
            "score": round(scored - started, 3),  # chunks scored and their parts staged
            "publish": round(time.perf_counter() - scored, 3),
            "total": round(read_seconds + time.perf_counter() - started, 3),
        }
        outputs[0].publish(
            {n: staging.root / n for n in names},
            {**success, SUMMARY_NAME: _json_text(summary.to_dict())},
            digests={n: summary.files[n] for n in names},
            before_switch=_pause_hook("scores"),
        )
        shutil.rmtree(staging.root, ignore_errors=True)
        for output in outputs:
            summary.warnings.extend(output.warnings)
    return summary


def _plain_output(directory: Path) -> dict[str, str] | None:
    """The files of a scores directory written by retain before outputs were versioned.

    Recognised by its ``_SUCCESS`` and ``_summary.json``, whose ``files`` must list every
    other file in it with the sha256 it has now; None for anything else.
    """
    try:
        listed = json.loads((directory / SUMMARY_NAME).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, dict):
        return None
    parts = {name: digest for name, digest in listed.items() if "/" not in str(name)}
    present = {p.name for p in directory.iterdir()} - {VERSION_MANIFEST}  # (adopted half-way)
    if present != {*parts, SUMMARY_NAME, SUCCESS_NAME} or not all(
        (directory / n).is_file() and sha256_file(directory / n) == d for n, d in parts.items()
    ):
        return None
    own = {n: sha256_file(directory / n) for n in (SUMMARY_NAME, SUCCESS_NAME)}
    return {**parts, **own}


def _score_and_summarize(
    *,
    log: pd.DataFrame,
    report: LoadReport,
    job: BatchJob,
    runner: ChunkRunner,
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
) -> tuple[BatchSummary, _Staging]:
    """Stage every chunk (resuming finished ones) and build the run summary."""
    chunks = customer_chunks(log, job.chunk_customers)
    staging = _Staging(store, job)
    resumed = staging.open(resume)
    pending = [c for c in chunks if c.index not in staging.done]

    with _progress_bar(progress, len(chunks), resumed) as advance:
        for result in runner(pending):
            staging.record(result, job.as_of)
            advance(result.chunk.row_stop - result.chunk.row_start)
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
        not_used={"at or after as_of": int((log["timestamp"] >= job.as_of).sum())},
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


def data_identity(source: str | Path, report: LoadReport, config_json: str) -> str:
    """Cheap identity of the input: path, size, mtime, loader config and row counts."""
    path = Path(source)
    st = path.stat()
    key = f"{path.absolute()}|{st.st_size}|{st.st_mtime_ns}|{config_json}|{report.rows_read}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@contextlib.contextmanager
def resolved_artifact(model_uri: str) -> Iterator[tuple[Path, str]]:
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


def read_scores(directory: str | Path) -> pd.DataFrame:
    """All parts of a finished scores directory (refuses one without ``_SUCCESS``).

    Reads one version even if a run publishes meanwhile (:func:`features.atomic.pinned`).
    """
    root = pinned(directory)
    if not (root / SUCCESS_NAME).is_file():
        raise BatchError(f"{directory} has no {SUCCESS_NAME}: not a finished `retain score` output")
    parts = sorted(root.glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=list(SCORE_COLUMNS))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
