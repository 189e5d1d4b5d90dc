"""``retain train --dask``: snapshots built on separate worker processes, the local models.

The cluster is a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1
(``tests/training/dask_processes.py``); the training runs are ``python -m serving.cli``
processes, so driver, scheduler and workers share no Python state and the log reaches the
workers only as bytes over the network.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from features.log.purchase_log import canonicalize
from features.synthetic.synth import generate_purchase_log
from tests.dask_cluster import DaskCluster
from tests.retain_cli import retain
from training.artifact import MANIFEST_NAME
from training.dataset.cluster_snapshots import (
    ClusterSnapshots,
    customer_partitions,
    partition_snapshots,
)

AS_OF = "2024-03-01"
HORIZON = "60"
# what differs between two runs of the same training: when, and the run's own ids
RUN_FIELDS = ("created_at",)


@pytest.fixture(scope="module")
def cluster(dask_cluster: DaskCluster) -> str:
    return dask_cluster.address


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = generate_purchase_log(600, seed=4, start="2022-01-01", end="2024-06-30").log
    path = tmp_path_factory.mktemp("log") / "log.parquet"
    raw.to_parquet(path)
    return path


def _retain(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return retain(*args, cwd=cwd, env={"MLFLOW_TRACKING_URI": None}, timeout=1800)


def _train(log_file: Path, work: Path, *extra: str) -> Path:
    work.mkdir()
    args = ["train", "--data", str(log_file), "--as-of", AS_OF, "--horizon", HORIZON]
    done = _retain([*args, "--artifact-out", str(work / "artifact"), *extra], work)
    assert done.returncode == 0, done.stderr[-3000:]
    return work


def _registered(work: Path) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """The one registered version's tags, and its run's metrics and params."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    # the registry named too: an in-process `retain train` earlier in the session set one
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [version] = client.search_model_versions("name='retain'")
    run = client.get_run(version.run_id)
    assert client.get_model_version_by_alias("retain", "challenger").version == version.version
    # the manifest's digest covers its created_at, which differs between any two runs
    tags = {
        k: v
        for k, v in version.tags.items()
        if version.run_id not in v and k != "retain.manifest_sha256"
    }
    return tags, dict(run.data.metrics), dict(run.data.params)


@pytest.mark.slow
def test_train_on_a_separate_process_cluster_makes_the_local_artifact_run_and_version(
    cluster: str, log_file: Path, tmp_path: Path
) -> None:
    local = _train(log_file, tmp_path / "local")
    remote = _train(log_file, tmp_path / "remote", "--dask", cluster)

    files = sorted(p.relative_to(local / "artifact") for p in (local / "artifact").rglob("*.*"))
    assert any(p.name == "churn.lgb.txt" for p in files)
    for rel in files:
        if rel.name == MANIFEST_NAME:
            continue
        # every LightGBM text, the models' JSON (BTYD states, snapshots) and the policy
        assert (remote / "artifact" / rel).read_bytes() == (
            local / "artifact" / rel
        ).read_bytes(), rel
    manifests = [json.loads((w / "artifact" / MANIFEST_NAME).read_text()) for w in (local, remote)]
    for manifest in manifests:
        for field in RUN_FIELDS:
            manifest.pop(field)
    assert manifests[0] == manifests[1]

    local_tags, local_metrics, local_params = _registered(local)
    remote_tags, remote_metrics, remote_params = _registered(remote)
    assert remote_params == local_params
    timing = {k for k in local_metrics if "seconds" in k}
    assert {k: v for k, v in remote_metrics.items() if k not in timing} == {
        k: v for k, v in local_metrics.items() if k not in timing
    }
    assert remote_tags == local_tags


@pytest.mark.slow
def test_the_btyd_sample_and_uneven_partitions_give_the_local_boosters(cluster: str) -> None:
    from distributed import Client

    from training.models.bundle import RetainModels

    raw = generate_purchase_log(900, seed=8, start="2022-01-01", end="2024-06-30").log
    log = canonicalize(raw).log
    # a BTYD sample smaller than every snapshot: the driver fetches only the sampled rows
    params = {"horizon_days": 60, "n_snapshots": 4, "baseline_sample": 250, "num_boost_round": 40}
    local = RetainModels(**params).fit(log, "2024-06-01")
    with Client(cluster, timeout=60) as client:
        builder = ClusterSnapshots(client, n_parts=3)
        remote = RetainModels(**params).fit(log, "2024-06-01", snapshots=builder)
    for name, model in local._boosters().items():
        other = remote._boosters()[name]
        if model is None:
            assert other is None
            continue
        assert other.booster_.model_to_string() == model.booster_.model_to_string(), name
    assert remote.baselines_ == local.baselines_
    assert remote.snapshots_ == local.snapshots_


def _snapshot_tasks(stream: list[dict[str, object]]) -> list[dict[str, object]]:
    """The task-stream records of snapshot tasks (``partition_snapshots-<token>`` keys)."""
    from dask.utils import key_split

    return [t for t in stream if key_split(t["key"]) == partition_snapshots.__name__]


@pytest.mark.slow
def test_the_backtest_builds_its_training_snapshots_on_the_cluster(
    dask_cluster: DaskCluster,
) -> None:
    """``evaluate(snapshots=...)`` hands the builder to its model fit.

    Its outputs are the same whether the snapshots are built here or on the workers, so only
    the cluster's own record can tell: the scheduler's task stream must show the snapshot
    tasks of a fit at the cutoff, as many as a direct fit with the builder runs.
    """
    from distributed import Client, get_task_stream

    from training.evaluation.backtest import evaluate
    from training.models.bundle import RetainModels

    raw = generate_purchase_log(400, seed=5, start="2022-01-01", end="2024-06-30").log
    log = canonicalize(raw).log
    params = {"n_snapshots": 3, "n_snapshots_365": 2, "num_boost_round": 20}
    with Client(dask_cluster.address, timeout=60) as client:
        workers = set(client.scheduler_info()["workers"])
        builder = ClusterSnapshots(client, n_parts=3)
        with get_task_stream(client) as direct:
            RetainModels(horizon_days=60, **params).fit(log, AS_OF, snapshots=builder)
        with get_task_stream(client) as backtest:
            evaluate(log, AS_OF, 60, models_params=params, methods=("model",), snapshots=builder)
    expected = _snapshot_tasks(direct.data)
    ran = _snapshot_tasks(backtest.data)
    assert expected, "a fit with the cluster builder ran no snapshot task on the cluster"
    assert len(ran) == len(expected), "the backtest's fit did not build its snapshots there"
    assert {t["worker"] for t in ran} <= workers


def test_customer_partitions_hold_whole_customers_in_id_order() -> None:
    raw = generate_purchase_log(300, seed=2, start="2023-01-01", end="2023-12-31").log
    log = canonicalize(raw).log
    parts = customer_partitions(log, 4)
    assert len(parts) == 4
    ids = [sorted(map(str, p["customer_id"].unique())) for p in parts]
    flat = [i for part in ids for i in part]
    assert flat == sorted(map(str, log["customer_id"].unique()))  # disjoint, in id order
    assert sum(len(p) for p in parts) == len(log)
    for part in parts:
        assert list(part["customer_id"].cat.categories) == sorted(
            map(str, part["customer_id"].unique())
        )
    back = pd.concat(parts).sort_index()
    pd.testing.assert_frame_equal(
        back.assign(customer_id=back["customer_id"].astype(str)),
        log.assign(customer_id=log["customer_id"].astype(str)),
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_scheduler_is_one_line_and_exit_2_in_seconds(
    log_file: Path, tmp_path: Path
) -> None:
    address = f"tcp://127.0.0.1:{_closed_port()}"
    args = ["train", "--data", str(log_file), "--as-of", AS_OF, "--horizon", HORIZON]
    started = time.monotonic()
    done = _retain([*args, "--dask", address, "--no-register"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert time.monotonic() - started < 60  # a subprocess start and one refused connect
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: --dask {address}: no Dask scheduler answers there (Connection refused)"
    ]
    assert not (tmp_path / "mlflow.db").exists()  # refused before any work


def test_dask_and_dask_local_together_are_refused_in_one_line(
    log_file: Path, tmp_path: Path
) -> None:
    args = ["train", "--data", str(log_file), "--as-of", AS_OF, "--horizon", HORIZON]
    done = _retain([*args, "--dask", "tcp://127.0.0.1:1", "--dask-local", "2"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["error: give one of --dask ADDRESS and --dask-local N, not both"]
