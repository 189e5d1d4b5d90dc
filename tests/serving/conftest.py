"""A real ``mlflow server`` for the serving tests: own sqlite store and artifact root in tmp."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from features.log.purchase_log import canonicalize

_STARTUP_SECONDS = 120.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``mlflow server`` on 127.0.0.1:<free port>; yield its tracking URI; stop it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    # No job execution: its runner and seven huey consumer processes (MLflow's server-side
    # jobs, unused by retain) would each import mlflow at start and poll all session long.
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        (root / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + _STARTUP_SECONDS
            while not _healthy(url):
                if process.poll() is not None:
                    pytest.fail(
                        f"mlflow server exited with {process.returncode}:\n"
                        f"{Path(log_path).read_text()[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server not healthy after {_STARTUP_SECONDS:.0f}s:\n"
                        f"{Path(log_path).read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # our own session: server + workers
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)


# A module that defines ``raw_log`` (a raw synthetic purchase log) gets these two for free.
@pytest.fixture(scope="module")
def log(raw_log: pd.DataFrame) -> pd.DataFrame:
    """The module's raw log in canonical form."""
    return canonicalize(raw_log).log


@pytest.fixture(scope="module")
def data_path(tmp_path_factory: pytest.TempPathFactory, raw_log: pd.DataFrame) -> Path:
    """The module's raw log written to Parquet, as a user would hand it to the CLI."""
    path = tmp_path_factory.mktemp("data") / "log.parquet"
    raw_log.to_parquet(path)
    return path


# ---- isolated virtualenvs for the deployable artifacts ------------------------------------

_VENVS: dict[tuple[str, ...], Path] = {}


@pytest.fixture(scope="session")
def isolated_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """Build a virtualenv from exactly one artifact's requirements file; its python's path.

    Nothing else goes in: no retain, no pip, ``--no-deps`` (so an incomplete list fails at
    import instead of being completed by pip), then ``pip check``. Artifacts whose lists
    are equal (the bento's and the MLflow model's are, by design) share one environment.
    Packages come from the index pip is configured with; ``--no-compile`` skips writing
    bytecode for ~120 packages (about half of the install time here).
    """

    def build(requirements: Path) -> Path:
        lines = tuple(
            sorted(
                {
                    line.strip()
                    for line in requirements.read_text(encoding="utf-8").splitlines()
                    if line.strip() and not line.startswith("#")
                }
            )
        )
        if lines in _VENVS:
            return _VENVS[lines]
        root = tmp_path_factory.mktemp("venv")
        listed = root / "requirements.txt"
        listed.write_text("\n".join(lines) + "\n", encoding="utf-8")
        venv = root / "env"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = venv / "bin" / "python"
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
        installed = subprocess.run(
            [*pip, "install", "-q", "--no-compile", "--no-deps", "-r", str(listed)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert installed.returncode == 0, installed.stderr[-3000:]
        checked = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        print(f"isolated venv: {len(lines)} packages in {time.monotonic() - started:.1f}s")
        _VENVS[lines] = python
        return python

    return build


def isolated_env(bentoml_home: Path | None = None) -> dict[str, str]:
    """The environment of a process that must not see the checkout: no PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "RETAIN_", "MLFLOW_", "BENTOML_", "VIRTUAL_ENV"))
    }
    env.update({"BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"})
    if bentoml_home is not None:
        env["BENTOML_HOME"] = str(bentoml_home)
    return env


@dataclass(frozen=True)
class RegisteredModel:
    """A model trained by ``train_and_register`` into a sqlite store, as ``retain train`` does."""

    tracking_uri: str
    model_uri: str
    version: str
    artifact: Path
    raw_log: pd.DataFrame


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModel:
    """The default model configuration (BTYD features on), with few boosting rounds."""
    from features.synthetic.synth import generate_purchase_log
    from serving.lifecycle_wiring import SERVING_PARTS
    from training.lifecycle import train_and_register

    root = tmp_path_factory.mktemp("registered")
    raw = generate_purchase_log(400, seed=3, start="2023-01-01", end="2024-06-30").log
    data = root / "log.parquet"
    raw.to_parquet(data)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    outcome = train_and_register(
        data,
        "2024-03-01",
        60,
        serving=SERVING_PARTS,
        tracking_uri=tracking_uri,
        models_params={"n_snapshots": 2, "num_boost_round": 12, "early_stopping_rounds": 4},
        artifact_out=root / "artifact",
    )
    assert outcome.version is not None and outcome.artifact_dir is not None
    return RegisteredModel(
        tracking_uri=tracking_uri,
        model_uri=f"models:/{outcome.registered_model}/{outcome.version}",
        version=outcome.version,
        artifact=outcome.artifact_dir,
        raw_log=raw,
    )
