"""A purchase log read from a database table or query: Arrow record batches to a raw frame.

:func:`features.log.purchase_log.read_purchase_log` hands a :class:`DatabaseLog` here and gives
the frame to the same loader files go through, so the column map (``--map``), counting
rules and load report are the same whether the rows came from Parquet or PostgreSQL.

Types are converted by rule, not by luck:

- ``numeric``/``decimal`` columns are cast to ``float8`` in the SQL (ADBC returns NUMERIC as
  text); other types ADBC has no Arrow type for (``uuid``, ``money``...) are read as text;
- ``timestamptz`` arrives as UTC instants; naive ``timestamp`` and ``date`` columns are wall
  times, read in ``LogConfig.timezone`` exactly as naive text in a file is (a ``date`` is
  its midnight);
- the columns the loader needs are checked before any row moves: a missing one, or a
  timestamp/amount/quantity column of a type that cannot hold it, is one
  :class:`~features.sources.database.DatabaseError` naming the table (or query) and the column.

Rows stream as record batches of about 4 MB, converted batch by batch (text as pandas'
large_string, few-distinct text dictionary-encoded, as Parquet gives them), so no copy of
the whole result is made in a driver-side or per-row Python form and nothing is converted
again after the read; the loader then holds the raw frame once, as it would a Parquet
file's. Only the columns the loader uses are selected. A large table is read in parts on
two connections (:mod:`features.sources.database_parts`): the row protocol costs the client and the
server CPU per value that a Parquet reader does not pay, and two parts spread it over two
cores. A connection dropped mid-read, a missing table, a denied SELECT or a statement over
the time limit is a DatabaseError: the command stops before it publishes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from features.log.schema import LogConfig, PurchaseLogError
from features.sources.database import (
    DatabaseError,
    DatabaseUrl,
    connect,
    database_error,
    quote_identifier,
    quote_table,
)
from features.sources.database_parts import begin_snapshot, block_ranges, read_in_parts

if TYPE_CHECKING:
    import pandas as pd
    from adbc_driver_manager.dbapi import Cursor

__all__ = [
    "DatabaseLog",
    "check_log_columns",
    "fetch_frame",
    "probe_schema",
    "read_database_log",
    "select_list",
    "source_sql",
]

_NUMERIC_TYPES = ("numeric", "decimal")
_FEW_DISTINCT = ("product_id", "category", "channel")  # optional text, few distinct values
_TEMPORAL_OK = ("timestamp", "date", "string")
_NUMBER_OK = ("integer", "floating", "decimal", "string")
T = TypeVar("T")
_BATCH_SIZE_OPTION = "adbc.postgresql.batch_size_hint_bytes"
_BATCH_BYTES = 4 * 2**20
"""Record batches of about 4 MB: a little less client CPU than the driver's 16 MB default
(they stay in cache while converted) and a finer grain for the memory peak."""


@dataclass(frozen=True)
class DatabaseLog:
    """Where a purchase log lives in a database: a ``table`` or a ``query``, not both."""

    url: DatabaseUrl
    table: str | None = None
    query: str | None = None

    def __post_init__(self) -> None:
        if (self.table is None) == (self.query is None):
            raise DatabaseError(
                f"--data {self.url} is a database: give --table NAME or --query SQL (one of them)"
            )
        if self.table is not None and not self.table.strip():
            raise DatabaseError("--table: empty table name")
        if self.query is not None and not self.query.strip().rstrip(";").strip():
            raise DatabaseError("--query: empty query")

    @property
    def what(self) -> str:
        """``table 'orders'`` or ``the query`` (for messages)."""
        return f"table {self.table!r}" if self.table is not None else "the --query"

    def __str__(self) -> str:
        return f"{self.url} ({self.what})"


def source_sql(source: DatabaseLog) -> str:
    """The rows as a SQL ``FROM`` item: the quoted table, or the query as a subquery."""
    if source.table is not None:
        return quote_table(source.table)
    assert source.query is not None
    return f"({source.query.strip().rstrip(';')}) AS retain_query"


def read_database_log(
    source: DatabaseLog, config: LogConfig, *, check_columns: bool = True
) -> pd.DataFrame:
    """The raw frame of ``source``'s rows, typed for the loader.

    With the column checks (a purchase log) only the columns the loader reads are fetched
    (a wide orders table's other columns never cross the wire); ``check_columns=False``
    reads every column of any table (e.g. assignments). A large PostgreSQL table is read
    in parts over :data:`~features.sources.database_parts.PARTS` connections sharing one snapshot
    (:mod:`features.sources.database_parts`).
    """
    connection = connect(source.url)
    try:
        cursor = connection.cursor()
        postgresql = source.url.dialect == "postgresql"
        if postgresql:
            _run(cursor, begin_snapshot, source)
        schema = probe_schema(cursor, source)
        few_distinct: list[str] = []
        if check_columns:
            used = set(check_log_columns(schema, source, config).values())
            schema = pa.schema([field for field in schema if field.name in used])
            few_distinct = [config.columns.get(c, c) for c in _FEW_DISTINCT]
        sql = f"SELECT {select_list(schema, source)} FROM {source_sql(source)}"
        parts: list[str] = []
        if postgresql and source.table is not None:
            parts = _run(cursor, lambda c: block_ranges(c, source_sql(source)), source)
        if parts:
            statements = [f"{sql} WHERE {condition}" for condition in parts]
            read = partial(_fetch_batches, source=source, dictionary=few_distinct)
            pieces = read_in_parts(
                source.url, cursor, statements, read, context=f"reading {source}"
            )
            batches = [batch for piece in pieces for batch in piece[0]]
            frame = _frame(batches, pieces[0][1])
        else:
            frame = fetch_frame(cursor, sql, source=source, dictionary=few_distinct)
    finally:
        connection.close()
    if frame.empty:
        raise DatabaseError(f"{source}: no rows; nothing to read")
    return frame


def _run(cursor: Cursor, step: Callable[[Cursor], T], source: DatabaseLog) -> T:
    try:
        return step(cursor)
    except Exception as error:
        raise database_error(error, f"reading {source}") from None


def fetch_frame(
    cursor: Cursor,
    sql: str,
    parameters: Sequence[Any] = (),
    *,
    source: DatabaseLog,
    dictionary: Sequence[str] = (),
) -> pd.DataFrame:
    """Run ``sql`` (from :func:`select_list`) on an open cursor; its rows as a raw frame.

    Batches are converted as they arrive (dates, zones, driver-specific types), so a
    caller holding a connection (e.g. a service fetching a few customers' rows) gets the
    same frame a whole-log read would. Text columns named in ``dictionary`` come as
    categoricals (same values), as the Parquet reader gives few-distinct columns: the
    loader then works on the distinct values only.
    """
    batches, schema = _fetch_batches(cursor, sql, parameters, source=source, dictionary=dictionary)
    return _frame(batches, schema)


def _fetch_batches(
    cursor: Cursor,
    sql: str,
    parameters: Sequence[Any] = (),
    *,
    source: DatabaseLog,
    dictionary: Collection[str] = (),
) -> tuple[list[pa.RecordBatch], pa.Schema]:
    """The converted record batches of ``sql`` and their schema."""
    try:
        if source.url.dialect == "postgresql":
            cursor.adbc_statement.set_options(**{_BATCH_SIZE_OPTION: str(_BATCH_BYTES)})
        cursor.execute(sql, parameters or None)
        reader = cursor.fetch_record_batch()
        schema = _converted_schema(reader.schema, dictionary)
        batches = [_convert(batch, schema) for batch in reader]
    except DatabaseError:
        raise
    except Exception as error:
        raise database_error(error, f"reading {source}") from None
    return batches, schema


def _frame(batches: list[pa.RecordBatch], schema: pa.Schema) -> pd.DataFrame:
    table = pa.Table.from_batches(batches, schema=schema)
    batches.clear()
    return table.to_pandas(self_destruct=True, split_blocks=True)


def select_list(schema: pa.Schema, source: DatabaseLog) -> str:
    """Every column of ``schema`` for a SELECT, NUMERIC as float8, other exotic types as text."""
    return ", ".join(_select_item(field, source.url.dialect) for field in schema)


def probe_schema(cursor: Cursor, source: DatabaseLog) -> pa.Schema:
    """The result's columns and types, reading at most one row.

    PostgreSQL types an empty result; SQLite's driver infers types from the rows it sees
    (with none, every column looks like an integer), so it gets one row to look at.
    """
    limit = 1 if source.url.dialect == "sqlite" else 0
    try:
        cursor.execute(f"SELECT * FROM {source_sql(source)} LIMIT {limit}")
        table = cursor.fetch_arrow_table()
        if table.num_rows < limit:
            raise DatabaseError(f"{source}: no rows; nothing to read")
        return table.schema
    except DatabaseError:
        raise
    except Exception as error:
        what = source.what if source.table is not None else "running the --query"
        raise database_error(error, f"{source.url}: {what}") from None


def _kind(field: pa.Field) -> str:
    """``timestamp``, ``date``, ``string``, ``integer``, ``floating``, ``decimal``, ``bool``,
    or the database type's own name."""
    metadata = field.metadata or {}
    dbtype = metadata.get(b"POSTGRESQL:type", b"").decode()
    kind = field.type
    if dbtype in _NUMERIC_TYPES or pa.types.is_decimal(kind):
        return "decimal"
    if isinstance(kind, pa.ExtensionType):
        return dbtype or str(kind)
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_integer(kind):
        return "integer"
    if pa.types.is_floating(kind):
        return "floating"
    if pa.types.is_boolean(kind):
        return "bool"
    return dbtype or str(kind)


def _select_item(field: pa.Field, dialect: str) -> str:
    """One column of the SELECT: as stored, NUMERIC as float8, unmapped types as text."""
    name = quote_identifier(field.name)
    kind = _kind(field)
    if dialect == "postgresql" and kind == "decimal":
        return f"CAST({name} AS float8) AS {name}"
    if dialect == "postgresql" and isinstance(field.type, pa.ExtensionType):
        return f"CAST({name} AS text) AS {name}"
    return name


def check_log_columns(schema: pa.Schema, source: DatabaseLog, config: LogConfig) -> dict[str, str]:
    """The source column of each canonical column present (as
    :func:`~features.log.reading.resolve_columns`); fails before reading rows if a needed column
    is missing or of a type that cannot hold it."""
    from features.log.reading import resolve_columns

    try:
        names = resolve_columns(schema.names, config)
    except PurchaseLogError as error:
        raise DatabaseError(f"{source}: {error}") from None
    wanted = {"timestamp": _TEMPORAL_OK, "amount": _NUMBER_OK, "quantity": _NUMBER_OK}
    for canonical, allowed in wanted.items():
        if canonical not in names:
            continue
        field = schema.field(names[canonical])
        kind = _kind(field)
        if kind not in allowed:
            raise DatabaseError(
                f"{source}: column {names[canonical]!r} ({canonical}) is of type {kind}; "
                f"expected one of {', '.join(allowed)}"
            )
    return names


def _converted_type(kind: pa.DataType, dictionary: bool = False) -> pa.DataType:
    if isinstance(kind, pa.ExtensionType):
        kind = kind.storage_type
    if pa.types.is_date(kind):
        return pa.timestamp("us")  # a date is its naive midnight, read in LogConfig.timezone
    if pa.types.is_timestamp(kind) and kind.tz is not None and kind.tz != "UTC":
        return pa.timestamp(kind.unit, tz="UTC")
    if pa.types.is_string(kind):  # pandas' str keeps large_string; cast here, in the reader
        kind = pa.large_string()
    if dictionary and pa.types.is_large_string(kind):
        return pa.dictionary(pa.int32(), kind)
    return kind


def _converted_schema(schema: pa.Schema, dictionary: Collection[str] = ()) -> pa.Schema:
    return pa.schema(
        [
            pa.field(f.name, _converted_type(f.type, f.name in dictionary), nullable=f.nullable)
            for f in schema
        ]
    )


def _convert(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """One batch as ``schema`` (from :func:`_converted_schema`): dates as naive timestamps,
    zoned timestamps in UTC, text as large_string, few-distinct text dictionary-encoded.

    Done per batch, so a read in parts converts in each part's thread.
    """
    columns = []
    for column, field in zip(batch.columns, schema, strict=True):
        if isinstance(column.type, pa.ExtensionType):
            column = column.storage
        if column.type == field.type:
            columns.append(column)
        elif pa.types.is_dictionary(field.type):
            columns.append(column.cast(field.type.value_type).dictionary_encode())
        else:
            columns.append(column.cast(field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
