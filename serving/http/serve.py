"""``retain serve``: check the configuration, load the model once, then start BentoML.

The service reads its settings from the environment (see
:class:`serving.http.settings.ServiceSettings`). This command translates options into that
environment, and every path in it (flags and ``RETAIN_*`` variables: the artifact
directory, the feature snapshot, a ``sqlite:///`` or plain-path tracking store) becomes an
absolute path in the caller's directory: the workers run with BentoML's working directory
at the repository, where a relative path names something else.

Then it does what a worker will do: checks the settings and loads the model and snapshot
(:func:`serving.http.startup.load_model_and_snapshot`). A bad value, a missing file or a model
that cannot load stops here with one line naming the setting (exit 2), before any worker
starts, instead of workers failing and being respawned. Last it replaces itself with
``bentoml serve`` (through :mod:`serving.http.worker_sockets`: a listening socket per
worker), so signals reach the server directly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from features.cli_options import (
    OptionalModelUriOption,
    OptionalRegisteredModelOption,
    TrackingUriOption,
)
from serving.http.worker_sockets import SERVE_MODULE
from serving.model_source import BENTO_MODEL_SCHEME

if TYPE_CHECKING:
    from serving.http.settings import ServiceSettings
    from serving.scorer import ScoringModel

SERVICE_TARGET = "serving.http.service:RetainService"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXIT_BAD_CONFIG = 2
SQLITE_PREFIX = "sqlite:///"


class ServeConfigError(ValueError):
    """A setting of ``retain serve`` that cannot be used; the message names it."""


def absolute_tracking_uri(uri: str, base: Path) -> str:
    """A relative ``sqlite:///file`` or plain-path store made absolute in ``base``.

    ``sqlite:////abs`` (four slashes), in-memory sqlite and server URIs are returned as given.
    """
    if uri.startswith(SQLITE_PREFIX):
        rest = uri[len(SQLITE_PREFIX) :]
        path, sep, query = rest.partition("?")
        if not path or path.startswith("/") or path == ":memory:":
            return uri
        return f"{SQLITE_PREFIX}{(base / Path(path).expanduser()).absolute()}{sep}{query}"
    if "://" not in uri and not uri.startswith("file:"):
        return str((base / Path(uri).expanduser()).absolute())
    return uri


def _sqlite_file(uri: str) -> Path | None:
    """The database file of an absolute ``sqlite:///`` URI, else None."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(path) if path.startswith("/") else None


def serve_command(
    model_uri: str | None,
    host: str,
    port: int,
    workers: int,
    registered_model: str | None = None,
    tracking_uri: str | None = None,
    feature_snapshot: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` argv and its environment, every path absolute in ``cwd``.

    Flags win over the ``RETAIN_*`` variables of ``environ`` (default: this process's).
    Testable without starting anything.
    """
    if workers < 1:
        raise typer.BadParameter(f"--workers must be >= 1, got {workers}")
    base = (cwd or Path.cwd()).absolute()
    env = dict(os.environ if environ is None else environ)
    env.update(
        {
            "BENTOML_DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "RETAIN_WORKERS": str(workers),
        }
    )
    model = (model_uri or env.get("RETAIN_MODEL_URI", "")).strip()
    if model:
        env["RETAIN_MODEL_URI"] = (
            model
            if model.startswith(("models:/", BENTO_MODEL_SCHEME))
            else str((base / Path(model).expanduser()).absolute())
        )
    if registered_model:
        env["RETAIN_REGISTERED_MODEL"] = registered_model
    from training.registry.tracking_store import DEFAULT_TRACKING_URI  # mlflow only when serving

    tracking = (tracking_uri or env.get("MLFLOW_TRACKING_URI", "")).strip()
    env["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(tracking or DEFAULT_TRACKING_URI, base)
    snapshot = (feature_snapshot or env.get("RETAIN_FEATURE_SNAPSHOT", "")).strip()
    if snapshot:
        env["RETAIN_FEATURE_SNAPSHOT"] = str((base / Path(snapshot).expanduser()).absolute())
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT)
    argv = [
        sys.executable,
        "-m",
        SERVE_MODULE,  # bentoml serve, one listening socket per worker
        "serve",
        SERVICE_TARGET,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(REPO_ROOT),
    ]
    return argv, env


def _readable(path: Path) -> bool:
    if path.is_dir():
        return os.access(path, os.R_OK | os.X_OK)
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


def check_paths(env: Mapping[str, str], flags: Mapping[str, bool]) -> None:
    """Every file the service will open exists and is readable, else :class:`ServeConfigError`.

    ``flags`` says which settings came from a flag, so the message names what the user typed.
    """
    model = env.get("RETAIN_MODEL_URI", "")
    checks: list[tuple[str, Path, str]] = []
    if model and not model.startswith("models:/"):
        name = "--model-uri" if flags.get("model_uri") else "RETAIN_MODEL_URI"
        checks.append((name, Path(model), "artifact directory"))
    snapshot = env.get("RETAIN_FEATURE_SNAPSHOT", "")
    if snapshot:
        name = "--feature-snapshot" if flags.get("feature_snapshot") else "RETAIN_FEATURE_SNAPSHOT"
        checks.append((name, Path(snapshot), "feature snapshot"))
    store = _sqlite_file(env.get("MLFLOW_TRACKING_URI", ""))
    if store is not None and (not model or model.startswith("models:/")):
        # opening a missing sqlite store would create an empty one and find no model in it
        name = "--tracking-uri" if flags.get("tracking_uri") else "MLFLOW_TRACKING_URI"
        if flags.get("tracking_default"):
            name = "MLFLOW_TRACKING_URI (not set; the default is ./mlflow.db)"
        checks.append((name, store, "MLflow sqlite store"))
    for name, path, what in checks:
        if not path.exists():
            raise ServeConfigError(f"{name}: {what} {path} does not exist")
        if what == "artifact directory" and not path.is_dir():
            raise ServeConfigError(f"{name}: {what} {path} is not a directory")
        if not _readable(path):
            raise ServeConfigError(f"{name}: {what} {path} is not readable")


def preflight(env: Mapping[str, str], flags: Mapping[str, bool]) -> str:
    """Check and load what every worker will load; one line on what was loaded.

    Raises :class:`ServeConfigError` with one line (URI passwords redacted) when the service
    could not start; a bug still raises its own exception.
    """
    from features.redaction import redact
    from serving.http.settings import ServiceSettings, SettingsError, configure_process_env
    from serving.http.startup import (
        expected_startup_errors,
        load_model_and_snapshot,
        startup_failure,
    )

    check_paths(env, flags)
    try:
        settings = ServiceSettings.from_env(env)
    except SettingsError as exc:
        raise ServeConfigError(str(exc)) from None
    configure_process_env()
    try:
        model, info, snapshot = load_model_and_snapshot(settings)
    except expected_startup_errors() as exc:
        raise ServeConfigError(f"model or snapshot not loaded: {startup_failure(exc)}") from None
    shown = f"snapshot {snapshot.path} ({len(snapshot.features)} customers)"
    if settings.history_url is not None:
        shown = check_history(settings, model)
    elif snapshot.path is None:
        shown = "no snapshot"
    del model
    return (
        f"model {info.name} version {info.version} from {info.uri}; {shown}; "
        f"tracking {redact(settings.tracking_uri or '(none)')}"
    )


def check_history(settings: ServiceSettings, model: ScoringModel) -> str:
    """The history table or query of ``/score/ids`` checked as a worker will use it: one
    line naming what it reads; a warning naming the ``CREATE INDEX`` a table lacks.

    A missing table or column, or a database that does not answer, is a
    :class:`ServeConfigError` (one line, the password masked).
    """
    from features.redaction import redact
    from serving.http.history_source import HistoryConfigError, HistoryUnavailable
    from serving.http.startup import index_warning, open_history

    source = None
    try:
        source = open_history(settings, model, strict=True)
        assert source is not None  # called only with RETAIN_HISTORY_URL set
        warning = index_warning(source)
    except (HistoryConfigError, HistoryUnavailable) as exc:
        raise ServeConfigError(str(exc)) from None
    finally:
        if source is not None:
            source.close()
    if warning is not None:
        typer.echo(f"retain serve: warning: {warning}", err=True)
    return f"/score/ids histories from {source.settings.label} at {redact(settings.history_url)}"


def serve(
    model_uri: OptionalModelUriOption = None,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
    port: int = typer.Option(3000, "--port", help="Port to listen on."),
    workers: int = typer.Option(2, "--workers", help="Worker processes (one per core)."),
    api_key_env: str | None = typer.Option(
        None,
        "--api-key-env",
        help="Name of an env variable holding the API key (turns auth on); the key "
        "itself never goes on the command line.",
    ),
    registered_model: OptionalRegisteredModelOption = None,
    tracking_uri: TrackingUriOption = None,
    feature_snapshot: str | None = typer.Option(
        None,
        "--feature-snapshot",
        help="Parquet file/dir of features for /score/ids (default: env RETAIN_FEATURE_SNAPSHOT).",
    ),
) -> None:
    """Serve /score, /score/ids, /readyz, /metrics over HTTP with BentoML.

    --model-uri also takes bentoml:<model tag>; without it the model is env
    RETAIN_MODEL_URI, else the champion of --registered-model (env RETAIN_REGISTERED_MODEL,
    else retain). Relative paths are taken in the current directory. The model and snapshot
    are loaded once before the server starts: a bad setting exits 2 with one line.
    """
    argv, env = serve_command(
        model_uri, host, port, workers, registered_model, tracking_uri, feature_snapshot
    )
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise typer.BadParameter(
                f"environment variable {api_key_env} is not set or empty",
                param_hint="--api-key-env",
            )
        env["RETAIN_API_KEY"] = key
    flags = {
        "model_uri": bool(model_uri),
        "feature_snapshot": bool(feature_snapshot),
        "tracking_uri": bool(tracking_uri),
        "tracking_default": not tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"),
    }
    try:
        loaded = preflight(env, flags)
    except ServeConfigError as exc:
        typer.echo(f"retain serve: error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
    typer.echo(f"retain serve: {loaded}", err=True)
    typer.echo(f"retain serve: http://{host}:{port} with {workers} worker(s)", err=True)
    os.execvpe(argv[0], argv, env)


def register(app: typer.Typer) -> None:
    """Add ``retain serve`` to the root app."""
    app.command("serve")(serve)
