"""``retain evaluate`` through the root app: figures, plots and readable input errors."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.log.purchase_log import canonicalize
from features.synthetic.synth import generate_purchase_log
from serving.cli import app
from training.dataset.labels import build_labels
from training.evaluation.backtest_result import METHODS, METRIC_KEYS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
AS_OF = "2024-07-01"
# keep the model light so the whole command runs in a few seconds
FAST_ARGS = [
    "--model-param",
    "use_baselines=false",
    "--model-param",
    "num_threads=1",
    "--baseline-penalizer",
    "0.001",
]

runner = CliRunner()


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return generate_purchase_log(300, seed=11, start="2022-01-01", end="2024-12-31").log


@pytest.fixture(scope="module")
def export_csv(raw_log: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic log as a shop export would name its columns."""
    path = tmp_path_factory.mktemp("data") / "orders.csv"
    raw_log.rename(columns={"customer_id": "CustomerID", "timestamp": "InvoiceDate"}).to_csv(
        path, index=False
    )
    return path


MAP_ARGS = ["--map", "customer_id=CustomerID", "--map", "timestamp=InvoiceDate"]


@pytest.mark.slow
def test_evaluate_prints_table_and_writes_json_and_plots(
    export_csv: Path, raw_log: pd.DataFrame, tmp_path: Path
) -> None:
    out_json = tmp_path / "figures" / "backtest.json"
    plots = tmp_path / "plots"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(export_csv),
            "--as-of",
            AS_OF,
            "--horizon",
            "90",
            *MAP_ARGS,
            "--json",
            str(out_json),
            "--plots",
            str(plots),
            *FAST_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "churn_auc" in result.stdout and "BG/NBD" in result.stdout

    data = json.loads(out_json.read_text())
    assert data["methods"] == list(METHODS)
    assert set(data["metrics"]) == set(METHODS)
    for values in data["metrics"].values():
        assert list(values) == list(METRIC_KEYS)
    assert data["metrics"]["recency"]["timing_mae_days"] is None
    assert data["horizon_days"] == 90
    expected = build_labels(canonicalize(raw_log).log, AS_OF, 90)
    assert data["n_customers"] == len(expected)
    assert data["churn_rate"] == pytest.approx(expected["churn"].mean())

    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == ["calibration.png", "cumulative_gains.png", "purchases_by_frequency.png"]
    for name in pngs:
        raw = (plots / name).read_bytes()
        assert raw.startswith(PNG_MAGIC)
        image = matplotlib.image.imread(plots / name)
        assert image.shape[0] > 100 and image.shape[1] > 100


def test_missing_column_is_a_readable_error(raw_log: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "no_amount.csv"
    raw_log.drop(columns=["amount"]).to_csv(path, index=False)
    result = runner.invoke(app, ["evaluate", "--data", str(path), "--as-of", AS_OF])
    assert result.exit_code == 2
    assert "amount" in result.stderr
    assert "Traceback" not in result.output


def test_bad_value_names_the_column(raw_log: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "bad_amount.csv"
    bad = raw_log.astype({"amount": "str"})
    bad.loc[3, "amount"] = "twelve"
    bad.to_csv(path, index=False)
    result = runner.invoke(app, ["evaluate", "--data", str(path), "--as-of", AS_OF, "--strict"])
    assert result.exit_code == 2
    assert "amount" in result.stderr and "twelve" in result.stderr
    assert "Traceback" not in result.output


def test_log_not_covering_the_window_exits_2(export_csv: Path, raw_log: pd.DataFrame) -> None:
    result = runner.invoke(
        app, ["evaluate", "--data", str(export_csv), "--as-of", "2024-12-01", *MAP_ARGS]
    )
    assert result.exit_code == 2
    last = raw_log["timestamp"].max()
    assert str(last.date()) in result.stderr and "needs rows up to" in result.stderr


def test_bad_date_and_unknown_model_param_exit_2(export_csv: Path) -> None:
    result = runner.invoke(
        app, ["evaluate", "--data", str(export_csv), "--as-of", "not-a-date", *MAP_ARGS]
    )
    assert result.exit_code == 2
    assert "not-a-date" in result.stderr
    result = runner.invoke(
        app,
        ["evaluate", "--data", str(export_csv), "--as-of", AS_OF, "--model-param", "depth=3"],
    )
    assert result.exit_code == 2
    assert "depth" in result.output


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["evaluate", "--data", str(tmp_path / "nope.csv"), "--as-of", AS_OF]
    )
    assert result.exit_code == 2
    assert "nope.csv" in result.stderr


def test_cdnow_files_are_detected_by_name(tmp_path: Path) -> None:
    # a CDNOW_master-style file: whitespace separated, YYYYMMDD dates, ends 1997-03-10
    path = tmp_path / "CDNOW_master.txt"
    path.write_text(
        " customer_id  date number_of_cds  dollar_value\n"
        " 00001 19970101  1   11.77\n"
        " 00002 19970112  1   12.00\n"
        " 00002 19970310  2   24.00\n"
    )
    result = runner.invoke(app, ["evaluate", "--data", str(path), "--as-of", "1997-02-01"])
    assert result.exit_code == 2
    # read as CDNOW (the table reader rejects .txt): the error is about the short log
    assert "1997-03-10" in result.stderr and "needs rows up to 1997-05-01" in result.stderr


@pytest.mark.parametrize("option", ["--config", "-c", "--log-config"])
def test_config_file_is_read_by_the_one_loader(
    export_csv: Path, tmp_path: Path, option: str
) -> None:
    """--config (TOML here; --log-config is its old, hidden name) maps the export's columns:
    the run gets past reading the log and stops only at the too-short window."""
    config = tmp_path / "retain.toml"
    config.write_text('[log]\ncolumns = {customer_id = "CustomerID", timestamp = "InvoiceDate"}\n')
    args = ["evaluate", "--data", str(export_csv), "--as-of", "2024-12-01"]
    result = runner.invoke(app, [*args, option, str(config)])
    assert result.exit_code == 2
    assert "needs rows up to" in result.stderr
    config.write_text("[log]\ntimezon = 'UTC'\n")
    bad = runner.invoke(app, [*args, option, str(config)])
    assert bad.exit_code == 2
    assert "unknown key(s) ['timezon']" in bad.stderr
    assert "Traceback" not in bad.output


def test_config_is_hidden_under_its_old_name() -> None:
    result = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert "--config" in result.output
    assert "--log-config" not in result.output


@pytest.mark.slow
def test_degenerate_fits_and_dropped_snapshots_are_reported(tmp_path: Path) -> None:
    """A log without dropout collapses BG/NBD and Pareto/NBD; a 15-month log cannot fill
    twelve monthly snapshots: both are said in the output and the JSON, with why."""
    from tests.training.conftest import no_dropout_log

    log = no_dropout_log(500, seed=0)
    data = tmp_path / "nodrop.csv"
    log.to_csv(data, index=False)
    out_json = tmp_path / "bt.json"
    args = ["--model-param", "num_threads=1", "--model-param", "num_boost_round=20"]
    result = runner.invoke(
        app,
        ["evaluate", "--data", str(data), "--as-of", "2024-01-01", "--json", str(out_json), *args],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "degenerate BG/NBD fit at the cutoff: a = " in text
    assert "degenerate Pareto/NBD fit at the cutoff: s = " in text
    assert "no-dropout collapse" in text
    assert "training snapshots (H = 90 d): 9 of 12 used" in text
    assert "3 dropped (2022-11-07, 2022-12-07, 2023-01-06)" in text
    assert "too little history" in text
    assert "pnbd_p_alive dropped" in text  # the feature of a collapsed fit is dropped
    figures = json.loads(out_json.read_text())
    assert set(figures["degenerate_fits"]) == {"bgnbd", "paretonbd"}
    snapshots = [s for s in figures["training_snapshots"] if not s.get("scoring")]
    # the scoring cutoff's own BTYD fit (its outputs are model inputs) collapsed too
    scoring = [s for s in figures["training_snapshots"] if s.get("scoring")]
    assert scoring and "pnbd" in scoring[0]["degenerate_baselines"]
    used = [s for s in snapshots if s["horizon_days"] == 90 and s["used"]]
    dropped = [s for s in snapshots if s["horizon_days"] == 90 and not s["used"]]
    assert len(used) == 9 and len(dropped) == 3
    assert all("pnbd" in s["degenerate_baselines"] for s in used)
    assert all(s["dropped_because"] for s in dropped)
    # the 365-day spend model needs snapshots a 15-month log cannot label: all dropped
    assert [s["used"] for s in snapshots if s["horizon_days"] == 365] == [False] * 3
    for values in figures["metrics"].values():
        assert "spend_aggregate_error" in values
    assert figures["metrics"]["bgnbd"]["spend_aggregate_error"] is not None
