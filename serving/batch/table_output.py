"""``retain score --out postgresql://... --out-table NAME``: scores published into a table.

The systems that act on scores (CRM, e-mail tools) read them from a database, so a run can
publish there with the guarantees the Parquet output has (:mod:`serving.batch.publish`):

- **old or new, never a mix**: the run's rows go into a staging table named for the run
  (``<table>__<run id>``), loaded with ADBC's bulk ``COPY``; one transaction then drops the
  old table and renames the staging table into its place. A reader sees the old rows or
  the new ones; a run killed at any moment (even mid-switch: the transaction never commits)
  leaves the old table whole, and a rerun drops its own leftover staging table first.
- **one run at a time**: a run holds a PostgreSQL advisory lock keyed on the table from
  before scoring until after the switch; a second run is refused, naming the holder's run id
  and process (read from ``pg_stat_activity``, where the run sets its ``application_name``).
  The server releases the lock when a killed run's connection goes.
- **nothing of the user's is touched**: retain records each table it creates (by OID) in
  ``retain_outputs`` in the table's schema. A target table that exists but is not recorded
  there is refused, never dropped or altered; privileges granted on retain's old table are
  granted again on the new one, so the readers keep their access.
- **same inputs, same rows**: the rows are the Parquet parts' rows, in the same order; the
  run summary (what ``retain lift`` needs, e.g. the horizon) is kept in ``retain_outputs``.

:func:`read_scores_table` reads such a table (or any assignments table) back for
``retain lift --assignments postgresql://... --assignments-table NAME``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.sources.database import (
    DatabaseError,
    DatabaseUrl,
    connect,
    database_error,
    quote_identifier,
)
from serving.batch.chunks import BatchError
from serving.batch.publish import SCORE_SCHEMA

__all__ = ["OWNERSHIP_TABLE", "TableOutput", "read_scores_table", "split_table_name"]

OWNERSHIP_TABLE = "retain_outputs"
_LOCK_NAMESPACE = 0x52544E31  # "RTN1": the first key of retain's two-key advisory locks
_APPLICATION = "retain score"
_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
)
_MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names: staging names must stay below


def split_table_name(name: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); a bare name -> (None, table)."""
    schema, dot, table = name.partition(".")
    if dot and schema and table and "." not in table:
        return schema, table
    return None, name


class TableOutput:
    """One run's hold on an output table: the lock from ``with`` to the end, then publish.

    Entering connects, takes the advisory lock (refusing a second run) and checks the
    target is retain's or absent, all before any scoring work.
    """

    def __init__(self, url: DatabaseUrl, table: str, run_id: str) -> None:
        if url.dialect != "postgresql":
            raise BatchError(
                f"--out {url}: scores are published to PostgreSQL (postgresql://...) or a "
                "directory; SQLite is read-only for retain"
            )
        if not table.strip():
            raise BatchError("--out-table: empty table name")
        self.url = url
        self.schema, self.name = split_table_name(table)
        self.label = table
        self.run_id = run_id
        self.staging_name = _staging_name(self.name, run_id)
        self._connection: Any = None  # an ADBC Connection while the output is open

    # -- SQL names ------------------------------------------------------------------------

    def _qualified(self, name: str) -> str:
        if self.schema is None:
            return quote_identifier(name)
        return f"{quote_identifier(self.schema)}.{quote_identifier(name)}"

    @property
    def target_sql(self) -> str:
        return self._qualified(self.name)

    @property
    def staging_sql(self) -> str:
        return self._qualified(self.staging_name)

    @property
    def ownership_sql(self) -> str:
        return self._qualified(OWNERSHIP_TABLE)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> TableOutput:
        self._connection = connect(self.url)
        try:
            self._lock()
            self._ensure_ownership_table()
            self._check_target()
            self._connection.commit()  # hold only the (session) lock while scoring
        except BaseException:
            self._connection.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.rollback()
        finally:
            connection.close()  # ends the session: the advisory lock goes with it

    def _execute(self, sql: str, parameters: Sequence[Any] = (), *, what: str) -> Any:
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, parameters or None)
        except DatabaseError:
            raise
        except Exception as error:
            raise database_error(error, f"--out-table {self.label!r}: {what}") from None
        return cursor

    def _lock(self) -> None:
        self._execute(
            "SELECT set_config('application_name', $1::text, false)",
            (f"{_APPLICATION} {self.run_id} pid {os.getpid()}@{socket.gethostname()}"[:63],),
            what="naming the session",
        )
        key = self._fetch_one(
            "SELECT hashtext(coalesce($1::text, current_schema()) || '.' || $2::text)",
            (self.schema, self.name),
            what="taking the run lock",
        )
        got = self._fetch_one(
            "SELECT pg_try_advisory_lock($1::int4, $2::int4)",
            (_LOCK_NAMESPACE, key),
            what="taking the lock",
        )
        self._connection.commit()
        if got:
            return
        holders = self._execute(
            "SELECT a.application_name, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid",
            (_LOCK_NAMESPACE, key & 0xFFFFFFFF),
            what="finding the other run",
        ).fetchall()
        other = "; ".join(f"{name or 'a session'} (server pid {pid})" for name, pid in holders)
        raise BatchError(
            f"--out-table {self.label!r} in {self.url} is being published by another run: "
            f"{other or 'unknown holder'}; wait for it to finish"
        )

    def _fetch_one(self, sql: str, parameters: Sequence[Any], *, what: str) -> Any:
        row = self._execute(sql, parameters, what=what).fetchone()
        return None if row is None else row[0]

    def _ensure_ownership_table(self) -> None:
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {self.ownership_sql} ("
            "table_name text PRIMARY KEY, table_oid oid NOT NULL, run_id text NOT NULL, "
            "state text NOT NULL, summary text, published_at timestamptz NOT NULL DEFAULT now())",
            what=f"creating {OWNERSHIP_TABLE}",
        )
        self._connection.commit()

    def _oid(self, name: str) -> int | None:
        value = self._fetch_one(
            "SELECT to_regclass($1::text)::oid::bigint",
            (self._qualified(name),),
            what="looking it up",
        )
        return None if value is None else int(value)

    def _recorded_oid(self, name: str) -> int | None:
        value = self._fetch_one(
            f"SELECT table_oid::bigint FROM {self.ownership_sql} WHERE table_name = $1::text",
            (name,),
            what=f"reading {OWNERSHIP_TABLE}",
        )
        return None if value is None else int(value)

    def _check_target(self) -> None:
        """Refuse a target retain did not create (it is never dropped or altered)."""
        oid = self._oid(self.name)
        if oid is not None and oid != self._recorded_oid(self.name):
            raise BatchError(
                f"--out-table {self.label!r} in {self.url} exists and was not created by retain "
                f"(not in {OWNERSHIP_TABLE}); it is left as it is: choose another --out-table"
            )

    # -- publish ----------------------------------------------------------------------------

    def publish(
        self,
        parts: Sequence[Path],
        summary: dict[str, Any],
        pause: Callable[[str], None] = lambda step: None,
    ) -> int:
        """Stage the parts' rows, then switch them in with one transaction; return rows."""
        self._drop_leftover_staging()
        rows = self._stage(parts)
        pause("table-staged")
        self._switch(summary, pause)
        return rows

    def _drop_leftover_staging(self) -> None:
        """A staging table of a killed run with this run id: retain's own, so dropped."""
        oid = self._oid(self.staging_name)
        if oid is None:
            return
        if oid != self._recorded_oid(self.staging_name):
            raise BatchError(
                f"a table named {self.staging_name!r} exists in {self.url} and was not created "
                "by retain; it is left as it is: choose another --out-table"
            )
        self._execute(f"DROP TABLE {self.staging_sql}", what="dropping a leftover staging table")
        self._execute(
            f"DELETE FROM {self.ownership_sql} WHERE table_name = $1::text",
            (self.staging_name,),
            what=f"updating {OWNERSHIP_TABLE}",
        )
        self._connection.commit()

    def _stage(self, parts: Sequence[Path]) -> int:
        cursor = self._connection.cursor()
        empty = pa.table({f.name: pa.array([], f.type) for f in SCORE_SCHEMA}, schema=SCORE_SCHEMA)
        try:
            cursor.adbc_ingest(self.staging_name, empty, mode="create", db_schema_name=self.schema)
            self._record(self.staging_name, "staging", None)
            self._connection.commit()
            rows = 0
            for part in parts:
                table = pq.read_table(part, schema=SCORE_SCHEMA)
                rows += table.num_rows
                if table.num_rows:
                    cursor.adbc_ingest(
                        self.staging_name, table, mode="append", db_schema_name=self.schema
                    )
            self._connection.commit()
        except (DatabaseError, BatchError):
            raise
        except Exception as error:
            raise database_error(error, f"--out-table {self.label!r}: staging the rows") from None
        return rows

    def _record(self, name: str, state: str, summary: dict[str, Any] | None) -> None:
        oid = self._oid(name)
        self._execute(
            f"INSERT INTO {self.ownership_sql} (table_name, table_oid, run_id, state, summary) "
            "VALUES ($1::text, $2::bigint::oid, $3::text, $4::text, $5::text) ON CONFLICT (table_name) DO UPDATE SET "
            "table_oid = EXCLUDED.table_oid, run_id = EXCLUDED.run_id, state = EXCLUDED.state, "
            "summary = EXCLUDED.summary, published_at = now()",
            (name, oid, self.run_id, state, None if summary is None else json.dumps(summary)),
            what=f"recording the table in {OWNERSHIP_TABLE}",
        )

    def _switch(self, summary: dict[str, Any], pause: Callable[[str], None]) -> None:
        """Old table out, staged table in, one transaction (autocommit is off)."""
        old = self._oid(self.name)
        grants: list[tuple[str, str]] = []
        if old is not None:
            self._execute(
                f"LOCK TABLE {self.target_sql} IN ACCESS EXCLUSIVE MODE", what="locking it"
            )
            if old != self._recorded_oid(self.name):  # re-checked under the lock
                raise BatchError(
                    f"--out-table {self.label!r} was replaced by a table retain did not create; "
                    "it is left as it is"
                )
            grants = self._grants(old)
            self._execute(f"DROP TABLE {self.target_sql}", what="dropping retain's old table")
        self._execute(
            f"ALTER TABLE {self.staging_sql} RENAME TO {quote_identifier(self.name)}",
            what="switching the new rows in",
        )
        for privilege, grantee in grants:
            self._execute(
                f"GRANT {privilege} ON {self.target_sql} TO {grantee}", what="keeping grants"
            )
        self._execute(
            f"COMMENT ON TABLE {self.target_sql} IS "
            f"'retain score run {self.run_id}: replaced by the next run'",
            what="commenting it",
        )
        self._execute(
            f"DELETE FROM {self.ownership_sql} WHERE table_name = $1::text",
            (self.staging_name,),
            what=f"updating {OWNERSHIP_TABLE}",
        )
        self._record(self.name, "published", summary)
        pause("table-switch")
        try:
            self._connection.commit()
        except Exception as error:
            raise database_error(error, f"--out-table {self.label!r}: committing") from None

    def _grants(self, oid: int) -> list[tuple[str, str]]:
        """Privileges others hold on the old table, as (PRIVILEGE, quoted grantee)."""
        rows = self._execute(
            "SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN NULL "
            "ELSE pg_get_userbyid(a.grantee) END "
            "FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = $1::bigint::oid AND a.grantee <> c.relowner",
            (oid,),
            what="reading its grants",
        ).fetchall()
        return [
            (privilege, "PUBLIC" if grantee is None else quote_identifier(grantee))
            for privilege, grantee in rows
            if privilege in _PRIVILEGES
        ]


def _staging_name(table: str, run_id: str) -> str:
    suffix = f"__{run_id}"
    head = table.encode("utf-8")[: _MAX_IDENTIFIER - len(suffix)].decode("utf-8", "ignore")
    return f"{head}{suffix}"


def read_scores_table(url: DatabaseUrl, table: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A scores (or any assignments) table and, for one retain published, its run summary."""
    from features.log.schema import LogConfig
    from features.sources.database_log import DatabaseLog, read_database_log

    schema, name = split_table_name(table)
    frame = read_database_log(DatabaseLog(url, table=table), LogConfig(), check_columns=False)
    summary: dict[str, Any] = {}
    if url.dialect != "postgresql":
        return frame, summary
    ownership = (
        quote_identifier(OWNERSHIP_TABLE)
        if schema is None
        else f"{quote_identifier(schema)}.{quote_identifier(OWNERSHIP_TABLE)}"
    )
    connection = connect(url)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT to_regclass($1::text) IS NOT NULL", (ownership,))
        if (cursor.fetchone() or (None,))[0]:
            cursor.execute(
                f"SELECT summary FROM {ownership} WHERE table_name = $1::text AND state = 'published'",
                (name,),
            )
            row = cursor.fetchone()
            if row is not None and row[0]:
                summary = json.loads(row[0])
    except Exception as error:
        raise database_error(error, f"reading {OWNERSHIP_TABLE}") from None
    finally:
        connection.close()
    return frame, summary
