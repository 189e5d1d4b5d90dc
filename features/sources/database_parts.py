"""A large PostgreSQL table read in parts, over several connections sharing one snapshot.

Decoding PostgreSQL's row protocol costs the client about as much CPU as the server spends
sending it, and each side works one row at a time; a file reader has no such cost. Two
connections reading the two halves of a table (by physical block: ``ctid`` ranges, which
PostgreSQL scans directly) keep both cores busy, so a log read takes about half the wall
time on an otherwise idle machine. The CPU seconds stay the same.

The parts must add up to exactly the rows one ``SELECT`` would see:

- every connection reads under the same snapshot (``pg_export_snapshot`` /
  ``SET TRANSACTION SNAPSHOT``, as ``pg_dump -j`` does), so a row updated or inserted
  during the read is seen by all parts or by none;
- the ``ctid`` ranges are complementary (``< b`` and ``>= b``), so each row falls in one
  part whatever the table's size when the read starts;
- the parts are joined in block order, which is the order a sequential scan returns, so
  row numbers in the loader's messages stay those of a plain read.

Only plain tables (``relkind = 'r'``) of at least :data:`MIN_SPLIT_BYTES` are split: a
view or a ``--query`` has no blocks to divide, and a small table reads faster on the one
connection it already has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import TYPE_CHECKING, Any, TypeVar

from features.sources.database import DatabaseUrl, connect, database_error

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Cursor

__all__ = ["MIN_SPLIT_BYTES", "PARTS", "begin_snapshot", "block_ranges", "read_in_parts"]

PARTS = 2
"""Connections a large table is read over (one per core of a small machine)."""
MIN_SPLIT_BYTES = 32 * 2**20
"""Tables smaller than this (about 400,000 rows of a typical log) are read in one part."""

T = TypeVar("T")


def begin_snapshot(cursor: Cursor) -> None:
    """Make the cursor's transaction (ADBC opens one; autocommit is off) repeatable-read, so
    its snapshot can be exported to the other parts. Call before the transaction's first
    query."""
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def block_ranges(cursor: Cursor, table_sql: str, parts: int = PARTS) -> list[str]:
    """``WHERE`` conditions dividing ``table_sql`` (a quoted table name) into ``parts`` ranges
    of blocks, or ``[]`` when it is not a plain table of at least :data:`MIN_SPLIT_BYTES`."""
    cursor.execute(
        "SELECT c.relkind::text, pg_relation_size(c.oid), current_setting('block_size')::int "
        "FROM pg_class c WHERE c.oid = to_regclass($1::text)",
        (table_sql,),
    )
    row = cursor.fetchone()
    if row is None or row[0] != "r" or int(row[1]) < MIN_SPLIT_BYTES or parts < 2:
        return []
    blocks = int(row[1]) // int(row[2])
    bounds = [blocks * k // parts for k in range(1, parts)]
    conditions = [f"ctid < '({bounds[0]},0)'::tid"]
    conditions += [
        f"ctid >= '({low},0)'::tid AND ctid < '({high},0)'::tid" for low, high in pairwise(bounds)
    ]
    conditions.append(f"ctid >= '({bounds[-1]},0)'::tid")
    return conditions


def read_in_parts(
    url: DatabaseUrl,
    cursor: Cursor,
    statements: Sequence[str],
    read: Callable[[Any, str], T],
    *,
    context: str,
) -> list[T]:
    """``read(cursor, statement)`` for each statement, each on its own connection, all under
    ``cursor``'s snapshot (its transaction began with :func:`begin_snapshot`); the results in
    statement order. The first statement runs on ``cursor`` itself."""
    try:
        cursor.execute("SELECT pg_export_snapshot()")
        row = cursor.fetchone()
        assert row is not None  # the function always returns one row
        snapshot = str(row[0])
    except Exception as error:
        raise database_error(error, context) from None
    others: list[Any] = []
    try:
        for _ in statements[1:]:
            connection = connect(url)
            others.append(connection)
            other = connection.cursor()
            try:
                begin_snapshot(other)
                other.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # from the server
            except Exception as error:
                raise database_error(error, context) from None
        cursors = [cursor, *(connection.cursor() for connection in others)]
        with ThreadPoolExecutor(len(statements)) as pool:
            futures = [
                pool.submit(read, each, statement)
                for each, statement in zip(cursors, statements, strict=True)
            ]
            # every part ends (or fails) before its connection closes; the first error is raised
            results = [future.result() for future in futures]
        return results
    finally:
        for connection in others:
            connection.close()
