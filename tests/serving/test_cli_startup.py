"""``retain --help`` loads no data library: the command list needs none (pandas alone took
about a second of the 1.5 s ``--help`` took before; ``benchmarks/cli_startup.py`` times it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_help_imports_no_pandas_numpy_or_pyarrow(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.argv = ['retain', '--help']; import serving.cli; "
        "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'mlflow') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    shown = subprocess.run(
        [sys.executable, "-m", "serving.cli", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    for command in ("train", "promote", "score", "lift", "bento", "kpis"):
        assert command in shown.stdout
