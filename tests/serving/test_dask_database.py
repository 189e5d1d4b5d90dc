"""``retain score --data postgresql://... --dask``: each task reads its own customer range.

The reference is always the single-machine path reading the same table (and, for the
main table, the same rows from a Parquet file): same part bytes, on a real PostgreSQL and
a real cluster of separate processes. The main table's id column has an ICU collation and
mixed-case ids, so comparing ids in the column's own order would cut other chunks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.sources.database import parse_url
from features.sources.database_log import DatabaseLog
from serving.batch.chunks import Chunk
from serving.batch.database_ranges import ID_WHITESPACE
from serving.batch.publish import MANIFEST_NAME, PAUSE_ENV, SUMMARY_NAME, read_scores
from tests.dask_cluster import DaskCluster
from tests.postgres_server import execute, load_frame
from tests.retain_cli import wait_for_pause
from tests.serving.test_batch import AS_OF, make_artifact, sha256s, small_raw_log

pytestmark = [pytest.mark.server, pytest.mark.slow]  # real PostgreSQL and Dask processes

REPO = Path(__file__).resolve().parents[2]
CHUNK = 45  # 240 customers -> 6 parts
PASSWORD = "pw-Zq81-never-shown"
URL_ENV = "RETAIN_TEST_DASK_DB_URL"


def _mixed_case(ids: pd.Series) -> pd.Series:
    """Every other id upper-cased in front: ``C`` sorts before ``c`` byte-wise, not in ICU."""
    number = ids.str.extract(r"(\d+)$")[0].astype(int)
    return ids.where(number % 2 == 0, "C" + ids.str[1:])


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    raw = small_raw_log(240, seed=21)
    raw["customer_id"] = _mixed_case(raw["customer_id"])
    return raw


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, log: pd.DataFrame) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact") / "retain", log)


@pytest.fixture(scope="module")
def db(postgres_db: str, raw_log: pd.DataFrame) -> str:
    """Tables ``orders`` (ICU-collated ids), ``padded`` (ids with surrounding whitespace in
    some rows, one empty and one NULL id), ``numbered`` (bigint ids) and ``bad`` (one
    amount ``twelve``), in a database whose planner would scan even small tables in
    parallel."""
    load_frame(postgres_db, "orders", raw_log)
    execute(
        postgres_db, 'ALTER TABLE orders ALTER COLUMN customer_id TYPE text COLLATE "und-x-icu"'
    )
    padded = raw_log.copy()
    ids = padded["customer_id"].astype(object)
    ids.iloc[::7] = " " + ids.iloc[::7] + "\t"
    ids.iloc[3::11] = "\u3000" + ids.iloc[3::11]
    ids.iloc[5], ids.iloc[9] = "  ", None
    padded["customer_id"] = ids
    load_frame(postgres_db, "padded", padded)
    numbered = raw_log.copy()
    numbered["customer_id"] = numbered["customer_id"].str[4:].astype("int64") * 7
    load_frame(postgres_db, "numbered", numbered)
    bad = raw_log.copy()
    bad["amount"] = bad["amount"].astype(str)
    bad.loc[bad.index[40], "amount"] = "twelve"
    load_frame(postgres_db, "bad", bad)
    name = postgres_db.rsplit("/", 1)[1]
    for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0"):
        execute(postgres_db, f'ALTER DATABASE "{name}" SET {setting}')
    execute(postgres_db, f'ALTER DATABASE "{name}" SET min_parallel_table_scan_size = 0')
    return postgres_db


def _score(source: object, out: Path, artifact: Path, **kwargs: object) -> object:
    from serving.batch.commands import score_command

    return score_command(
        source,  # type: ignore[arg-type]
        AS_OF,
        out,
        model_uri=str(artifact),
        chunk_customers=CHUNK,
        progress=False,
        **kwargs,  # type: ignore[arg-type]
    )


def _table(db: str, name: str) -> DatabaseLog:
    return DatabaseLog(parse_url(db), table=name)


@pytest.fixture(scope="module")
def threads_orders(tmp_path_factory: pytest.TempPathFactory, db: str, artifact: Path) -> Path:
    """The single-machine run reading ``orders``: scores and features."""
    root = tmp_path_factory.mktemp("threads")
    _score(_table(db, "orders"), root / "scores", artifact, features_out=root / "features")
    return root


def test_the_whitespace_stripped_in_sql_is_what_arrow_strips() -> None:
    chars = [chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF]
    trimmed = pc.utf8_trim_whitespace(pa.array(chars)).to_pylist()
    assert "".join(c for c, t in zip(chars, trimmed, strict=True) if t == "") == ID_WHITESPACE


def test_cluster_ranges_equal_threads_from_the_table_and_the_parquet_file(
    tmp_path: Path,
    db: str,
    data_path: Path,
    artifact: Path,
    threads_orders: Path,
    dask_cluster: DaskCluster,
) -> None:
    summary = _score(
        _table(db, "orders"),
        tmp_path / "s",
        artifact,
        features_out=tmp_path / "f",
        dask_address=dask_cluster.address,
    )
    executor = summary.executor  # type: ignore[attr-defined]
    assert executor == f"dask {dask_cluster.address}, 6 customer range(s) of table 'orders'"
    assert len(sha256s(tmp_path / "s")) == 6
    assert sha256s(tmp_path / "s") == sha256s(threads_orders / "scores")
    assert sha256s(tmp_path / "f") == sha256s(threads_orders / "features")
    _score(data_path, tmp_path / "file", artifact)
    assert sha256s(tmp_path / "file") == sha256s(tmp_path / "s")
    ids = read_scores(tmp_path / "s")["customer_id"].tolist()
    assert ids == sorted(ids) and ids[0].startswith("C") and ids[-1].startswith("c")  # byte order


@pytest.mark.parametrize("table", ["padded", "numbered"])
def test_stripped_text_ids_and_integer_ids_cut_the_same_chunks(
    tmp_path: Path, db: str, artifact: Path, table: str, dask_cluster: DaskCluster
) -> None:
    threads = _score(_table(db, table), tmp_path / "t", artifact)
    ranged = _score(_table(db, table), tmp_path / "d", artifact, dask_address=dask_cluster.address)
    assert sha256s(tmp_path / "d") == sha256s(tmp_path / "t")
    assert len(sha256s(tmp_path / "d")) == 6
    for field in ("rows_in", "rows_kept", "dropped", "customers_in_log", "customers_scored"):
        assert getattr(ranged, field) == getattr(threads, field), field
    if table == "padded":
        assert ranged.dropped == {"missing_customer_id": 2}  # type: ignore[attr-defined]


# ---- the command as its own process: kill and resume, errors, secrets ------------------


def _env(db: str) -> dict[str, str]:
    with_password = db.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    assert PASSWORD in with_password  # trust auth: the server accepts any password
    return {**os.environ, "PYTHONPATH": str(REPO), URL_ENV: with_password}


def _retain_score(
    db: str, table: str, artifact: Path, out: Path, *extra: str, pause: str = ""
) -> subprocess.Popen[str]:
    args = ["score", "--url-env", URL_ENV, "--table", table, "--as-of", AS_OF]
    args += ["--out", str(out), "--model-uri", str(artifact), "--chunk-customers", str(CHUNK)]
    return subprocess.Popen(
        [sys.executable, "-m", "serving.cli", *args, *extra],
        env={**_env(db), PAUSE_ENV: pause},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def _message_lines(stderr: str) -> list[str]:
    """stderr without the progress bar (drawn on stderr even when it is not a terminal)."""
    return [line for line in stderr.splitlines() if line.strip() and "scoring chunks" not in line]


def _files_holding(root: Path, secret: str) -> list[str]:
    return [
        str(p)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()
    ]


def test_killed_run_resumes_to_the_same_bytes_and_no_password_is_written_anywhere(
    tmp_path: Path, db: str, artifact: Path, threads_orders: Path, dask_cluster: DaskCluster
) -> None:
    out = tmp_path / "out"
    cluster = ["--dask", dask_cluster.address]
    killed = _retain_score(db, "orders", artifact, out, *cluster, pause="scores:writing")
    seen = wait_for_pause(killed, timeout=600)
    staging = next((tmp_path / ".out.retain").glob("staging-*"))
    staged = (staging / MANIFEST_NAME).read_text()
    second = _retain_score(db, "orders", artifact, out, *cluster)  # refused: the lock
    code, _, refused = _finish(second)
    assert code == 2 and f"is being written by another run (pid {killed.pid}" in refused
    killed.kill()  # SIGKILL at publish: every chunk staged, nothing published
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert not out.exists()

    resumed = _retain_score(db, "orders", artifact, out, *cluster, "--resume")
    code, stdout, stderr = _finish(resumed)
    assert code == 0, stderr[-3000:]
    assert "chunks: 6 (6 resumed)" in stderr
    assert sha256s(out) == sha256s(threads_orders / "scores")
    assert "postgres:***@" in (out / SUMMARY_NAME).read_text()
    for text in (*seen, staged, refused, stdout, stderr):
        assert PASSWORD not in text
    assert _files_holding(tmp_path, PASSWORD) == []
    assert _files_holding(dask_cluster.dir, PASSWORD) == []  # the workers' and scheduler's logs


def test_a_bad_value_names_the_customer_and_column_in_one_line(
    tmp_path: Path, db: str, artifact: Path, raw_log: pd.DataFrame, dask_cluster: DaskCluster
) -> None:
    proc = _retain_score(db, "bad", artifact, tmp_path / "out", "--dask", dask_cluster.address)
    code, stdout, stderr = _finish(proc)
    assert code == 2, stderr[-3000:]
    lines = _message_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    customer = raw_log["customer_id"].iloc[40]
    assert f"customer id(s) of those rows: {customer!r}" in lines[0]
    assert "column 'amount'" in lines[0] and "'twelve'" in lines[0]
    assert "table 'bad'" in lines[0] and PASSWORD not in stderr + stdout
    assert not (tmp_path / "out").exists()
    assert _files_holding(dask_cluster.dir, PASSWORD) == []  # the failed task's log


@pytest.fixture
def workers_without_the_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaskCluster]:
    """Workers whose libpq demands SSL, which the test server does not speak: the driver
    reaches the database, the workers cannot."""
    monkeypatch.setenv("PGSSLMODE", "require")
    with DaskCluster(workers=1) as cluster:
        monkeypatch.delenv("PGSSLMODE")
        yield cluster


def test_a_database_the_workers_cannot_reach_is_one_line_without_the_password(
    tmp_path: Path, db: str, artifact: Path, workers_without_the_database: DaskCluster
) -> None:
    cluster = workers_without_the_database
    proc = _retain_score(db, "orders", artifact, tmp_path / "out", "--dask", cluster.address)
    code, stdout, stderr = _finish(proc)
    assert code == 2, stderr[-3000:]
    lines = _message_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to postgresql://")
    assert "postgres:***@" in lines[0] and "SSL" in lines[0]
    assert PASSWORD not in stderr + stdout
    assert _files_holding(cluster.dir, PASSWORD) == []
    assert not (tmp_path / "out").exists()


def test_a_worker_killed_mid_run_the_job_completes_on_the_other(
    tmp_path: Path, db: str, artifact: Path, threads_orders: Path
) -> None:
    killed: list[int] = []
    with DaskCluster(workers=2) as cluster:

        def kill_once(chunk: Chunk) -> None:
            if not killed:
                killed.append(cluster.kill_worker(0))

        summary = _score(
            _table(db, "orders"),
            tmp_path / "s",
            artifact,
            dask_address=cluster.address,
            on_chunk=kill_once,
        )
        assert cluster.workers[0].poll() is not None and cluster.workers[1].poll() is None
    assert killed and summary.chunks == 6  # type: ignore[attr-defined]
    assert sha256s(tmp_path / "s") == sha256s(threads_orders / "scores")
