"""A throwaway PostgreSQL cluster for the tests, started from the machine's own binaries.

The tests talk to a real server (never a mock, never SQLite standing in): Debian's
PostgreSQL 15 (``apt-get install postgresql``; binaries under ``/usr/lib/postgresql/N/bin``).
The cluster lives in a temporary directory, trusts local connections, listens on a free
loopback port only and runs with ``fsync=off``: it holds test data for one run, then is
deleted. PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` user (``runuser``) and the directory is handed to that user.

Run as a script it wraps a command so one server serves a whole test run (``make test`` and
``.ci/run``)::

    python tests/postgres_server.py -- pytest -q

exports ``RETAIN_TEST_POSTGRES_URL`` to the command and stops the server after it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = [
    "ENV_URL",
    "PostgresServer",
    "PostgresUnavailable",
    "execute",
    "find_bindir",
    "fresh_database",
    "load_frame",
]

ENV_URL = "RETAIN_TEST_POSTGRES_URL"
_RUN_AS = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine (install Debian's ``postgresql``)."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: ``pg_config``'s, else Debian's newest."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates += [Path(p) for p in debian]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with "
        "`apt-get install postgresql` or set " + ENV_URL
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A cluster in a temporary directory; ``url`` is its superuser's URL (trust auth)."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.as_root = os.geteuid() == 0
        self.user = _RUN_AS if self.as_root else _current_user()
        self.root = Path(tempfile.mkdtemp(prefix="retain-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.port = 0
        self.url = ""

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", _RUN_AS, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    def start(self) -> str:
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.root, _RUN_AS, _RUN_AS)
            shutil.chown(self.sockets, _RUN_AS, _RUN_AS)
        init = self._run(
            "initdb", "-D", str(self.data), "--auth=trust", "-U", self.user, "--no-sync",
            "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        for _attempt in range(5):
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            started = self._run(
                "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                "-w", "-t", "60", "start",
            )  # fmt: skip
            if started.returncode == 0:
                self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"
                return self.url
            time.sleep(0.2)  # the port was taken between the probe and the bind: retry
        log = (
            (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
        )
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()} {log[-2000:]}")

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run statements in autocommit mode; the last one's rows (if it returns any)."""
    import adbc_driver_postgresql.dbapi

    with adbc_driver_postgresql.dbapi.connect(url, autocommit=True) as connection:
        cursor = connection.cursor()
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            cursor.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
        cursor.close()
        return rows


def fresh_database(url: str, name: str) -> str:
    """A new, empty database ``name`` on the server of ``url`` (dropped first); its URL."""
    execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def load_frame(url: str, table: str, frame: object) -> None:
    """``frame`` (a DataFrame or Arrow table) as a new table ``table`` (replacing one)."""
    import adbc_driver_postgresql.dbapi
    import pyarrow as pa

    data = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    with adbc_driver_postgresql.dbapi.connect(url) as connection:
        cursor = connection.cursor()
        cursor.adbc_ingest(table, data, mode="replace")
        connection.commit()
        cursor.close()


def _current_user() -> str:
    import getpass

    return getpass.getuser()


def main(argv: list[str]) -> int:
    """``postgres_server.py -- COMMAND...``: run COMMAND with a server's URL in the env."""
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: postgres_server.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    if os.environ.get(ENV_URL):
        return subprocess.call(argv)
    with PostgresServer() as server:
        print(f"postgres_server: {server.url} for this run", file=sys.stderr)
        return subprocess.call(argv, env={**os.environ, ENV_URL: server.url})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
