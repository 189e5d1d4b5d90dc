"""Where a command's purchase log comes from: a file, or a database table or query.

Every command that reads a log (kpis, features, segments, evaluate, train, score, report,
lift, uplift-train) takes the same options, defined once in :mod:`features.cli_options`:
``--data`` (a file path or a database URL), ``--table NAME`` or ``--query SQL`` and
``--url-env NAME`` (an environment variable holding the whole URL, password included, so it
is never on a command line). :func:`log_source` turns them, and the ``log:`` section of
``--config`` (``table:``, ``query:``, ``url_env:``), into what
:func:`features.log.purchase_log.read_purchase_log` reads: a :class:`~pathlib.Path` or a
:class:`~features.sources.database_log.DatabaseLog`. Options win over the config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from features.sources.database import DatabaseError, resolve_url

if TYPE_CHECKING:  # pyarrow is imported when a database is read, not by ``retain --help``
    from features.sources.database_log import DatabaseLog

__all__ = ["log_source"]


def log_source(
    data: str | Path | None,
    *,
    table: str | None = None,
    query: str | None = None,
    url_env: str | None = None,
    config_file: str | Path | None = None,
    option: str = "--data",
) -> Path | DatabaseLog:
    """The log a command reads: a file path, or a table or query in a database."""
    settings: dict[str, str] = {}
    if config_file is not None:
        from features.config_file import load_log_source_settings

        settings = load_log_source_settings(config_file)
        if url_env is None and data is None:
            url_env = settings.get("url_env")
    if data is not None and not isinstance(data, str):
        data = str(data)
    url = resolve_url(data, url_env, option=option)
    if url is not None and table is None and query is None:
        # the file's table/query apply to a database only: a file --data ignores them
        table, query = settings.get("table"), settings.get("query")
    if url is None:
        if data is None:
            raise DatabaseError(f"missing option {option} (a file or database URL) or --url-env")
        given = [name for name, value in (("--table", table), ("--query", query)) if value]
        if given:
            raise DatabaseError(
                f"{' and '.join(given)} name(s) rows in a database, but {option} {data!r} is a "
                "file; give a database URL (postgresql://user@host:port/db)"
            )
        return Path(data)
    if table is not None and query is not None:
        raise DatabaseError("give --table or --query, not both")
    from features.sources.database_log import DatabaseLog

    return DatabaseLog(url, table=table, query=query)
