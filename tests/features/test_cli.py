"""The feature-side commands through the real root app: synth -> kpis/features/segments."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.catalog import FEATURE_COLUMNS
from features.retention.segments import SEGMENTS
from serving.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "log.csv"
    result = runner.invoke(app, ["synth", "--customers", "300", "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("command", ["synth", "kpis", "features", "segments"])
def test_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--data" in result.output or "--customers" in result.output


def test_synth_is_deterministic_and_atomic(tmp_path: Path) -> None:
    paths = []
    for name in ("one", "two"):
        out = tmp_path / name / "log.parquet"
        truth = tmp_path / name / "truth.csv"
        args = ["synth", "-n", "200", "--seed", "9", "--out", str(out), "--truth", str(truth)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        paths.append((out, truth))
        # Only the outputs remain: no temporary files next to them.
        assert sorted(p.name for p in out.parent.iterdir()) == ["log.parquet", "truth.csv"]
    (log1, truth1), (log2, truth2) = paths
    pd.testing.assert_frame_equal(pd.read_parquet(log1), pd.read_parquet(log2))
    assert truth1.read_bytes() == truth2.read_bytes()
    truth = pd.read_csv(truth1)
    assert len(truth) == 200
    assert {"alive_at_end", "dropout_time", "sale_only", "first_purchase"} <= set(truth.columns)


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    from features.atomic import write_atomic

    target = tmp_path / "out.json"
    target.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_synth_rejects_unknown_suffix(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "-n", "10", "--out", str(tmp_path / "log.xlsx")])
    assert result.exit_code == 2
    assert "log.xlsx" in result.output
    assert not list(tmp_path.iterdir())


def test_kpis_json_matches_the_file(synth_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "kpis.json"
    result = runner.invoke(
        app, ["kpis", "--data", str(synth_csv), "--format", "json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    raw = pd.read_csv(synth_csv)
    bought = raw.loc[raw["amount"] > 0]
    # The default period spans the whole log, so every customer and order is in it.
    assert data["metrics"]["customers"] == raw["customer_id"].nunique()
    assert data["metrics"]["orders"] == bought["order_id"].nunique()
    assert data["metrics"]["returns"] == int((raw["amount"] < 0).sum())
    assert data["metrics"]["revenue"] == pytest.approx(bought["amount"].sum())
    per_customer = bought.groupby("customer_id")["order_id"].nunique()
    assert data["metrics"]["repeat_rate"] == pytest.approx((per_customer >= 2).mean())
    first_day = pd.Timestamp(raw["timestamp"].min()).floor("D")
    assert pd.Timestamp(data["start"]) == first_day
    assert set(data["monthly"]) >= {"2022-01", "2024-12"}


def test_kpis_table_csv_and_period(synth_csv: Path) -> None:
    table = runner.invoke(app, ["kpis", "--data", str(synth_csv)])
    assert table.exit_code == 0, table.output
    assert "repeat_rate" in table.output
    assert "Cohort retention" in table.output
    csv = runner.invoke(
        app,
        ["kpis", "-d", str(synth_csv), "--from", "2023-01-01", "--to", "2023-02-01", "-f", "csv"],
    )
    assert csv.exit_code == 0, csv.output
    lines = csv.stdout.splitlines()
    assert lines[0] == "metric,value,description"
    raw = pd.read_csv(synth_csv, parse_dates=["timestamp"])
    january = raw.loc[
        (raw["amount"] > 0)
        & (raw["timestamp"] >= pd.Timestamp("2023-01-01", tz="UTC"))
        & (raw["timestamp"] < pd.Timestamp("2023-02-01", tz="UTC"))
    ]
    orders_line = next(line for line in lines if line.startswith("orders,"))
    assert orders_line.split(",")[1] == str(january["order_id"].nunique())


def test_kpis_bad_column_names_it(synth_csv: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    pd.read_csv(synth_csv).rename(columns={"customer_id": "client"}).to_csv(bad, index=False)
    result = runner.invoke(app, ["kpis", "--data", str(bad)])
    assert result.exit_code == 2
    assert "customer_id" in result.output
    # The mapping fixes it.
    fixed = runner.invoke(
        app, ["kpis", "--data", str(bad), "--map", "customer_id=client", "-f", "json"]
    )
    assert fixed.exit_code == 0, fixed.output


def test_kpis_bad_mapping_and_missing_file(synth_csv: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["kpis", "--data", str(synth_csv), "--map", "customer_id=CustomerID"]
    )
    assert result.exit_code == 2
    assert "CustomerID" in result.output
    missing = runner.invoke(app, ["kpis", "--data", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2
    assert "nope.csv" in missing.output


def test_kpis_config_file(synth_csv: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(synth_csv).rename(columns={"timestamp": "InvoiceDate"}).to_csv(renamed, index=False)
    config = tmp_path / "retain.yaml"
    config.write_text("log:\n  columns:\n    timestamp: InvoiceDate\n")
    result = runner.invoke(app, ["kpis", "-d", str(renamed), "-c", str(config), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["customers"] > 0
    config.write_text("log:\n  colums: {}\n")
    bad = runner.invoke(app, ["kpis", "-d", str(renamed), "-c", str(config)])
    assert bad.exit_code == 2
    assert "colums" in bad.output
    # the same file in TOML, read by the same loader as every other command
    toml = tmp_path / "retain.toml"
    toml.write_text('[log]\ncolumns = {timestamp = "InvoiceDate"}\n')
    for command in (["kpis", "-f", "json"], ["segments", "--as-of", "2024-01-01"]):
        result = runner.invoke(app, [*command, "-d", str(renamed), "-c", str(toml)])
        assert result.exit_code == 0, result.output


def test_features_writes_the_catalog_columns(synth_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    result = runner.invoke(
        app, ["features", "--data", str(synth_csv), "--as-of", "2024-01-01", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert list(table.columns) == ["customer_id", *FEATURE_COLUMNS]
    raw = pd.read_csv(synth_csv, parse_dates=["timestamp"])
    before = raw.loc[
        (raw["amount"] > 0) & (raw["timestamp"] < pd.Timestamp("2024-01-01", tz="UTC"))
    ]
    assert len(table) == before["customer_id"].nunique()


def test_features_describe_alone() -> None:
    result = runner.invoke(app, ["features", "--describe"])
    assert result.exit_code == 0
    assert "recency_gap_ratio" in result.output
    incomplete = runner.invoke(app, ["features", "--as-of", "2024-01-01"])
    assert incomplete.exit_code == 2
    assert "--data" in incomplete.output


def test_segments_prints_sizes_and_writes(synth_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "segments.csv"
    result = runner.invoke(
        app, ["segments", "--data", str(synth_csv), "--as-of", "2024-06-01", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for name in SEGMENTS:
        assert name in result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["customer_id", "segment"]
    assert set(frame["segment"]) <= set(SEGMENTS)
    assert frame["customer_id"].is_unique


@pytest.mark.parametrize("command", ["kpis", "segments", "features"])
def test_strict_fails_on_missing_customer_ids(
    synth_csv: Path, tmp_path: Path, command: str
) -> None:
    raw = pd.read_csv(synth_csv, dtype={"customer_id": "str"})
    raw.loc[[3, 7], "customer_id"] = ""
    holed = tmp_path / "holed.csv"
    raw.to_csv(holed, index=False)
    extra = {"kpis": [], "segments": ["--as-of", "2024-06-01"]}.get(
        command, ["--as-of", "2024-06-01", "--out", str(tmp_path / "f.parquet")]
    )
    lenient = runner.invoke(app, [command, "--data", str(holed), *extra])
    assert lenient.exit_code == 0, lenient.output
    assert "customer" in lenient.output.lower()  # the drop warning names the field
    strict = runner.invoke(app, [command, "--data", str(holed), "--strict", *extra])
    assert strict.exit_code == 2
    assert "customer_id" in strict.output
    assert "4" in strict.output and "8" in strict.output  # 1-based data rows 4 and 8


# --- issue 14: one line and exit 2 for bad input, load reports, strict JSON -------------------


def _one_error_line(output: str) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _with_row(synth_csv: Path, tmp_path: Path, column: str, value: str) -> Path:
    raw = pd.read_csv(synth_csv, dtype=str, keep_default_na=False)
    raw.loc[3, column] = value
    path = tmp_path / f"bad_{column}.csv"
    raw.to_csv(path, index=False)
    return path


def test_kpis_on_timestamps_past_2262_is_one_line(synth_csv: Path, tmp_path: Path) -> None:
    path = _with_row(synth_csv, tmp_path, "timestamp", "2263-01-01T00:00:00Z")
    result = runner.invoke(app, ["kpis", "--data", str(path)])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert "'timestamp'" in line and "data rows 4 ('2263-01-01T00:00:00Z')" in line


def test_kpis_json_rejects_huge_amounts_and_never_writes_infinity(
    synth_csv: Path, tmp_path: Path
) -> None:
    path = _with_row(synth_csv, tmp_path, "amount", "1e308")
    result = runner.invoke(app, ["kpis", "--data", str(path), "--format", "json"])
    assert result.exit_code == 2
    assert "data rows 4 (1e+308)" in _one_error_line(result.output)
    # a period without orders has NaN averages: JSON gets null, strictly parseable
    empty = runner.invoke(
        app,
        ["kpis", "-d", str(synth_csv), "--from", "2030-01-01", "--to", "2030-02-01", "-f", "json"],
    )
    assert empty.exit_code == 0, empty.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"JSON holds {constant}")

    data = json.loads(empty.stdout, parse_constant=refuse)
    assert data["metrics"]["average_order_value"] is None


def test_features_as_of_past_the_supported_range_is_one_line(
    synth_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "f.parquet"
    result = runner.invoke(
        app, ["features", "--data", str(synth_csv), "--as-of", "3000-01-01", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "'3000-01-01' is outside the supported range" in _one_error_line(result.output)
    assert not out.exists()
    debug = runner.invoke(
        app,
        ["--debug", "features", "-d", str(synth_csv), "--as-of", "3000-01-01", "-o", str(out)],
    )
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.output
    assert "features.errors.InputError" in debug.output


def test_features_and_kpis_print_the_load_report(synth_csv: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(synth_csv)
    stamps = pd.to_datetime(raw["timestamp"], utc=True)
    as_of = "2024-01-01"
    result = runner.invoke(
        app,
        ["features", "-d", str(synth_csv), "--as-of", as_of, "-o", str(tmp_path / "f.parquet")],
    )
    assert result.exit_code == 0, result.output
    after = int((stamps >= pd.Timestamp(as_of, tz="UTC")).sum())
    assert 0 < after < len(raw)
    assert f"  rows read:  {len(raw):,}" in result.stderr
    assert f"  rows kept:  {len(raw):,}" in result.stderr
    assert f"  kept, not used (at or after {as_of}): {after:,}" in result.stderr

    dirty = tmp_path / "dirty.csv"
    pd.concat([raw, raw.iloc[[0]]]).to_csv(dirty, index=False)
    kpis = runner.invoke(app, ["kpis", "-d", str(dirty), "--to", as_of, "-f", "json"])
    assert kpis.exit_code == 0, kpis.output
    assert f"  rows read:  {len(raw) + 1:,}" in kpis.stderr
    assert "  dropped (exact_duplicate): 1" in kpis.stderr
    assert f"  kept, not used (at or after {as_of}): {after:,}" in kpis.stderr
    json.loads(kpis.stdout)  # the report goes to stderr, stdout stays JSON


def test_a_bug_keeps_its_traceback(synth_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only user errors become one line: an unexpected exception is not dressed up as one."""
    import features.retention.kpis

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(features.retention.kpis, "compute_kpis", broken)
    result = runner.invoke(app, ["kpis", "--data", str(synth_csv)])
    assert result.exit_code == 1
    assert isinstance(result.exception, ZeroDivisionError)
    assert "error:" not in result.output
