"""Fixtures shared by every test package: the real reference datasets, a real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dask_cluster import DaskCluster, DaskUnavailable
from tests.postgres_server import PostgresServer, PostgresUnavailable, fresh_database

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = Path(os.environ.get("RETAIN_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
CDNOW_MASTER = DATASETS_DIR / "cdnow" / "CDNOW_master.txt"
CDNOW_SAMPLE = DATASETS_DIR / "cdnow" / "CDNOW_sample.txt"


@pytest.fixture(scope="session")
def cdnow_master_path() -> Path:
    if not CDNOW_MASTER.exists():
        pytest.fail(f"CDNOW master log not found at {CDNOW_MASTER}; set RETAIN_DATASETS")
    return CDNOW_MASTER


@pytest.fixture(scope="session")
def cdnow_sample_path() -> Path:
    if not CDNOW_SAMPLE.exists():
        pytest.fail(f"CDNOW sample log not found at {CDNOW_SAMPLE}; set RETAIN_DATASETS")
    return CDNOW_SAMPLE


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a real PostgreSQL server's superuser (trust auth, loopback only).

    ``RETAIN_TEST_POSTGRES_URL`` (set by ``make test`` and ``.ci/run``, which start one
    server for the whole run) wins; otherwise a throwaway cluster is started for the session.
    Without PostgreSQL binaries the tests skip, except under CI=true, where they fail.
    """
    given = os.environ.get("RETAIN_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        server = PostgresServer()
    except PostgresUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no PostgreSQL server: {error}")
        pytest.skip(str(error))
    with server:
        yield server.url


@pytest.fixture(scope="module")
def postgres_db(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test module (named for it) on the session's server."""
    name = "t_" + request.module.__name__.rsplit(".", 1)[-1].lower()[:40]
    return fresh_database(postgres_url, name)


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[DaskCluster]:
    """A real cluster: ``dask scheduler`` and two ``dask worker`` processes on loopback.

    Shared by the session (start-up costs seconds); tests must not kill its workers (start
    an own ``DaskCluster`` for that). Without the ``dask`` command the tests skip, except
    under CI=true, where they fail.
    """
    try:
        cluster = DaskCluster(workers=2)
    except DaskUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no Dask: {error}")
        pytest.skip(str(error))
    with cluster:
        yield cluster
