"""Purchase histories for ``/score/ids`` read from the database when the request comes.

Why: the feature snapshot is as old as the batch job that wrote it, so a customer who
bought an hour ago is still scored as lapsed. With ``RETAIN_HISTORY_URL`` (and
``RETAIN_HISTORY_TABLE`` or ``RETAIN_HISTORY_QUERY``) the service reads the requested
customers' rows instead, with one query per request batch::

    SELECT <mapped columns> FROM <table> WHERE <customer column> = ANY($1)

the ids bound as one array parameter, every name a quoted identifier (never pasted SQL).
The rows become :class:`features.log.log_arrays.LogArrays` by the rules ``/score`` applies to
the histories it is sent, so both endpoints build features the same way.

Column names are the artifact's log config mapping (the names the training log had), and
naive timestamps are in its ``timezone``. The customer column needs an index, else every
request reads the whole table: :meth:`HistorySource.missing_index` names the
``CREATE INDEX`` to run, and the service logs it at start-up.

One connection per worker, opened on first use and reused; a query that fails closes it,
that batch's requests get 503 with the reason (password redacted), and the next batch
opens a new one, so the service recovers when the database is back without restarting.
A query that does not finish within :data:`HISTORY_TIMEOUT` seconds (``RETAIN_DB_TIMEOUT``
overrides it), e.g. one waiting on a lock another session holds, is cancelled by the server
and counts as such a failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import UserError
from features.log.log_arrays import LogArrays, canonical_log_arrays
from features.log.reading import resolve_columns
from features.log.schema import LogConfig, PurchaseLogError
from features.redaction import redact
from features.sources.database import (
    TIMEOUT_ENV,
    DatabaseError,
    connect,
    database_error,
    parse_url,
    quote_identifier,
    statement_timeout_seconds,
)
from features.sources.database_log import DatabaseLog, source_sql

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection, Cursor

_TEXT_COLUMNS = ("order_id", "product_id", "category", "channel")
HISTORY_TIMEOUT = 10.0
"""Seconds a history query may run unless ``RETAIN_DB_TIMEOUT`` says otherwise: an indexed
read of a few customers takes milliseconds, so a longer one (a lock held on the table, a
server in trouble) fails its requests with 503 well before the client gives up."""


def history_timeout() -> float:
    """``RETAIN_DB_TIMEOUT`` seconds if set, else :data:`HISTORY_TIMEOUT`."""
    return statement_timeout_seconds() if os.environ.get(TIMEOUT_ENV) else HISTORY_TIMEOUT


_US_PER_DAY = 86_400_000_000


class HistoryConfigError(UserError, ValueError):
    """The history table or query cannot be used as configured (one line naming it)."""


class HistoryUnavailable(RuntimeError):
    """The database did not answer; the requests of this batch get 503 with this reason."""


@dataclass(frozen=True)
class HistorySettings:
    """Where ``/score/ids`` reads purchase histories: a database URL and a table or query."""

    url: str
    table: str | None = None
    query: str | None = None

    @property
    def source(self) -> str:
        """The table, or ``(query)``: how ``/readyz`` names the rows' origin."""
        return self.table if self.table is not None else "(query)"

    @property
    def label(self) -> str:
        """The setting that names the rows' origin, as messages show it."""
        return f"RETAIN_HISTORY_TABLE={self.table!r}" if self.table else "RETAIN_HISTORY_QUERY"

    def relation(self) -> str:
        """The FROM item, as ``retain``'s log readers write it: the quoted table
        (``schema.table`` allowed), or the query as a subquery."""
        return source_sql(
            DatabaseLog(parse_url(self.url, password_ok=True), self.table, self.query)
        )


@dataclass
class HistorySource:
    """One worker's reader of purchase histories by customer id (see the module docstring).

    ``columns`` maps canonical names to the source's column names, found by :meth:`probe`;
    until the probe has run (the database was down at start-up) the first batch runs it.
    """

    settings: HistorySettings
    log_config: LogConfig
    columns: dict[str, str] = field(default_factory=dict)
    customer_is_integer: bool = False
    _connection: Connection | None = None
    _cursor: Cursor | None = None
    _sql: str = ""

    @property
    def probed(self) -> bool:
        return bool(self._sql)

    def _connect(self) -> Any:
        if self._connection is None:
            self._connection = connect(self.settings.url, statement_timeout=history_timeout())
            # each read its own transaction: it sees rows committed before it, holds no
            # lock after it, and costs no BEGIN/ROLLBACK round trips
            self._connection.adbc_connection.set_autocommit(True)
            self._cursor = self._connection.cursor()
        return self._cursor

    def close(self) -> None:
        """Drop the connection (after a failure, or at shutdown); the next use reopens it."""
        connection, cursor = self._connection, self._cursor
        self._connection, self._cursor = None, None
        for handle in (cursor, connection):  # the statement first: ADBC refuses otherwise
            if handle is not None:
                with contextlib.suppress(Exception):  # a broken connection: nothing to free
                    handle.close()

    def _run(self, sql: str, params: tuple[Any, ...] | None = None) -> pa.Table:
        """One statement's rows as Arrow; a failure closes the connection.

        A connection kept from an earlier batch may have been dropped meanwhile (the
        server restarted): the statement is tried once more on a new connection before
        the batch is failed.
        """
        reused = self._connection is not None
        try:
            return self._execute(sql, params)
        except HistoryUnavailable:
            if not reused:
                raise
        return self._execute(sql, params)

    def _execute(self, sql: str, params: tuple[Any, ...] | None) -> pa.Table:
        try:
            cursor = self._connect()
            cursor.execute(sql, params)
            return cursor.fetch_arrow_table()
        except DatabaseError as exc:  # from connect: refused, unknown host, bad password
            self.close()
            raise HistoryUnavailable(f"history database unavailable: {exc}") from None
        except Exception as exc:
            if not _is_driver_error(exc):
                raise
            self.close()
            error = database_error(exc, self.settings.label)
            if str(getattr(exc, "sqlstate", "") or "").startswith("42"):
                # the statement itself: unknown table or column, permission, syntax
                raise HistoryConfigError(str(error)) from None
            where = redact(self.settings.url)
            raise HistoryUnavailable(f"history database unavailable: {where}: {error}") from None

    def probe(self) -> None:
        """Find the mapped columns (required ones must exist) and build the one query.

        :class:`HistoryConfigError` names a missing table or column; an unreachable
        database is :class:`HistoryUnavailable`.
        """
        schema = self._run(f"SELECT * FROM {self.settings.relation()} LIMIT 0").schema
        try:  # the loader's own rule: mapped names, else the canonical names
            columns = resolve_columns(schema.names, self.log_config)
        except PurchaseLogError as exc:
            raise HistoryConfigError(
                f"{self.settings.label}: {exc} (names come from the model's log config)"
            ) from None
        for name, allowed in _ALLOWED.items():
            kind = schema.field(columns[name]).type if name in columns else None
            if kind is not None and not any(check(_plain_type(kind)) for check in allowed):
                raise HistoryConfigError(
                    f"{self.settings.label}: column {columns[name]!r} ({name}) is of type "
                    f"{kind}, which cannot hold a {name}"
                )
        customer_type = schema.field(columns["customer_id"]).type
        if not (pa.types.is_integer(customer_type) or _is_text(customer_type)):
            raise HistoryConfigError(
                f"{self.settings.label}: column {columns['customer_id']!r} is "
                f"{customer_type}; customer ids must be text or integers"
            )
        self.customer_is_integer = pa.types.is_integer(customer_type)
        self.columns = columns
        selected = ", ".join(quote_identifier(source) for source in columns.values())
        key = quote_identifier(columns["customer_id"])
        self._sql = f"SELECT {selected} FROM {self.settings.relation()} WHERE {key} = ANY($1)"

    def missing_index(self) -> str | None:
        """The ``CREATE INDEX`` to run when the table has no index led by the customer
        column, else None (also for a query: its plan is the database's to choose)."""
        if self.settings.table is None:
            return None
        column = self.columns["customer_id"]
        relation = self.settings.relation()
        found = self._run(
            "SELECT count(*) AS n FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = to_regclass($1) AND a.attname = $2",
            (relation, column),
        )
        if int(found.column(0)[0].as_py() or 0) > 0:
            return None
        return f"CREATE INDEX ON {relation} ({quote_identifier(column)})"

    def fetch(self, customer_ids: Sequence[str]) -> LogArrays:
        """The canonical log of these customers' rows, in one query."""
        if not self.probed:
            self.probe()
        if self.customer_is_integer:
            # an id the column cannot hold (or would spell differently) has no rows
            keys: list[Any] = [int(c) for c in customer_ids if _canonical_int(c)]
        else:
            keys = list(customer_ids)
        table = self._run(self._sql, (keys,))
        return self.log_arrays(table)

    def log_arrays(self, table: pa.Table) -> LogArrays:
        """Rows in the source's names and types -> the canonical log, typed by rule:
        NUMERIC/integer/float amounts and quantities as float64, ``timestamptz`` as UTC,
        naive ``timestamp`` and ``date`` in the model's log timezone, text as text."""
        cols = {name: table.column(source) for name, source in self.columns.items()}
        ids = pc.cast(cols["customer_id"], pa.string())
        text = {
            name: pc.cast(cols[name], pa.string()).to_pylist() if name in cols else None
            for name in _TEXT_COLUMNS
        }
        return canonical_log_arrays(
            ids.to_pylist(),
            _utc_micros(cols["timestamp"], self.log_config.timezone),
            _floats(cols["amount"]),
            quantity=_floats(cols["quantity"]) if "quantity" in cols else None,
            discount=(
                _flags(cols["discount"], self.log_config.discount_true_values)
                if "discount" in cols
                else None
            ),
            config=self.log_config.counting_rules(),
            **text,
        )


_NUMBER = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_string)
_ALLOWED = {
    "timestamp": (pa.types.is_timestamp, pa.types.is_date),
    "amount": _NUMBER,
    "quantity": _NUMBER,
}


def _plain_type(kind: pa.DataType) -> pa.DataType:
    """An extension type's storage (PostgreSQL NUMERIC: text), else the type itself."""
    return kind.storage_type if isinstance(kind, pa.BaseExtensionType) else kind


def _is_driver_error(exc: BaseException) -> bool:
    """An error of the database driver (ADBC), which the driver raises for I/O failures."""
    return type(exc).__module__.startswith("adbc_driver")


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _canonical_int(text: str) -> bool:
    try:
        return str(int(text)) == text and abs(int(text)) < 2**63
    except ValueError:
        return False


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The storage of an extension column: PostgreSQL NUMERIC arrives as opaque text."""
    if isinstance(column.type, pa.BaseExtensionType):
        return pa.chunked_array(
            [chunk.storage for chunk in column.chunks], column.type.storage_type
        )
    return column


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """Numbers (NUMERIC text, integers, floats) as float64; NULL is NaN."""
    values = pc.cast(_plain(column), pa.float64())
    return values.to_numpy().astype(np.float64, copy=False)


def _utc_micros(column: pa.ChunkedArray, timezone: str) -> np.ndarray:
    """Instants as UTC microseconds: aware timestamps converted, naive ones and dates
    taken in ``timezone`` (the log config's, as the file loader does)."""
    kind = column.type
    if pa.types.is_date(kind):
        column = pc.cast(pc.cast(column, pa.date32()), pa.timestamp("us"))
        kind = column.type
    if not pa.types.is_timestamp(kind):
        raise HistoryConfigError(f"the timestamp column is {kind}, not a timestamp or date")
    if kind.tz is None:
        # as the file loader reads them: a repeated wall time is standard time, a skipped
        # one is shifted forward
        column = pc.assume_timezone(column, timezone, ambiguous="latest", nonexistent="latest")
    micros = pc.cast(pc.cast(column, pa.timestamp("us", "UTC")), pa.int64())
    if micros.null_count:
        raise HistoryConfigError(f"the timestamp column has {micros.null_count} NULL value(s)")
    return micros.to_numpy()


def _flags(column: pa.ChunkedArray, true_values: Sequence[str]) -> np.ndarray:
    """Discount flags: booleans as they are, numbers != 0, text in ``true_values``."""
    kind = column.type
    if pa.types.is_boolean(kind):
        flags = column
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        flags = pc.not_equal(column, 0)
    else:
        text = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(_plain(column), pa.string())))
        flags = pc.is_in(text, pa.array(list(true_values), pa.string()))
    return flags.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
