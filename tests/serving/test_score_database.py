"""``retain score --out postgresql://... --out-table``: the Parquet output's rows, published into
a real PostgreSQL table atomically, one run at a time, never over a table retain did not make."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.sources.database import parse_url
from features.sources.database_log import DatabaseLog
from serving.batch.commands import score_command
from serving.batch.publish import PAUSE_ENV, read_scores
from serving.batch.table_output import OWNERSHIP_TABLE, read_scores_table
from serving.cli import app
from tests.postgres_server import execute, load_frame
from tests.retain_cli import wait_for_pause
from tests.serving.test_batch import HORIZON, make_artifact, small_raw_log

pytestmark = [pytest.mark.server, pytest.mark.slow]  # real PostgreSQL, retain score runs

REPO = Path(__file__).resolve().parents[2]
AS_OF = "2024-05-25"
LATER = "2024-06-10"
runner = CliRunner()


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return small_raw_log(300, seed=6)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, log: pd.DataFrame) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact") / "retain", log)


@pytest.fixture(scope="module")
def db(postgres_db: str, raw_log: pd.DataFrame) -> str:
    """The module's database with the raw log as table ``orders``."""
    load_frame(postgres_db, "orders", raw_log)
    return postgres_db


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.sort_values("customer_id", ignore_index=True)
    for column in out.columns:  # Parquet keeps ns where PostgreSQL keeps us
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.as_unit("us")
    return out


def _table(url: str, table: str = "scores") -> pd.DataFrame:
    return read_scores_table(parse_url(url), table)[0]


def _score_process(
    db: str, artifact: Path, as_of: str, *extra: str, table: str = "scores", pause: str = ""
) -> subprocess.Popen[str]:
    """``retain score`` from the table into ``table`` as its own process (PAUSE_ENV hook)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), PAUSE_ENV: pause}
    args = ["score", "--data", db, "--table", "orders", "--as-of", as_of, "--out", db]
    args += ["--out-table", table, "--model-uri", str(artifact), "--chunk-customers", "100"]
    return subprocess.Popen(
        [sys.executable, "-m", "serving.cli", *args, *extra],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


# ---- the rows ---------------------------------------------------------------------------


def test_scores_in_the_table_equal_the_parquet_output_row_for_row(
    tmp_path: Path, db: str, data_path: Path, artifact: Path
) -> None:
    source = DatabaseLog(parse_url(db), table="orders")
    summary = score_command(
        source, AS_OF, db, out_table="scores", model_uri=str(artifact), progress=False,
        campaign="may", chunk_customers=100,
    )  # fmt: skip
    parquet = tmp_path / "scores"
    score_command(
        data_path, AS_OF, parquet, model_uri=str(artifact), progress=False, campaign="may",
        chunk_customers=100,
    )  # fmt: skip
    expected = read_scores(parquet)
    got = _table(db)
    assert list(got.columns) == list(expected.columns)  # offers, holdout, reasons, run id...
    pd.testing.assert_frame_equal(_sorted(got), _sorted(expected), check_dtype=False)
    assert summary.customers_scored == len(got) > 0
    assert summary.out == f"{db} table 'scores'"
    owned = execute(db, f"SELECT table_name, run_id, state FROM {OWNERSHIP_TABLE}")
    assert owned == [("scores", summary.run_id, "published")]

    # a rerun of the same inputs gives the same rows (and leaves no staging table behind)
    again = score_command(
        source, AS_OF, db, out_table="scores", model_uri=str(artifact), progress=False,
        campaign="may", chunk_customers=100,
    )  # fmt: skip
    assert again.run_id == summary.run_id
    pd.testing.assert_frame_equal(_table(db), got)
    assert execute(db, "SELECT count(*) FROM pg_class WHERE relname LIKE 'scores\\_\\_%'") == [(0,)]


def test_lift_reads_the_assignments_back_from_the_table(
    tmp_path: Path, db: str, data_path: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parquet = tmp_path / "scores"
    score_command(
        data_path, AS_OF, parquet, model_uri=str(artifact), progress=False, campaign="may",
        chunk_customers=100,
    )  # fmt: skip
    score_command(
        DatabaseLog(parse_url(db), table="orders"), AS_OF, db, out_table="lift_scores",
        model_uri=str(artifact), progress=False, campaign="may", chunk_customers=100,
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    common = ["-d", db, "--table", "orders", "--json", "--no-mlflow", "--exclude-unobserved"]
    from_table = runner.invoke(
        app, ["lift", "-a", db, "--assignments-table", "lift_scores", *common]
    )
    from_dir = runner.invoke(app, ["lift", "-a", str(parquet), *common])
    assert from_table.exit_code == 0, from_table.output
    payload = json.loads(from_table.stdout.strip().splitlines()[-1])
    assert payload == json.loads(from_dir.stdout.strip().splitlines()[-1])
    assert payload["window_days"] == HORIZON  # the run summary came back with the rows
    assert {r["campaign"] for r in payload["results"]} == {"may"}
    missing = runner.invoke(app, ["lift", "-a", db, *common])
    assert missing.exit_code == 2 and "--assignments-table" in missing.stderr


# ---- publishing faults: real processes, a real server ---------------------------------


def test_sigkill_during_the_switch_leaves_the_old_table_whole_and_a_rerun_is_clean(
    db: str, artifact: Path
) -> None:
    first = _score_process(db, artifact, AS_OF, table="killed")
    assert _finish(first)[0] == 0
    before = _sorted(_table(db, "killed"))
    assert set(before["as_of"]) == {pd.Timestamp(AS_OF, tz="UTC")}

    killed = _score_process(db, artifact, LATER, table="killed", pause="scores:table-switch")
    wait_for_pause(killed)  # inside the switch transaction: old table dropped, new renamed
    killed.kill()  # SIGKILL: the transaction never commits
    assert killed.wait(timeout=60) == -signal.SIGKILL

    pd.testing.assert_frame_equal(_sorted(_table(db, "killed")), before)
    rerun = _score_process(db, artifact, LATER, table="killed")
    code, err = _finish(rerun)
    assert code == 0, err
    after = _table(db, "killed")
    assert set(after["as_of"]) == {pd.Timestamp(LATER, tz="UTC")}
    clean = _score_process(db, artifact, LATER, table="killed_clean")
    assert _finish(clean)[0] == 0
    pd.testing.assert_frame_equal(_sorted(after), _sorted(_table(db, "killed_clean")))
    leftovers = execute(db, "SELECT relname FROM pg_class WHERE relname LIKE 'killed\\_\\_%'")
    assert leftovers == []


def test_a_second_run_on_the_same_table_is_refused_naming_the_first(
    db: str, artifact: Path
) -> None:
    first = _score_process(db, artifact, AS_OF, table="busy", pause="scores:table-staged")
    wait_for_pause(first)
    second = _score_process(db, artifact, LATER, table="busy")
    code, err = _finish(second)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "is being published by another run: retain score " in err
    assert f"pid {first.pid}@" in err
    assert first.stdin is not None
    first.stdin.write("\n")
    first.stdin.flush()
    assert _finish(first)[0] == 0
    assert set(_table(db, "busy")["as_of"]) == {pd.Timestamp(AS_OF, tz="UTC")}


def test_a_dropped_connection_mid_read_is_a_clean_error_and_publishes_nothing(
    db: str, artifact: Path
) -> None:
    first = _score_process(db, artifact, AS_OF, table="dropped")
    assert _finish(first)[0] == 0
    before = _sorted(_table(db, "dropped"))
    slow = "SELECT * FROM orders UNION ALL SELECT o.* FROM orders o, pg_sleep(120)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["score", "--data", db, "--query", slow, "--as-of", LATER, "--out", db]
    args += ["--out-table", "dropped", "--model-uri", str(artifact)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    find = (
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
        "AND query LIKE '%pg_sleep(120)%' AND query NOT LIKE '%LIMIT%'"
    )
    deadline = time.monotonic() + 120
    while not (reading := execute(db, find)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the read never started"
        time.sleep(0.1)
    execute(db, f"SELECT pg_terminate_backend({reading[0][0]})")
    code, err = _finish(proc)
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: reading ") and "(query)" not in line, err
    assert "terminat" in line and "Traceback" not in err
    pd.testing.assert_frame_equal(_sorted(_table(db, "dropped")), before)


def test_a_table_retain_did_not_create_is_never_touched(db: str, artifact: Path) -> None:
    execute(
        db,
        "CREATE TABLE crm_scores (customer_id text, note text)",
        "INSERT INTO crm_scores VALUES ('c1', 'the CRM team wrote this')",
    )
    code, err = _finish(_score_process(db, artifact, AS_OF, table="crm_scores"))
    assert code == 2, err
    assert "'crm_scores'" in err and "was not created by retain" in err
    assert execute(db, "SELECT * FROM crm_scores") == [("c1", "the CRM team wrote this")]
    assert execute(db, "SELECT obj_description('crm_scores'::regclass)") == [(None,)]


def test_readers_keep_their_grants_across_runs(db: str, artifact: Path) -> None:
    assert _finish(_score_process(db, artifact, AS_OF, table="granted"))[0] == 0
    execute(
        db,
        "DROP ROLE IF EXISTS crm_reader",
        "CREATE ROLE crm_reader LOGIN",
        "GRANT SELECT ON granted TO crm_reader",
    )
    assert _finish(_score_process(db, artifact, LATER, table="granted"))[0] == 0
    reader = db.replace("://postgres@", "://crm_reader@")
    assert execute(reader, "SELECT DISTINCT as_of::date::text FROM granted") == [(LATER,)]


def test_bad_output_options_are_one_error_line(db: str, artifact: Path, tmp_path: Path) -> None:
    base = ["score", "--data", db, "--table", "orders", "--as-of", AS_OF]
    base += ["--model-uri", str(artifact)]
    cases = [
        (["--out", db], "give --out-table NAME"),
        (["--out", str(tmp_path / "dir"), "--out-table", "x"], "is a directory"),
        (["--out", db.replace("postgres@", "postgres:pw@"), "--out-table", "x"], "must not be"),
        (["--out", db, "--out-table", "x", "--resume"], "--resume applies to a directory"),
        (["--out", "sqlite:///x.db", "--out-table", "x"], "SQLite is read-only"),
    ]
    for extra, named in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert named in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert "pw@" not in result.output
