"""The ``retain`` command run as a user runs it: ``python -m serving.cli ARGS`` in a directory.

One helper for the suites that drive the CLI as a subprocess (exit codes, stderr lines,
files written into ``cwd``): this checkout first on ``PYTHONPATH``, telemetry off, the
rest of this process's environment as is unless ``env`` changes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def retain(
    *args: str,
    cwd: Path,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run ``retain ARGS`` in ``cwd``; ``env`` entries override this process's environment,
    a ``None`` value removes the variable (``{"MLFLOW_TRACKING_URI": None}``: MLflow's
    default store, ``./mlflow.db`` in ``cwd``)."""
    merged: dict[str, str | None] = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BENTOML_DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "serving.cli", *args],
        cwd=cwd,
        env={key: value for key, value in merged.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for_pause(proc: subprocess.Popen[str], timeout: float = 300) -> list[str]:
    """Read a ``retain`` process's stderr until it reports ``paused at`` (the fault tests'
    ``RETAIN_TEST_PAUSE_AT`` hook), and return the lines seen; fail if it ends first. A
    watchdog kills the process after ``timeout`` seconds so a hang fails the test."""
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("paused at"):
                return seen
        raise AssertionError(f"exited with {proc.wait()} before pausing: {''.join(seen)[-2000:]}")
    finally:
        watchdog.cancel()
