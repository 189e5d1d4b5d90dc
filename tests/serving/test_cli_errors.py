"""The CLI's one error layer (``serving.cli_errors``), run as users run it: ``retain ...``.

Bad input is one ``error:`` line on stderr and exit code 2; ``--debug`` adds the traceback.
Each case here printed a traceback (exit 1) before the layer existed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from features.synthetic.synth import generate_purchase_log
from tests.retain_cli import retain


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a run that must exit 2 without a traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("logs")
    raw = generate_purchase_log(150, seed=3, start="2023-01-01", end="2024-06-30").log
    text = raw.astype({"amount": "str"})
    paths = {"good": root / "good.csv", "header": root / "header.csv", "amount": root / "bad.csv"}
    raw.to_csv(paths["good"], index=False)
    raw.iloc[:0].to_csv(paths["header"], index=False)
    text.loc[7, "amount"] = "12,50"
    text.to_csv(paths["amount"], index=False)
    return paths


@pytest.mark.parametrize(
    ("case", "as_of", "horizon", "expected"),
    [
        ("amount", "2024-03-01", "30", "column 'amount': 1 non-numeric"),
        ("good", "2024-06-01", "90", "the log ends at 2024-06-"),
        ("header", "2024-03-01", "30", "the purchase log is empty"),
    ],
)
@pytest.mark.slow
def test_train_on_bad_input_is_one_line(
    tmp_path: Path, logs: dict[str, Path], case: str, as_of: str, horizon: str, expected: str
) -> None:
    """Bad amount, horizon past the log's end, header-only file: evaluate's own checks."""
    done = retain(
        "train",
        "--data",
        str(logs[case]),
        "--as-of",
        as_of,
        "--horizon",
        horizon,
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        cwd=tmp_path,
    )
    assert expected in error_line(done)
    if case == "amount":
        assert "data rows 8 ('12,50')" in error_line(done)
    assert not (tmp_path / "mlartifacts").exists()  # stopped before any MLflow work
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_score_as_of_past_the_range_and_debug(tmp_path: Path, logs: dict[str, Path]) -> None:
    args = ["score", "--data", str(logs["good"]), "--as-of", "3000-01-01", "--out", "out"]
    done = retain(*args, cwd=tmp_path)
    line = error_line(done)
    assert line == (
        "error: --as-of '3000-01-01' is outside the supported range [1900-01-01, 2200-01-01) UTC"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()
    debug = retain("--debug", *args, cwd=tmp_path)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(line)


def test_kpis_json_on_a_far_future_log_is_one_line(tmp_path: Path, logs: dict[str, Path]) -> None:
    raw = pd.read_csv(logs["good"], dtype=str)
    raw.loc[0, "timestamp"] = "2262-05-01T00:00:00Z"
    path = tmp_path / "future.csv"
    raw.to_csv(path, index=False)
    done = retain("kpis", "--data", str(path), "--format", "json", cwd=tmp_path)
    assert "outside [1900-01-01, 2200-01-01) UTC at data rows 1" in error_line(done)
    assert done.stdout == ""
