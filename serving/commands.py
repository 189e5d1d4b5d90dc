"""``retain serve``: start the BentoML scoring service with its configuration in the env.

The service reads its settings from the environment (see
:class:`serving.service.ServiceSettings`); this command only translates options into that
environment and replaces itself with ``bentoml serve``, so signals reach the server
directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from serving.model_source import BENTO_MODEL_SCHEME

SERVICE_TARGET = "serving.service:RetainService"
REPO_ROOT = Path(__file__).resolve().parents[1]


def serve_command(
    model_uri: str | None,
    host: str,
    port: int,
    workers: int,
    registered_model: str | None = None,
    tracking_uri: str | None = None,
    feature_snapshot: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` argv and the environment for it (testable without starting)."""
    if workers < 1:
        raise typer.BadParameter(f"--workers must be >= 1, got {workers}")
    env = dict(os.environ)
    env.update(
        {
            "BENTOML_DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "RETAIN_WORKERS": str(workers),
        }
    )
    if model_uri:
        local = Path(model_uri).expanduser()
        env["RETAIN_MODEL_URI"] = (
            model_uri
            if model_uri.startswith(("models:/", BENTO_MODEL_SCHEME))
            else str(local.absolute())
        )
    if registered_model:
        env["RETAIN_REGISTERED_MODEL"] = registered_model
    # resolved here, in the caller's directory: the workers run with --working-dir at the
    # repository, where a relative sqlite:///mlflow.db would open a different, empty store
    from training.tracking import resolve_tracking_uri  # mlflow only when serving

    env["MLFLOW_TRACKING_URI"] = resolve_tracking_uri(tracking_uri)
    if feature_snapshot:
        env["RETAIN_FEATURE_SNAPSHOT"] = str(Path(feature_snapshot).expanduser().absolute())
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT)
    argv = [
        sys.executable,
        "-m",
        "bentoml",
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


def register(app: typer.Typer) -> None:
    """Add ``retain serve`` to the root app."""

    @app.command("serve")
    def serve(
        model_uri: str | None = typer.Option(
            None,
            "--model-uri",
            help="Artifact directory, models:/<name>@<alias> or bentoml:<model tag> "
            "(default: env RETAIN_MODEL_URI, else models:/retain@champion).",
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
        port: int = typer.Option(3000, "--port", help="Port to listen on."),
        workers: int = typer.Option(2, "--workers", help="Worker processes (one per core)."),
        api_key_env: str | None = typer.Option(
            None,
            "--api-key-env",
            help="Name of an env variable holding the API key (turns auth on); the key "
            "itself never goes on the command line.",
        ),
        registered_model: str | None = typer.Option(
            None, "--registered-model", help="Registered model name for the default URI."
        ),
        tracking_uri: str | None = typer.Option(
            None, "--tracking-uri", help="MLflow tracking URI (default: env or ./mlflow.db)."
        ),
        feature_snapshot: str | None = typer.Option(
            None, "--feature-snapshot", help="Parquet file/dir of features for /score/ids."
        ),
    ) -> None:
        """Serve /score, /score/ids, /readyz, /metrics over HTTP with BentoML."""
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
        typer.echo(f"retain serve: {' '.join(argv[2:])} (workers={workers})", err=True)
        os.execvpe(argv[0], argv, env)
