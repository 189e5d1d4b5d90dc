"""The ``retain`` command run as a user runs it: ``python -m serving.cli ARGS`` in a directory.

One helper for the suites that drive the CLI as a subprocess (exit codes, stderr lines,
files written into ``cwd``): this checkout first on ``PYTHONPATH``, telemetry off, the
rest of this process's environment as is unless ``env`` changes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
