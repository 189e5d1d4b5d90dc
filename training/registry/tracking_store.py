"""The MLflow store: which one this process uses, and opening it safely.

The tracking URI is chosen once, at start-up, by :func:`configure_tracking` (explicit
argument > ``MLFLOW_TRACKING_URI`` > an embedded ``sqlite:///mlflow.db`` with artifacts in
``./mlartifacts``); nothing else sets global MLflow state. A server that cannot be reached
fails in seconds (:func:`check_reachable`), a read-only command never creates a store, and a
new sqlite store's schema is created under a file lock, so concurrent first runs are safe.
:func:`ensure_experiment` finds or creates an experiment in that store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from features.errors import UserError
from features.redaction import redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"
DEFAULT_EXPERIMENT = "retain"
REACH_TIMEOUT_SECONDS = 5.0
# stores behind a server, by URI scheme (before any "+driver"): the port when none is given
_DEFAULT_PORTS: dict[str, int] = {
    "http": 80,
    "https": 443,
    "postgresql": 5432,
    "postgres": 5432,
    "mysql": 3306,
    "mssql": 1433,
}


class TrackingStoreError(UserError, RuntimeError):
    """The tracking store cannot be used (missing, unreachable); the message says why."""


def resolve_tracking_uri(uri: str | None, *, workdir: Path | None = None) -> str:
    """Explicit argument > ``MLFLOW_TRACKING_URI`` > sqlite file in the working directory."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = (workdir or Path.cwd()).absolute()
    return f"sqlite:///{base / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store or in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = urllib.parse.unquote(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not rest or rest == ":memory:":
        return None
    return Path(rest).absolute()  # sqlite:////abs -> "/abs"; sqlite:///rel -> cwd/rel


def _server_address(uri: str) -> tuple[str, int] | None:
    """(host, port) of a server store (http(s) or a database server); None for files."""
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.split("+", 1)[0].lower()
    if scheme not in _DEFAULT_PORTS or not parsed.hostname:
        return None
    try:
        port = parsed.port
    except ValueError as exc:
        raise TrackingStoreError(f"tracking URI {redact(uri)}: {exc}") from None
    return parsed.hostname, port or _DEFAULT_PORTS[scheme]


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_SECONDS) -> None:
    """Fail in seconds, not minutes, when a tracking server cannot be reached.

    MLflow retries a refused connection for about four minutes before giving up, and some
    read paths then report "nothing found" instead of the failure; one TCP connect up front
    turns that into one clear message (password masked).
    """
    address = _server_address(uri)
    if address is None:
        return
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TrackingStoreError(
            f"cannot reach the MLflow tracking server at {redact(uri)} "
            f"({address[0]}:{address[1]}): {reason}"
        ) from None


@contextlib.contextmanager
def _store_lock(db: Path, *, create: bool) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` held while a sqlite store is first opened.

    MLflow creates the schema the first time a process opens an empty sqlite file; two
    processes doing that at once race and one dies with an SQLAlchemy error. Only a
    creating caller makes the lock file; readers take it only if it exists (a store made
    without it was fully created before anyone could read it).
    """
    lock_path = db.with_name(db.name + ".lock")
    if not create and not lock_path.exists():
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def configure_tracking(
    uri: str | None = None, *, workdir: Path | None = None, create: bool = True
) -> str:
    """Set the tracking and registry URI for this process; call once at start-up.

    The store is opened here, so a problem surfaces before any work as a
    :class:`TrackingStoreError`: an unreachable server, or (``create=False``, for commands
    that only read) a sqlite file that does not exist, which is then not created. A new
    sqlite store's schema is created under a file lock, so concurrent first runs are safe.
    """
    resolved = resolve_tracking_uri(uri, workdir=workdir)
    db = sqlite_path(resolved)
    if db is not None and not create and not db.is_file():
        raise TrackingStoreError(
            f"no MLflow store at {redact(resolved)} ({db} does not exist); train a model "
            "there first with `retain train`, or point --tracking-uri / MLFLOW_TRACKING_URI "
            "at your store"
        )
    check_reachable(resolved)
    mlflow.set_tracking_uri(resolved)
    mlflow.set_registry_uri(resolved)
    if db is not None:
        if create:
            db.parent.mkdir(parents=True, exist_ok=True)
        with _store_lock(db, create=create):
            try:
                client = MlflowClient()
                client.search_experiments(max_results=1)  # creates the tracking schema
                client.search_registered_models(max_results=1)  # and the registry's
            except Exception as exc:
                raise TrackingStoreError(
                    f"cannot open the MLflow store at {redact(resolved)}: {redact(exc)}"
                ) from None
    return resolved


def ensure_experiment(name: str = DEFAULT_EXPERIMENT, *, workdir: Path | None = None) -> str:
    """The experiment's id, creating it if needed.

    With a local sqlite store, artifacts go to ``./mlartifacts`` next to the database
    rather than MLflow's default ``./mlruns``; a server decides its own artifact root.
    """
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifact_location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:"):
        # next to the database file, wherever the process runs (an in-memory store: the
        # working directory); the store and its artifacts stay one folder to back up or move
        database = sqlite_path(uri)
        root = database.parent if database is not None else (workdir or Path.cwd()).absolute()
        artifact_location = (root / DEFAULT_ARTIFACT_DIR).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id
