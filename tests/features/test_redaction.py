"""URI passwords are masked in messages, in library log records and in uncaught tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.redaction import redact

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:secret@host:5000/api", "http://alice:***@host:5000/api"),
        ("postgresql://user:pw@db/mlflow", "postgresql://user:***@db/mlflow"),
        ("mysql+pymysql://u:p%40ss@h:3306/x", "mysql+pymysql://u:***@h:3306/x"),
        ("https://:token@host", "https://:***@host"),
        ("https://ghp_token123@host/x", "https://***@host/x"),
        (
            "failed: 'http://a:b@h1' then \"http://c:d@h2\"",
            "failed: 'http://a:***@h1' then \"http://c:***@h2\"",
        ),
        # secrets in the query string: the value goes, the parameter name stays
        ("http://host:5000/?token=s3cret", "http://host:5000/?token=***"),
        ("https://h/api?x=1&access_token=abc&y=2", "https://h/api?x=1&access_token=***&y=2"),
        ("https://h/?Password=pw#frag", "https://h/?Password=***#frag"),
        (
            "s3://b/k?X-Amz-Signature=f00&X-Amz-Credential=AK",
            "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        ("'http://u:p@h/?api_key=k1'", "'http://u:***@h/?api_key=***'"),
    ],
)
def test_redact_masks_only_the_password(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://host:5000/path",
        "sqlite:////tmp/mlflow.db",
        "user@example.com",
        "a:b@c",
        "http://host/?monkey=1&tokens_left=3&page=2",
    ],
)
def test_redact_leaves_text_without_credentials_alone(text: str) -> None:
    assert redact(text) == text


_PROGRAM = """
import logging
from serving.cli import configure_runtime
configure_runtime()
uri = "http://alice:secret@mlflow.internal:5000"
logging.getLogger("urllib3.connectionpool").warning("Retrying %s/api/2.0", uri)
try:
    raise ConnectionError(f"API request to {uri}/api/2.0/mlflow failed")
except ConnectionError:
    logging.getLogger("mlflow").exception("request failed")
raise RuntimeError(f"cannot open {uri}")
"""


def test_cli_runtime_masks_library_logs_and_uncaught_tracebacks(tmp_path: Path) -> None:
    env = {**os.environ}
    env.setdefault("PYTHONPATH", str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    err = done.stderr
    assert "secret" not in err
    # the records and the traceback are all there, host and user visible
    assert "WARNING urllib3.connectionpool: Retrying http://alice:***@mlflow.internal:5000" in err
    assert "ERROR mlflow: request failed" in err
    assert "ConnectionError: API request to http://alice:***@mlflow.internal:5000" in err
    assert "RuntimeError: cannot open http://alice:***@mlflow.internal:5000" in err


def test_cli_error_masks_a_token_in_the_tracking_uri_query(tmp_path: Path) -> None:
    """The one-line error for an unreachable store names the host, never the token."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # nothing listens once closed: refused at once
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    env.setdefault("PYTHONPATH", str(REPO_ROOT))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "models",
            "--tracking-uri",
            f"http://127.0.0.1:{port}/?token=s3cret-value",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "s3cret-value" not in done.stdout + done.stderr
    assert f"127.0.0.1:{port}/?token=***" in done.stderr
