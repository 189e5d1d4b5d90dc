"""A PostgreSQL server that hangs (it does not refuse) is one error line within a bounded
time, on a real server: a read blocked by a lock another session holds (statement time
limit), and a server that accepts connections but never answers (connect time limit)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.sources.database import (
    DatabaseError,
    driver_uri,
    parse_url,
    statement_timeout_seconds,
)
from tests.postgres_server import PostgresServer, load_frame

REPO_ROOT = Path(__file__).resolve().parents[2]
BOUND = 60.0
"""Seconds after which a command still waiting counts as hung (the limits are 2 and 10)."""


def _kpis(url: str, table: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``retain kpis`` on ``table`` in a fresh process; fails the test if it hangs."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RETAIN_", "PG"))}
    environ.update(PYTHONPATH=str(REPO_ROOT), **env)
    command = [sys.executable, "-m", "serving.cli", "kpis", "--data", url, "--table", table]
    started = time.monotonic()
    try:
        done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"retain kpis still waiting after {BOUND:.0f}s: the hang has no limit")
    return done, time.monotonic() - started


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def small_orders(postgres_db: str) -> str:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-02-01"], utc=True),
            "amount": [10.0, 20.0, 5.0],
        }
    )
    load_frame(postgres_db, "locked_orders", frame)
    return postgres_db


def test_a_read_blocked_by_a_lock_is_one_error_line_within_the_time_limit(
    small_orders: str,
) -> None:
    """Before: no statement time limit, so ``retain kpis`` waited on the lock for ever."""
    import adbc_driver_postgresql.dbapi

    holder = adbc_driver_postgresql.dbapi.connect(small_orders)  # a transaction stays open
    try:
        holder.cursor().execute("LOCK TABLE locked_orders IN ACCESS EXCLUSIVE MODE")
        done, seconds = _kpis(small_orders, "locked_orders", RETAIN_DB_TIMEOUT="2")
    finally:
        holder.rollback()
        holder.close()
    line = _one_error_line(done)
    assert "table 'locked_orders'" in line, line
    assert "no result within the statement time limit (RETAIN_DB_TIMEOUT seconds)" in line
    assert seconds < BOUND
    unlocked, _ = _kpis(small_orders, "locked_orders", RETAIN_DB_TIMEOUT="2")
    assert unlocked.returncode == 0, unlocked.stderr[-3000:]


@pytest.mark.slow
def test_a_server_that_accepts_but_never_answers_fails_the_connect() -> None:
    """A stopped postmaster: the kernel accepts the connection, nobody answers. Before: no
    connect time limit, so the command waited for ever."""
    with PostgresServer() as server:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGSTOP)
        try:
            done, seconds = _kpis(server.url, "orders")
        finally:
            os.kill(pid, signal.SIGCONT)
    line = _one_error_line(done)
    assert line.startswith(f"error: cannot connect to {server.url}"), line
    assert "timeout expired" in line, line
    assert seconds < BOUND


def test_time_limits_join_the_url_and_never_replace_the_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RETAIN_DB_TIMEOUT", raising=False)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    plain = driver_uri(parse_url("postgresql://u@h:5432/db"))
    assert plain == (
        "postgresql://u@h:5432/db?connect_timeout=10&options=-c%20statement_timeout%3D1800000"
    )
    mine = driver_uri(
        parse_url("postgresql://u@h/db?connect_timeout=3&options=-c%20search_path%3Dshop"), 2.5
    )
    assert mine == (
        "postgresql://u@h/db?connect_timeout=3&options=-c%20search_path%3Dshop%20"
        "-c%20statement_timeout%3D2500"
    )
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=64MB")
    monkeypatch.setenv("RETAIN_DB_TIMEOUT", "0")  # no limit
    assert driver_uri(parse_url("postgresql://u@h/db")) == "postgresql://u@h/db?connect_timeout=10"
    monkeypatch.setenv("RETAIN_DB_TIMEOUT", "7")
    assert statement_timeout_seconds() == 7.0
    assert "work_mem%3D64MB%20-c%20statement_timeout%3D7000" in driver_uri(
        parse_url("postgresql://u@h/db")
    )
    monkeypatch.setenv("RETAIN_DB_TIMEOUT", "soon")
    with pytest.raises(DatabaseError, match="RETAIN_DB_TIMEOUT='soon': expected a number"):
        statement_timeout_seconds()
