"""Dask paths: scoring on a LocalCluster equals the pandas path; LightGBM trains on Dask."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import distributed
import pandas as pd
import pytest

from serving.batch.commands import score_command
from serving.batch.dask import ArtifactFiles, score_partition
from serving.batch.publish import read_scores
from serving.scorer import ScoringModel, score
from tests.serving.test_batch import AS_OF, make_artifact, sha256s, small_raw_log


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return small_raw_log(240, seed=21)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, log: pd.DataFrame) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact") / "retain", log)


@pytest.fixture(scope="module")
def thread_cluster() -> Iterator[str]:
    """Two in-process workers: the scheduler protocol without process start-up cost."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


@pytest.mark.slow
def test_artifact_files_roundtrip_scores_alike(artifact: Path, log: pd.DataFrame) -> None:
    shipped = ArtifactFiles.read(artifact)
    assert {rel for rel, _ in shipped.files} >= {"retain_artifact.json", "offer_policy.yaml"}
    got = score_partition(log, shipped, pd.Timestamp(AS_OF, tz="UTC"), None, False)
    pd.testing.assert_frame_equal(got, score(ScoringModel.load(artifact), log, AS_OF))


@pytest.mark.slow
def test_dask_scoring_equals_pandas_path(
    tmp_path: Path, thread_cluster: str, data_path: Path, artifact: Path, log: pd.DataFrame
) -> None:
    kwargs = {"model_uri": str(artifact), "chunk_customers": 45, "progress": False}
    pandas_summary = score_command(
        data_path, AS_OF, tmp_path / "pd", features_out=tmp_path / "pdf", **kwargs
    )
    dask_summary = score_command(
        data_path,
        AS_OF,
        tmp_path / "dk",
        features_out=tmp_path / "dkf",
        dask_address=thread_cluster,
        **kwargs,
    )
    assert dask_summary.executor.startswith("dask ")
    assert dask_summary.chunks == pandas_summary.chunks == 6
    assert sha256s(tmp_path / "dk") == sha256s(tmp_path / "pd")
    assert sha256s(tmp_path / "dkf") == sha256s(tmp_path / "pdf")
    whole = score(ScoringModel.load(artifact), log, AS_OF)
    pd.testing.assert_frame_equal(read_scores(tmp_path / "dk"), whole)


@pytest.mark.slow
def test_dask_resume_after_interruption(
    tmp_path: Path, thread_cluster: str, data_path: Path, artifact: Path
) -> None:
    kwargs = {"model_uri": str(artifact), "chunk_customers": 45, "progress": False}
    score_command(data_path, AS_OF, tmp_path / "clean", **kwargs)

    def crash(chunk: object) -> None:
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        score_command(
            data_path,
            AS_OF,
            tmp_path / "out",
            dask_address=thread_cluster,
            on_chunk=crash,
            **kwargs,
        )
    assert not list((tmp_path / "out").glob("part-*"))
    summary = score_command(
        data_path, AS_OF, tmp_path / "out", dask_address=thread_cluster, resume=True, **kwargs
    )
    assert summary.chunks_resumed == 1
    assert sha256s(tmp_path / "out") == sha256s(tmp_path / "clean")
