"""Fixtures shared by every test package: the real reference datasets, a real PostgreSQL.

``make test`` runs the suite on two pytest-xdist workers (``-n 2 --dist loadfile``).
Session fixtures then run once per worker, so everything here is per worker where it must
be: the PostgreSQL database (``postgres_url``, ``postgres_db``), ports (always free ports),
temporary directories (``tmp_path_factory`` has one base per worker). Each test module runs
whole on one worker (its module fixtures are built once), and modules that share an
expensive session fixture (``XDIST_GROUPS``) run on the same worker, so it is built once
per run.

What a test must do to be safe there (a module runs beside any other module):
- files only under ``tmp_path`` / ``tmp_path_factory`` (never a fixed path, nor the checkout);
- servers on free ports (``tests/serving/conftest.py`` ``free_port``), never fixed ones;
- PostgreSQL through ``postgres_db`` (a database per module and worker) or ``postgres_url``
  (a database per worker: table names unique across modules, as in a serial run);
- no reliance on another module having run first, or in the same process;
- a new module that uses an expensive session fixture others use too (``isolated_venv``)
  goes in ``XDIST_GROUPS``, so the fixture is not built twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dask_cluster import DaskCluster, DaskUnavailable
from tests.postgres_server import PostgresServer, PostgresUnavailable, fresh_database

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = Path(os.environ.get("RETAIN_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
CDNOW_MASTER = DATASETS_DIR / "cdnow" / "CDNOW_master.txt"
CDNOW_SAMPLE = DATASETS_DIR / "cdnow" / "CDNOW_sample.txt"


# Test modules that share an expensive session fixture run on one worker, so it is built
# once per run instead of once per worker: module path -> group. (The bento's and the
# MLflow model's isolated virtualenv, ``isolated_venv`` in tests/serving/conftest.py.)
XDIST_GROUPS = {
    "tests/serving/test_bento.py": "isolated_venv",
    "tests/serving/test_pyfunc_isolated.py": "isolated_venv",
}


def xdist_worker() -> str | None:
    """This process's pytest-xdist worker id (``gw0``, ``gw1``...), None outside xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def xdist_group(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or the module's ``XDIST_GROUPS`` group."""
    module = nodeid.split("::", 1)[0]
    return XDIST_GROUPS.get(module, module)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` hands each group of ``xdist_group`` whole to one worker.

    Like xdist's own loadfile (module fixtures such as a trained model, a built bento or a
    server are built once, as in a serial run), plus the cross-module groups above, in the
    order the workers collected (see ``pytest_collection_modifyitems``), not reordered by
    test count. (xdist's ``loadgroup`` marks do not reach the scheduler under pytest 9.2:
    xdist 3.8 renames ``item._nodeid``, which pytest 9.2 no longer reads.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    config.option.loadscopereorder = False
    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the groups holding ``slow`` or ``server`` tests are queued first.

    Most such tests first: the long groups then start early instead of last on one worker
    while the other sits idle. Modules stay contiguous (module fixtures are built once).
    Every worker computes the same order from the same collection, as xdist requires.
    """
    if xdist_worker() is None:
        return
    weight: dict[str, int] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        group = xdist_group(item.nodeid)
        first.setdefault(group, index)
        heavy = item.get_closest_marker("slow") or item.get_closest_marker("server")
        weight[group] = weight.get(group, 0) + (1 if heavy else 0)
    position = {id(item): i for i, item in enumerate(items)}

    def key(item: pytest.Item) -> tuple[int, int, int]:
        group = xdist_group(item.nodeid)
        return (-weight[group], first[group], position[id(item)])

    items.sort(key=key)


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
    Under xdist the URL names a database of this worker's own (``xdist_gw0``...), so tables
    a test creates never meet another worker's.
    """
    given = os.environ.get("RETAIN_TEST_POSTGRES_URL")
    if given:
        yield _worker_database(given)
        return
    try:
        server = PostgresServer()
    except PostgresUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no PostgreSQL server: {error}")
        pytest.skip(str(error))
    with server:
        yield _worker_database(server.url)


def _worker_database(url: str) -> str:
    worker = xdist_worker()
    return url if worker is None else fresh_database(url, f"xdist_{worker}")


@pytest.fixture(scope="module")
def postgres_db(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test module (named for it and the worker) on the server."""
    name = "t_" + request.module.__name__.rsplit(".", 1)[-1].lower()[:40]
    worker = xdist_worker()
    return fresh_database(postgres_url, name if worker is None else f"{name}_{worker}")


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
