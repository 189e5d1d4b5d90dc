"""Batch scoring from a PostgreSQL table on a cluster: each task reads its own customers.

``retain score --data postgresql://... --table T --dask ADDR`` (or ``--dask-local N``) never
loads the log on the driver:

1. **plan** - the driver opens one connection, starts a repeatable-read transaction and
   exports its snapshot (``pg_export_snapshot``), then asks the server, in one query, for
   every ``chunk_customers``-th distinct customer id in the order the single-machine path
   sorts them (:func:`plan_ranges`). Chunk ``i`` is customers ``[i*N, (i+1)*N)`` of that
   order, as in :func:`serving.batch.chunks.customer_chunks`, so parts do not depend on
   where they are computed. The driver holds a few hundred ids, not the log.
2. **score** - one task per chunk, on a worker, opens its own connection, imports the
   driver's snapshot (every task sees the rows the plan saw, however long the run), reads
   ``WHERE id >= lo AND id < hi`` with the same pruned columns and casts as the
   single-machine reader (:mod:`features.sources.database_log`), loads, scores with the shared
   scorer and writes its Parquet parts into the run's staging directory
   (:func:`score_range`); it returns the small manifest entry and its load report.
3. **publish** - the driver records the entries and publishes exactly as for any run
   (:func:`serving.batch.run.run_batch`): manifest, ``--resume``, atomic switch, lock.

Ids are compared as the canonical id text the loader sorts
(:func:`features.log.text_columns.code_customers`): text stripped of the whitespace Arrow
strips, integers as their decimal text, always ``COLLATE "C"`` (code-point order, what
Arrow's sort gives; a column's own collation, e.g. ICU's, orders ``B`` after ``a``). When no
text id needs stripping (checked on the distinct ids while planning) the bare column is
compared, which costs the server a quarter of the stripped form. Each task's scan keeps
the table's physical row order (no parallel or synchronized scan), which is the order the
single-machine reader sees: rows tied on customer, instant and order id keep their order.

The URL travels to the workers inside :class:`RangeSource` (its ``repr``, which Dask logs
for a failed task, masks the password; task keys are hashes); a URL without a password
leaves the workers to their own ``PGPASSWORD``, ``~/.pgpass`` or service file.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from features.log.canonical import ROW_NUMBER_NOTE, LoadReport, column_label
from features.log.purchase_log import canonicalize
from features.log.schema import LogConfig, PurchaseLogError
from features.sources.database import DatabaseError, connect, database_error
from features.sources.database_log import (
    DatabaseLog,
    check_log_columns,
    fetch_frame,
    probe_schema,
    select_list,
    source_sql,
)
from features.sources.database_parts import begin_snapshot
from serving.batch.chunks import BatchError, Chunk, ChunkResult, ChunkRunner
from serving.batch.chunks import score_chunk as score_log
from serving.batch.partitioned import merged_report, staged_runner
from serving.batch.publish import write_chunk
from serving.batch.run import PlannedRun
from serving.scorer import ScoringModel

if TYPE_CHECKING:
    import pandas as pd
    from adbc_driver_manager.dbapi import Cursor

__all__ = [
    "ID_WHITESPACE",
    "CustomerRange",
    "RangePlan",
    "RangeSource",
    "id_text_sql",
    "is_range_source",
    "plan_ranges",
    "range_runner",
    "score_range",
]

_FEW_DISTINCT = ("product_id", "category", "channel")  # as features.sources.database_log reads them
ID_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
"""What Arrow's ``utf8_trim_whitespace`` strips from ids (Python's ``isspace`` set; the
tests check the two agree)."""
_TRIM_SET = "U&'" + "".join(f"\\{ord(c):04X}" for c in ID_WHITESPACE) + "'"
_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+$")
_ROW = re.compile(r"(?:^|, )(\d+)(?= \(|,|$)")
_SHOWN_CUSTOMERS = 5


class RangeError(BatchError):
    """A customer range read back differently from the plan (ids, count)."""


@dataclass(frozen=True)
class RangeSource:
    """How every task reads its customers: shipped to the workers once per task."""

    source: DatabaseLog
    select_sql: str  # SELECT <pruned columns, NUMERIC as float8> FROM <table or query>
    id_sql: str  # the canonical customer id as SQL text, COLLATE "C"
    id_column: str
    dictionary: tuple[str, ...]
    snapshot: str
    config: LogConfig

    def __repr__(self) -> str:  # Dask logs a failed task's arguments: no password there
        return f"RangeSource({self.source}, snapshot {self.snapshot})"


@dataclass(frozen=True)
class CustomerRange:
    """Chunk ``chunk``: canonical ids ``low <= id < high`` (``high`` None: no upper bound)."""

    chunk: Chunk
    low: str
    high: str | None

    @property
    def customers(self) -> int:
        return self.chunk.code_stop - self.chunk.code_start

    @property
    def label(self) -> str:
        upper = "" if self.high is None else f" up to {self.high!r}"
        return f"customers from {self.low!r}{upper}"


@dataclass(frozen=True)
class RangePlan:
    """The chunks of a table as customer ranges, and what identifies the input."""

    reader: RangeSource
    ranges: tuple[CustomerRange, ...]
    rows: int
    missing_ids: int

    @property
    def chunks(self) -> list[Chunk]:
        return [r.chunk for r in self.ranges]

    def identity(self, config_json: str) -> str:
        """The input's identity for the run id (``--resume``): source (password masked),
        loader config, row and customer counts and every range boundary."""
        sha = hashlib.sha256(f"{self.reader.source}|{self.reader.source.query}".encode())
        sha.update(f"|{config_json}|{self.rows}|{self.missing_ids}".encode())
        for r in self.ranges:
            sha.update(f"|{r.chunk.code_start}:{r.low}".encode())
        return sha.hexdigest()[:16]

    def planned_run(
        self,
        executor: cf.Executor,
        model: Any,  # ScoringModel, ArtifactFiles or a Dask future of them
        as_of: pd.Timestamp,
        campaign: str | None,
        with_features: bool,
    ) -> PlannedRun:
        """The run for :func:`serving.batch.run.run_batch`: these chunks, scored on
        ``executor`` by :func:`score_range`."""
        return PlannedRun(
            chunks=self.chunks,
            runner=lambda staging: range_runner(
                executor,
                self,
                model=model,
                as_of=as_of,
                campaign=campaign,
                with_features=with_features,
                staging=staging,
            ),
            report=self.report,
        )

    def report(self, reports: Sequence[dict[str, Any]]) -> LoadReport:
        """The whole table's load report: the ranges' reports plus rows without an id."""
        parts = list(reports)
        if self.missing_ids:
            names = {"customer_id": self.reader.id_column}
            parts.append(
                {
                    "source": "",
                    "rows_read": self.missing_ids,
                    "rows_kept": 0,
                    "dropped": {"missing_customer_id": self.missing_ids},
                    "n_returns": 0,
                    "n_customers": 0,
                    "first_timestamp": None,
                    "last_timestamp": None,
                    "n_exact_duplicates": 0,
                    "warnings": [
                        f"dropped {self.missing_ids:,} row(s) with an empty customer id "
                        f"(column {column_label('customer_id', names)})"
                    ],
                }
            )
        return merged_report(parts, str(self.reader.source))


def is_range_source(data: object, dask_address: str | None, dask_local: int | None) -> bool:
    """A PostgreSQL log scored on a cluster: the tasks read their own customer ranges."""
    on_cluster = dask_address is not None or dask_local is not None
    return on_cluster and isinstance(data, DatabaseLog) and data.url.dialect == "postgresql"


def id_text_sql(field: pa.Field, source: DatabaseLog) -> tuple[str, bool]:
    """The id column as SQL text ``COLLATE "C"``, and whether it needs stripping (text).

    Text (and types read as text, e.g. ``uuid``) is stripped, ``''`` is missing
    (:func:`stripped_sql`); integers are their decimal text. Float and NUMERIC ids are
    refused: the loader turns ``123.0`` into ``"123"`` only when every value of the read is
    whole, which one range cannot know.
    """
    name = '"' + field.name.replace('"', '""') + '"'
    extension = isinstance(field.type, pa.ExtensionType)
    kind = field.type.storage_type if extension else field.type
    if pa.types.is_integer(kind) and not extension:
        return f'CAST({name} AS text) COLLATE "C"', False
    if extension or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return f'CAST({name} AS text) COLLATE "C"', True
    raise DatabaseError(
        f"{source}: customer id column {field.name!r} is of type {field.type}; scoring on a "
        "cluster splits the table by id text, which needs a text or integer column (score "
        "without --dask, or cast the ids in a --query)"
    )


def stripped_sql(text: str) -> str:
    """SQL text as the loader's canonical id: Arrow's whitespace stripped, ``''`` missing."""
    return f"NULLIF(btrim({text}, {_TRIM_SET}), '') COLLATE \"C\""


@contextlib.contextmanager
def plan_ranges(
    source: DatabaseLog, config: LogConfig, chunk_customers: int
) -> Iterator[RangePlan]:
    """Plan the customer ranges under an exported snapshot held until the context ends."""
    if chunk_customers < 1:
        raise BatchError(f"chunk size must be at least 1 customer, got {chunk_customers}")
    connection = connect(source.url)
    try:
        cursor = connection.cursor()
        context = f"planning customer ranges of {source}"
        try:
            begin_snapshot(cursor)
            cursor.execute("SELECT pg_export_snapshot(), current_setting('server_encoding')")
            row = cursor.fetchone()
            assert row is not None  # the function always returns one row
            snapshot, encoding = str(row[0]), str(row[1])
        except Exception as error:
            raise database_error(error, context) from None
        if encoding.upper() != "UTF8":
            raise DatabaseError(
                f"{source}: server encoding {encoding}: customer ranges compare ids as UTF-8 "
                "text; score this database without --dask"
            )
        schema = probe_schema(cursor, source)
        names = check_log_columns(schema, source, config)
        pruned = pa.schema([f for f in schema if f.name in set(names.values())])
        id_column = names["customer_id"]
        bare, strip = id_text_sql(pruned.field(id_column), source)
        counts = _boundaries(cursor, source, bare, strip, chunk_customers, context)
        ranges, rows, missing, ids_are_canonical = counts
        if missing and config.strict:
            raise PurchaseLogError(
                f"{source}: column {column_label('customer_id', names)}: {missing:,} empty "
                "customer id(s); strict mode rejects them (without strict they are dropped)"
            )
        reader = RangeSource(
            source=source,
            select_sql=f"SELECT {select_list(pruned, source)} FROM {source_sql(source)}",
            id_sql=bare if ids_are_canonical else stripped_sql(bare),
            id_column=id_column,
            dictionary=tuple(config.columns.get(c, c) for c in _FEW_DISTINCT),
            snapshot=snapshot,
            config=config,
        )
        yield RangePlan(reader, ranges, rows, missing)
    finally:
        connection.close()


def _boundaries(
    cursor: Cursor, source: DatabaseLog, bare: str, strip: bool, chunk: int, context: str
) -> tuple[tuple[CustomerRange, ...], int, int, bool]:
    """Every ``chunk``-th canonical id, the row count, rows without an id, and whether every
    id is canonical already (stripping only runs on the distinct raw values)."""
    sql = f"""
        WITH raw AS (
            SELECT {bare} AS raw, count(*) AS n FROM {source_sql(source)} GROUP BY 1
        ), ids AS (
            SELECT {stripped_sql("raw") if strip else "raw"} AS id, raw, n FROM raw
        ), distinct_ids AS (
            SELECT DISTINCT id FROM ids WHERE id IS NOT NULL
        ), ranked AS (
            SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM distinct_ids
        ), totals AS (
            SELECT (SELECT count(*) FROM distinct_ids) AS customers,
                   coalesce(sum(n), 0) AS rows_,
                   coalesce(sum(n) FILTER (WHERE id IS NULL), 0) AS missing,
                   coalesce(bool_and(id IS NOT DISTINCT FROM raw), true) AS canonical
            FROM ids
        )
        SELECT r.id, r.k, t.customers, t.rows_, t.missing, t.canonical
        FROM totals t LEFT JOIN ranked r ON r.k % $1::bigint = 0
        ORDER BY r.k
    """
    try:
        cursor.execute(sql, (chunk,))
        found = cursor.fetchall()
    except Exception as error:
        raise database_error(error, context) from None
    customers, rows, missing = (int(v) for v in found[0][2:5])
    if rows == 0:
        raise DatabaseError(f"{source}: no rows; nothing to read")
    if customers == 0:
        raise DatabaseError(f"{source}: every row's customer id is empty; nothing to score")
    lows = [str(row[0]) for row in found]
    ranges = tuple(
        CustomerRange(
            Chunk(i, i * chunk, min((i + 1) * chunk, customers), 0, 0),
            low,
            lows[i + 1] if i + 1 < len(lows) else None,
        )
        for i, low in enumerate(lows)
    )
    return ranges, rows, missing, bool(found[0][5])


def read_range(reader: RangeSource, customers: CustomerRange) -> pd.DataFrame:
    """The raw rows of one range, under the planner's snapshot, in the table's row order."""
    source = reader.source
    if not _SNAPSHOT_ID.match(reader.snapshot):
        raise BatchError(f"not a snapshot id: {reader.snapshot!r}")
    # the bounds are cast in SQL: the driver's parameter type is not always text (one CI
    # run bound them as refcursor: "operator does not exist: text >= refcursor")
    where = f"{reader.id_sql} >= $1::text"
    bounds: tuple[str, ...] = (customers.low,)
    if customers.high is not None:
        where += f" AND {reader.id_sql} < $2::text"
        bounds += (customers.high,)
    connection = connect(source.url)
    try:
        cursor = connection.cursor()
        try:
            begin_snapshot(cursor)
            cursor.execute(f"SET TRANSACTION SNAPSHOT '{reader.snapshot}'")
            # one sequential scan in block order: a parallel scan interleaves its workers'
            # rows, a synchronized one starts where another scan of the table is
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cursor.execute("SET LOCAL synchronize_seqscans = off")
        except Exception as error:
            raise database_error(error, f"reading {source}, {customers.label}") from None
        return fetch_frame(
            cursor,
            f"{reader.select_sql} WHERE {where}",
            bounds,
            source=source,
            dictionary=reader.dictionary,
        )
    finally:
        connection.close()


def _bad_rows_customers(message: str, raw: pd.DataFrame, id_column: str) -> list[str]:
    """The customer ids of the data rows a loader message names (at most a few)."""
    shown = message.partition(" data rows ")[2].partition(ROW_NUMBER_NOTE)[0]
    ids: list[str] = []
    for match in _ROW.finditer(shown):
        row = int(match.group(1))
        if 1 <= row <= len(raw):
            value = str(raw[id_column].iloc[row - 1]).strip()
            if value not in ids:
                ids.append(value)
        if len(ids) >= _SHOWN_CUSTOMERS:
            break
    return ids


def load_range(reader: RangeSource, customers: CustomerRange) -> tuple[pd.DataFrame, LoadReport]:
    """The canonical log of one range and its load report; bad rows name their customers."""
    raw = read_range(reader, customers)
    where = f"{reader.source}, {customers.label}"
    try:
        loaded = canonicalize(raw, reader.config, source=where)
    except PurchaseLogError as error:
        ids = _bad_rows_customers(str(error), raw, reader.id_column)
        named = f"; customer id(s) of those rows: {', '.join(map(repr, ids))}" if ids else ""
        raise PurchaseLogError(
            f"{where} (rows numbered within the range): {error}{named}"
        ) from None
    categories = loaded.log["customer_id"].cat.categories
    if len(categories) != customers.customers or (
        len(categories) and categories[0] != customers.low
    ):
        raise RangeError(
            f"{where}: read {len(categories):,} customers starting at "
            f"{str(categories[0]) if len(categories) else None!r}, planned "
            f"{customers.customers:,}: the ids did not compare as the loader sorts them"
        )
    return loaded.log, loaded.report


def score_range(
    reader: RangeSource,
    customers: CustomerRange,
    model: Any,  # ScoringModel (threads) or serving.batch.dask.ArtifactFiles (a worker)
    as_of: pd.Timestamp,
    campaign: str | None,
    with_features: bool,
    staging: str,
) -> dict[str, Any]:
    """Read, load and score one range; write its parts into ``staging``; return its entry."""
    scoring = model if isinstance(model, ScoringModel) else model.cached()
    log, report = load_range(reader, customers)
    scores, features = score_log(
        scoring, log, as_of, campaign=campaign, with_features=with_features
    )
    chunk = customers.chunk
    result = ChunkResult(
        Chunk(chunk.index, chunk.code_start, chunk.code_stop, 0, len(log)), scores, features
    )
    entry = write_chunk(Path(staging), result, as_of)
    entry["not_used"] = int((log["timestamp"] >= as_of).sum())
    data = report.to_dict()
    data["warnings"] = [f"{customers.label}: {w}" for w in report.warnings]
    data["source"] = f"{chunk.index:09d}"  # the merged report lists warnings in id order
    entry["reports"] = [data]
    return entry


def range_runner(
    executor: cf.Executor,
    plan: RangePlan,
    *,
    model: Any,  # ScoringModel, ArtifactFiles or a Dask future of them (resolved on workers)
    as_of: pd.Timestamp,
    campaign: str | None,
    with_features: bool,
    staging: Path,
) -> ChunkRunner:
    """A runner yielding :class:`StagedChunk` as the range tasks finish (any order)."""
    by_index = {r.chunk.index: r for r in plan.ranges}
    return staged_runner(
        lambda c: executor.submit(
            score_range,
            plan.reader,
            by_index[c.index],
            model,
            as_of,
            campaign,
            with_features,
            str(staging),
        )
    )
