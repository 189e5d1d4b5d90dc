"""``/score/ids`` with histories read from a real PostgreSQL at request time, over HTTP.

A purchase committed a moment ago changes the next score, equal to scoring the full
history in-process; a database that goes down costs 503 for the requests meanwhile and the
service recovers when it is back, without a worker restart; a table or column that does not
exist stops ``retain serve`` with one line; a table without an index on the customer column
gets a warning naming the ``CREATE INDEX`` to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.sources.database import connect
from features.synthetic.synth import generate_purchase_log
from serving.http.serve import serve_command
from serving.scorer import ScoringModel
from tests.postgres_server import PostgresServer
from tests.serving.conftest import free_port
from tests.serving.history_checks import (
    assert_fresh_after_purchase,
    assert_matches,
    expected_record,
    score_ids,
    write_orders,
)
from tests.serving.server_artifact import server_artifact

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180.0
EXIT_SECONDS = 120.0
SECRET = "pw-XYZZY-secret"


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return generate_purchase_log(150, seed=5, start="2023-01-01", end="2024-06-30").log


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, raw_log: pd.DataFrame) -> Path:
    return server_artifact(tmp_path_factory.mktemp("artifact") / "retain-artifact", raw_log)


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RETAIN_") and k != "MLFLOW_TRACKING_URI"
    }
    env.update(
        PYTHONPATH=str(REPO_ROOT), BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true"
    )
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            if response.status_code == 200:
                return dict(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"/readyz never answered 200:\n{log.read_text()[-3000:]}")


def start(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def test_a_purchase_written_a_moment_ago_changes_the_next_score(
    tmp_path: Path, postgres_url: str, artifact_dir: Path, raw_log: pd.DataFrame
) -> None:
    """Before: RETAIN_HISTORY_* were not read; /score/ids knew only the snapshot's ids."""
    write_orders(postgres_url, "orders_fresh", raw_log, index=False)
    shutil.copytree(artifact_dir, tmp_path / "art")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **base_env(),
        "RETAIN_MODEL_URI": "art",
        "RETAIN_HISTORY_URL": postgres_url,
        "RETAIN_HISTORY_TABLE": "orders_fresh",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
    }
    command = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port), "--workers", "1"]
    log = tmp_path / "serve.log"
    process = start(command, env, tmp_path, log)
    try:
        ready = wait_ready(url, process, log)
        assert ready["features_source"] == "database"
        assert ready["history"] == {"url": postgres_url, "table": "orders_fresh", "checked": True}
        text = log.read_text()
        index_hint = 'CREATE INDEX ON "orders_fresh" ("customer_id")'
        assert "retain serve: warning: RETAIN_HISTORY_TABLE='orders_fresh'" in text
        assert text.count(index_hint) == 2, text[-3000:]  # retain serve's line, the worker's

        model = ScoringModel.load(artifact_dir)
        cid = str(raw_log["customer_id"].iloc[0])
        before = score_ids(url, [cid, "nobody"])
        assert before.status_code == 200, before.text
        first, unknown = before.json()["results"]
        assert unknown == {
            "customer_id": "nobody",
            "status": "unknown_customer_id",
            "as_of": None,
            "reasons": [],
            "offer": None,
        }
        assert_matches(first, expected_record(model, raw_log, cid, str(first["as_of"])))

        assert_fresh_after_purchase(url, postgres_url, "orders_fresh", model, raw_log, cid)
    finally:
        stop(process)


def pg_ctl(server: PostgresServer, *args: str) -> None:
    """Stop or start the test's own cluster in place (same data, same port)."""
    command = [str(server.bindir / "pg_ctl"), "-D", str(server.data), *args]
    if server.as_root:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def pg_start(server: PostgresServer) -> None:
    options = f"-p {server.port} -k {server.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl(server, "-o", options, "-l", str(server.root / "log"), "-w", "-t", "60", "start")


@pytest.fixture()
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster this test may stop and start (the session's server stays up)."""
    with PostgresServer() as server:
        yield server


def test_database_down_is_503_for_those_requests_then_recovers_without_restart(
    tmp_path: Path, own_postgres: PostgresServer, artifact_dir: Path, raw_log: pd.DataFrame
) -> None:
    """Down at start-up, up, down again, up: each request gets 503 or its scores, the one
    worker stays (no respawn loop) and reconnects by itself."""
    server = own_postgres
    write_orders(server.url, "orders", raw_log, index=True)
    pg_ctl(server, "-m", "fast", "-w", "stop")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command, env = serve_command(
        str(artifact_dir), "127.0.0.1", port, 1, environ={**base_env()}, cwd=tmp_path
    )
    env.update(RETAIN_HISTORY_URL=server.url, RETAIN_HISTORY_TABLE="orders")
    log = tmp_path / "serve.log"
    process = start(command, env, REPO_ROOT, log)
    cid = str(raw_log["customer_id"].iloc[3])
    try:
        ready = wait_ready(url, process, log)
        assert ready["history"]["checked"] is False  # type: ignore[index]
        for round_ in range(2):
            down = score_ids(url, [cid])
            assert down.status_code == 503, down.text
            assert "history database unavailable" in down.json()["error"]
            assert f"127.0.0.1:{server.port}" in down.json()["error"]
            pg_start(server)
            up = score_ids(url, [cid])
            assert up.status_code == 200, (round_, up.text)
            assert up.json()["results"][0]["status"] == "scored"
            pg_ctl(server, "-m", "fast", "-w", "stop")  # drops the worker's connection
        pg_start(server)  # the connection kept from the last success is dead: one retry
        assert score_ids(url, [cid]).status_code == 200
        assert httpx.get(f"{url}/readyz", timeout=5).json()["history"]["checked"] is True
        text = log.read_text()
        assert text.count("history database not reachable at start-up") == 1, text[-3000:]
        assert text.count("loaded from") == 1, text[-3000:]  # one worker start, no respawn
        assert "retain service not ready" not in text
        assert "Traceback" not in text
    finally:
        stop(process)


def test_a_lock_held_on_the_table_is_503_within_the_time_limit_then_recovers(
    tmp_path: Path, postgres_url: str, artifact_dir: Path, raw_log: pd.DataFrame
) -> None:
    """The server answers but the history query waits on a lock another session holds.
    Before: no statement time limit, so the request waited until the client gave up."""
    write_orders(postgres_url, "orders_locked", raw_log, index=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command, env = serve_command(
        str(artifact_dir), "127.0.0.1", port, 1, environ={**base_env()}, cwd=tmp_path
    )
    env.update(
        RETAIN_HISTORY_URL=postgres_url,
        RETAIN_HISTORY_TABLE="orders_locked",
        RETAIN_DB_TIMEOUT="3",
    )
    log = tmp_path / "serve.log"
    process = start(command, env, REPO_ROOT, log)
    cid = str(raw_log["customer_id"].iloc[2])
    try:
        wait_ready(url, process, log)
        assert score_ids(url, [cid]).status_code == 200
        holder = connect(postgres_url)  # its transaction holds the lock until rollback
        try:
            holder.cursor().execute('LOCK TABLE "orders_locked" IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            try:
                blocked = httpx.post(f"{url}/score/ids", json={"customer_ids": [cid]}, timeout=45)
            except httpx.TimeoutException:
                pytest.fail("/score/ids still waiting on the lock after 45 s")
            waited = time.monotonic() - started
        finally:
            holder.rollback()
            holder.close()
        assert blocked.status_code == 503, blocked.text
        error = blocked.json()["error"]
        assert "no result within the statement time limit (RETAIN_DB_TIMEOUT seconds)" in error
        assert waited < 45
        again = score_ids(url, [cid])
        assert again.status_code == 200, again.text
        assert again.json()["results"][0]["status"] == "scored"
        assert "Traceback" not in log.read_text()
    finally:
        stop(process)


def retain_serve_refusal(tmp_path: Path, env: dict[str, str]) -> str:
    """``retain serve`` expected to refuse: its one stderr line (exit 2, no traceback)."""
    command = [sys.executable, "-m", "serving.cli", "serve", "--port", str(free_port())]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 15)
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"retain serve still running after {EXIT_SECONDS:.0f}s: {stderr[-2000:]}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 2, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"RETAIN_HISTORY_TABLE": "no_such_orders"},
            "RETAIN_HISTORY_TABLE='no_such_orders': table not found",
        ),
        (
            {"RETAIN_HISTORY_TABLE": "orders_no_amount"},
            "RETAIN_HISTORY_TABLE='orders_no_amount': missing required column(s): 'amount'",
        ),
        (
            {"RETAIN_HISTORY_QUERY": "SELECT customer_id, timestamp, price FROM orders_no_amount"},
            "RETAIN_HISTORY_QUERY: missing required column(s): 'amount'; columns found: "
            "['customer_id', 'timestamp', 'price']",
        ),
        ({}, "needs exactly one of RETAIN_HISTORY_TABLE and RETAIN_HISTORY_QUERY"),
        (
            {"RETAIN_HISTORY_TABLE": "orders", "RETAIN_FEATURE_SNAPSHOT": "snap.parquet"},
            "RETAIN_HISTORY_URL and RETAIN_FEATURE_SNAPSHOT are both set",
        ),
    ],
)
def test_bad_history_settings_stop_retain_serve_with_one_line(
    tmp_path: Path,
    postgres_url: str,
    artifact_dir: Path,
    raw_log: pd.DataFrame,
    settings: dict[str, str],
    expected: str,
) -> None:
    frame = raw_log[["customer_id", "timestamp"]].assign(price=raw_log["amount"])
    write_orders(
        postgres_url, "orders_no_amount", frame.rename(columns={"price": "amount"}), index=True
    )
    with connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute('ALTER TABLE "orders_no_amount" RENAME COLUMN amount TO price')
        conn.commit()
    (tmp_path / "snap.parquet").write_bytes(b"")
    env = {
        **base_env(),
        "RETAIN_MODEL_URI": str(artifact_dir),
        "RETAIN_HISTORY_URL": postgres_url,
        **settings,
    }
    assert expected in retain_serve_refusal(tmp_path, env)


def test_an_unreachable_history_database_stops_retain_serve_with_the_password_masked(
    tmp_path: Path, artifact_dir: Path
) -> None:
    env = {
        **base_env(),
        "RETAIN_MODEL_URI": str(artifact_dir),
        "RETAIN_HISTORY_URL": f"postgresql://retain:{SECRET}@127.0.0.1:{free_port()}/shop",
        "RETAIN_HISTORY_TABLE": "orders",
    }
    line = retain_serve_refusal(tmp_path, env)
    assert "history database unavailable" in line
    assert "retain:***@127.0.0.1" in line
    assert SECRET not in line
