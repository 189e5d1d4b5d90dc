"""Database URLs, connections and errors: the one place retain talks to a SQL database.

A retailer's orders live in a database and the tools that act on scores read from one, so
retain reads purchase logs from, and publishes scores to, PostgreSQL (the common case) and
SQLite (embedded, for trying it without a server). Both go through ADBC, whose drivers hand
back Arrow record batches: columnar reads without a Python object per value.

URLs:

- ``postgresql://user@host:port/db`` (``postgres://`` too; any libpq parameter may follow,
  e.g. ``?sslmode=require`` or ``postgresql:///db?service=orders``);
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's spelling).

Credentials never travel on a command line, where ``ps`` and shell histories show them: a
URL given as an option must not hold a password (:func:`parse_url` refuses it). libpq reads
it from ``PGPASSWORD``, a password file (``~/.pgpass``, ``PGPASSFILE``) or a service file
(``PGSERVICEFILE``, ``?service=NAME``); or ``--url-env NAME`` names an environment variable
holding the whole URL (:func:`resolve_url`). Every message shows a URL through
:func:`features.redaction.redact`, the same helper that masks tracking URIs.

Table and column names are always quoted identifiers (:func:`quote_identifier`), never SQL
pasted into a statement; user SQL only enters as a ``--query`` the user wrote.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from features.errors import UserError
from features.redaction import redact

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection

__all__ = [
    "CONNECT_TIMEOUT",
    "DATABASE_SCHEMES",
    "DEFAULT_STATEMENT_TIMEOUT",
    "TIMEOUT_ENV",
    "DatabaseError",
    "DatabaseUrl",
    "connect",
    "database_error",
    "driver_uri",
    "is_database_url",
    "parse_url",
    "quote_identifier",
    "quote_table",
    "resolve_url",
    "statement_timeout_seconds",
]

DATABASE_SCHEMES = ("postgresql://", "postgres://", "sqlite://")
TIMEOUT_ENV = "RETAIN_DB_TIMEOUT"
DEFAULT_STATEMENT_TIMEOUT = 1800.0
"""Seconds one statement may run by default: far above a 10-million-row read, far below
forever."""
CONNECT_TIMEOUT = 10
"""Seconds to wait for a server to accept a connection and answer it."""
Dialect = Literal["postgresql", "sqlite"]
_PASSWORD_HELP = (
    "put it in PGPASSWORD, a password file (~/.pgpass) or a service file "
    "(PGSERVICEFILE, ?service=NAME), or name an environment variable holding the whole URL "
    "with --url-env NAME"
)
# SQLSTATE classes and codes worth their own words; the server's first line follows them.
_SQLSTATE_WORDS = {
    "42P01": "table not found",
    "42703": "column not found",
    "42501": "permission denied",
    "42601": "syntax error",
    "28P01": "authentication failed",
    "28000": "authentication failed",
    "3D000": "database not found",
    "57P01": "connection terminated by the server",
    "57P02": "connection terminated by the server",
    "57P03": "server not accepting connections",
    "57014": "query cancelled",
    "55P03": "lock not available",
}


class DatabaseError(UserError):
    """A database input the user can fix (URL, table, column, permission, connection).

    The message is one line naming the table, column or value, with any password masked.
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact(" ".join(str(message).split())))


@dataclass(frozen=True)
class DatabaseUrl:
    """A validated database URL: ``url`` goes to the driver, ``redacted`` into messages."""

    url: str
    dialect: Dialect
    sqlite_path: Path | None = None

    @property
    def redacted(self) -> str:
        return redact(self.url)

    def __str__(self) -> str:  # so an f-string can never leak the password
        return self.redacted

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted!r})"


def is_database_url(text: object) -> bool:
    """Whether ``text`` is spelled as a database URL (``postgresql://``, ``sqlite://``...)."""
    return isinstance(text, str) and text.lower().startswith(DATABASE_SCHEMES)


def parse_url(text: str, *, option: str = "--data", password_ok: bool = False) -> DatabaseUrl:
    """Validate a database URL given as ``option``; refuse a password unless ``password_ok``.

    ``password_ok`` is for URLs read from the environment (``--url-env``), never for one
    typed on a command line.
    """
    text = text.strip()
    lowered = text.lower()
    if lowered.startswith("sqlite://"):
        return _parse_sqlite(text, option)
    if not lowered.startswith(("postgresql://", "postgres://")):
        raise DatabaseError(
            f"{option}: unsupported database URL {redact(text)!r}: expected "
            "postgresql://user@host:port/db or sqlite:///path.db"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise DatabaseError(f"{option}: malformed database URL {redact(text)!r}: {error}") from None
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if not parts.hostname and "host" not in params and "service" not in params:
        # libpq would fall back to a local socket; say so rather than guess a server.
        raise DatabaseError(
            f"{option}: database URL {redact(text)!r} names no host: expected "
            "postgresql://user@host:port/db (or ?service=NAME)"
        )
    if port is not None and not 0 < port < 65536:
        raise DatabaseError(f"{option}: database URL {redact(text)!r}: port {port} out of range")
    has_password = parts.password is not None or "password" in {k.lower() for k in params}
    if has_password and not password_ok:
        raise DatabaseError(
            f"{option}: the database URL {redact(text)!r} holds a password, which must not be "
            f"on a command line; {_PASSWORD_HELP}"
        )
    return DatabaseUrl(url=text, dialect="postgresql")


def _parse_sqlite(text: str, option: str) -> DatabaseUrl:
    rest = text[len("sqlite://") :]
    if not rest.startswith("/") or rest == "/" or "?" in rest:
        raise DatabaseError(
            f"{option}: malformed SQLite URL {text!r}: expected sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    return DatabaseUrl(url=text, dialect="sqlite", sqlite_path=Path(rest[1:]))


def resolve_url(
    data: str | None, url_env: str | None, *, option: str = "--data"
) -> DatabaseUrl | None:
    """The database URL a command names, or None when ``data`` is a file path.

    ``--url-env NAME`` wins over ``--data``: the environment variable holds the whole URL,
    password included (it never reaches a command line or a message).
    """
    if url_env is not None:
        value = os.environ.get(url_env)
        if not value:
            raise DatabaseError(
                f"--url-env: environment variable {url_env!r} is not set or empty; it should "
                "hold the database URL (postgresql://user:password@host:port/db)"
            )
        if data is not None and not is_database_url(data):
            raise DatabaseError(
                f"give either {option} {data!r} (a file) or --url-env {url_env}, not both"
            )
        return parse_url(value, option=f"--url-env {url_env}", password_ok=True)
    if data is None or not is_database_url(data):
        return None
    return parse_url(data, option=option)


def statement_timeout_seconds() -> float:
    """The longest one statement may run: ``RETAIN_DB_TIMEOUT`` seconds, else
    :data:`DEFAULT_STATEMENT_TIMEOUT` (0 turns the limit off)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_STATEMENT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 10**7:
        raise DatabaseError(
            f"{TIMEOUT_ENV}={text!r}: expected a number of seconds (0 for no limit)"
        )
    return seconds


def driver_uri(url: DatabaseUrl, statement_timeout: float | None = None) -> str:
    """``url`` for libpq with the time limits added, so a server that hangs is an error.

    - ``connect_timeout`` (:data:`CONNECT_TIMEOUT` s) unless the URL or ``PGCONNECT_TIMEOUT``
      sets one: a server that accepts the connection but never answers (stopped, swapping)
      fails the connect instead of waiting forever;
    - ``statement_timeout`` (``statement_timeout`` seconds, default
      :func:`statement_timeout_seconds`) through the session's ``options``, after any the
      URL or ``PGOPTIONS`` gives: a statement waiting on a lock another session holds, or
      running far longer than expected, is cancelled by the server (SQLSTATE 57014).

    A server that stops answering in the middle of a statement is not covered: the
    operating system keeps the connection open, so no client-side limit applies.
    """
    seconds = statement_timeout_seconds() if statement_timeout is None else statement_timeout
    parts = urlsplit(url.url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    names = {name.lower() for name, _ in params}
    added: list[tuple[str, str]] = []
    if "connect_timeout" not in names and not os.environ.get("PGCONNECT_TIMEOUT"):
        added.append(("connect_timeout", str(CONNECT_TIMEOUT)))
    if seconds > 0:
        limit = f"-c statement_timeout={round(seconds * 1000)}"
        given = [value for name, value in params if name.lower() == "options"]
        base = given[-1] if given else os.environ.get("PGOPTIONS", "")
        params = [(name, value) for name, value in params if name.lower() != "options"]
        added.append(("options", f"{base} {limit}".strip()))
    if not added:
        return url.url
    query = urlencode([*params, *added], quote_via=quote)
    return urlunsplit(parts._replace(query=query))


def connect(
    url: DatabaseUrl | str, *, create: bool = False, statement_timeout: float | None = None
) -> Connection:
    """An ADBC DB-API connection (autocommit off: callers commit what they write).

    A SQLite file must already exist unless ``create`` (the driver would otherwise create an
    empty database and report its tables missing). PostgreSQL connections carry time limits
    (:func:`driver_uri`); ``statement_timeout`` seconds overrides ``RETAIN_DB_TIMEOUT``.
    """
    if isinstance(url, str):
        url = parse_url(url, password_ok=True)
    try:
        if url.dialect == "sqlite":
            import adbc_driver_sqlite.dbapi

            path = url.sqlite_path
            assert path is not None
            if not create and not path.exists():
                raise DatabaseError(f"SQLite database not found: {str(path)!r} ({url})")
            return adbc_driver_sqlite.dbapi.connect(str(path))
        import adbc_driver_postgresql.dbapi

        return adbc_driver_postgresql.dbapi.connect(driver_uri(url, statement_timeout))
    except DatabaseError:
        raise
    except Exception as error:
        raise database_error(error, f"cannot connect to {url}") from None


def database_error(error: BaseException, context: str) -> DatabaseError:
    """A driver error as a :class:`DatabaseError`: ``context``, what went wrong, the server's
    first line (SQLSTATE decides the words; the password is masked)."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    words = _SQLSTATE_WORDS.get(sqlstate)
    if words is None and sqlstate.startswith("08"):
        words = "connection failed"
    detail = _first_line(str(error))
    if sqlstate == "57014" and "statement timeout" in detail:
        words = f"no result within the statement time limit ({TIMEOUT_ENV} seconds)"
    return DatabaseError(f"{context}: {words}: {detail}" if words else f"{context}: {detail}")


def _first_line(message: str) -> str:
    """The server's own sentence: drop ADBC's ``IO: [libpq]`` prefixes and trailing detail."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    for prefix in ("INVALID_ARGUMENT:", "IO:", "INTERNAL:", "NOT_FOUND:", "UNAUTHORIZED:"):
        if line.startswith(prefix):
            line = line[len(prefix) :].strip()
    while line.startswith("["):
        end = line.find("]")
        if end < 0:
            break
        line = line[end + 1 :].strip()
    for noise in ("Failed to execute query:", "Failed to prepare query:"):
        line = line.replace(noise, "").strip()
    for marker in ("ERROR:", "FATAL:"):  # libpq's "could not begin COPY: ERROR: ..."
        if marker in line:
            line = line.rsplit(marker, 1)[1].strip()
    return line.rstrip(".")


def quote_identifier(name: str) -> str:
    """``name`` as one SQL identifier in double quotes, embedded quotes doubled.

    Quoting makes any name safe to place in a statement (and keeps its case, as PostgreSQL
    would not for a bare name).
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DatabaseError(f"invalid table or column name {name!r}: empty or holds a NUL")
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str) -> str:
    """A table name as SQL: ``schema.table`` (one dot) names a schema, each part quoted."""
    schema, dot, table = name.partition(".")
    if dot and schema and table and "." not in table:
        return f"{quote_identifier(schema)}.{quote_identifier(table)}"
    return quote_identifier(name)
