"""A real ``mlflow server`` for the serving tests: own sqlite store and artifact root in tmp."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from features.purchase_log import canonicalize

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
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
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
