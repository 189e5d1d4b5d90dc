"""Scoring where the data is: partitioned Parquet read, scored and written by the tasks.

The reference is always the single-machine path on the whole file: same part bytes, whether
the partitions are scored on threads, on a real cluster of separate processes, or on one
that loses a worker mid-run.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.log.schema import PurchaseLogError
from features.sources.partition_log import PartitionInputError, partition_log, plain_schema
from serving.batch.chunks import Chunk
from serving.batch.partitioned import PartitionError
from serving.batch.publish import read_scores
from tests.dask_cluster import DaskCluster
from tests.serving.test_batch import AS_OF, make_artifact, sha256s, small_raw_log

CHUNK = 45  # 240 customers -> 6 parts; 3 files of 80 customers: parts straddle files


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return small_raw_log(240, seed=21)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, log: pd.DataFrame) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact") / "retain", log)


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory: pytest.TempPathFactory, data_path: Path) -> Path:
    out = tmp_path_factory.mktemp("parts") / "log"
    partition_log(data_path, out, 3)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_path: Path, artifact: Path) -> Path:
    """The single-machine run on the whole file: scores and features."""
    from serving.batch.commands import score_command

    root = tmp_path_factory.mktemp("reference")
    score_command(
        data_path,
        AS_OF,
        root / "scores",
        model_uri=str(artifact),
        chunk_customers=CHUNK,
        features_out=root / "features",
        progress=False,
    )
    return root


def score(data: Path, out: Path, artifact: Path, **kwargs: object) -> object:
    from serving.batch.commands import score_command

    return score_command(
        data,
        AS_OF,
        out,
        model_uri=str(artifact),
        chunk_customers=CHUNK,
        progress=False,
        **kwargs,  # type: ignore[arg-type]
    )


def assert_same_as_reference(out: Path, features: Path | None, reference: Path) -> None:
    assert sha256s(out) == sha256s(reference / "scores")
    assert len(sha256s(out)) == 6
    if features is not None:
        assert sha256s(features) == sha256s(reference / "features")


def test_partition_writes_disjoint_ordered_customer_ranges(
    tmp_path: Path, data_path: Path, parts_dir: Path, raw_log: pd.DataFrame
) -> None:
    files = sorted(parts_dir.glob("part-*.parquet"))
    assert len(files) == 3
    ids = [pd.read_parquet(f)["customer_id"].astype(str) for f in files]
    assert sum(len(i) for i in ids) == len(raw_log)
    assert [i.nunique() for i in ids] == [80, 80, 80]
    for before, after in itertools.pairwise(ids):
        assert before.max() < after.min()
    partition_log(data_path, tmp_path / "again", 3)
    assert sha256s(tmp_path / "again") == sha256s(parts_dir)
    pd.read_parquet(data_path).to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(PartitionInputError, match="reads a Parquet log"):
        partition_log(tmp_path / "log.csv", tmp_path / "x", 3)


def test_partition_aligned_to_the_chunk_gives_one_file_per_chunk(
    tmp_path: Path, data_path: Path, artifact: Path, reference: Path
) -> None:
    from features.log.schema import LogConfig
    from serving.batch.partitioned import input_files, plan_chunks, summarize_file

    aligned = tmp_path / "aligned"
    partition_log(data_path, aligned, 3, chunk_customers=CHUNK)
    summaries = [summarize_file(str(f), LogConfig()) for f in input_files(aligned)]
    # 240 customers: cuts at 80 and 160 move to the nearest multiples of 45
    assert [s.customers for s in summaries] == [90, 90, 60]
    plans, total = plan_chunks(summaries, CHUNK)
    assert total == 240
    assert [len(p.pieces) for p in plans] == [1] * 6  # unaligned (parts_dir): 2 straddle
    score(aligned, tmp_path / "s", artifact)
    assert sha256s(tmp_path / "s") == sha256s(reference / "scores")
    # files under half a chunk cannot be aligned: equal customer counts, as without
    partition_log(data_path, tmp_path / "small", 3, chunk_customers=200)
    small = [summarize_file(str(f), LogConfig()) for f in input_files(tmp_path / "small")]
    assert [s.customers for s in small] == [80, 80, 80]


def test_threads_on_partitions_equal_the_whole_file(
    tmp_path: Path, parts_dir: Path, artifact: Path, reference: Path
) -> None:
    summary = score(parts_dir, tmp_path / "s", artifact, features_out=tmp_path / "f")
    assert_same_as_reference(tmp_path / "s", tmp_path / "f", reference)
    assert summary.rows_in == summary.rows_kept > 0  # type: ignore[attr-defined]
    scored = len(read_scores(reference / "scores"))
    assert summary.customers_scored == scored > 200  # type: ignore[attr-defined]
    glob = score(Path(f"{parts_dir}/part-*.parquet"), tmp_path / "g", artifact)
    assert glob.chunks == 6  # type: ignore[attr-defined]
    assert sha256s(tmp_path / "g") == sha256s(reference / "scores")


def test_interrupted_partitioned_run_resumes_to_the_same_bytes(
    tmp_path: Path, parts_dir: Path, artifact: Path, reference: Path
) -> None:
    def crash(chunk: Chunk) -> None:
        raise RuntimeError("driver lost")

    with pytest.raises(RuntimeError, match="driver lost"):
        score(parts_dir, tmp_path / "s", artifact, on_chunk=crash, threads=1)
    assert not (tmp_path / "s").exists()
    summary = score(parts_dir, tmp_path / "s", artifact, resume=True)
    assert summary.chunks_resumed == 1  # type: ignore[attr-defined]
    assert sha256s(tmp_path / "s") == sha256s(reference / "scores")


def test_overlapping_files_are_refused_naming_them(
    tmp_path: Path, data_path: Path, artifact: Path
) -> None:
    raw = pd.read_parquet(data_path)
    folder = tmp_path / "spread"
    folder.mkdir()
    half = len(raw) // 2  # rows in file order: customers spread over both halves
    raw.iloc[:half].to_parquet(folder / "a.parquet")
    raw.iloc[half:].to_parquet(folder / "b.parquet")
    with pytest.raises(
        PartitionError, match=r"a\.parquet .*b\.parquet .* overlap.*retain partition"
    ):
        score(folder, tmp_path / "out", artifact)
    assert not (tmp_path / "out").exists()


@pytest.mark.server
@pytest.mark.slow
def test_real_cluster_scores_partitions_identically(
    tmp_path: Path, dask_cluster: DaskCluster, parts_dir: Path, artifact: Path, reference: Path
) -> None:
    summary = score(
        parts_dir,
        tmp_path / "s",
        artifact,
        features_out=tmp_path / "f",
        dask_address=dask_cluster.address,
    )
    assert summary.executor.startswith(f"dask {dask_cluster.address}")  # type: ignore[attr-defined]
    assert_same_as_reference(tmp_path / "s", tmp_path / "f", reference)
    pd.testing.assert_frame_equal(read_scores(tmp_path / "s"), read_scores(reference / "scores"))


@pytest.mark.server
@pytest.mark.slow
def test_bad_rows_in_a_partition_name_the_file_and_rows(
    tmp_path: Path, dask_cluster: DaskCluster, parts_dir: Path, artifact: Path
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    for path in sorted(parts_dir.glob("part-*.parquet")):
        frame = pd.read_parquet(path)
        if path.name == "part-00001.parquet":
            frame["amount"] = frame["amount"].astype(str)
            frame.loc[[3, 6], "amount"] = "twelve"
        frame.to_parquet(folder / path.name)
    with pytest.raises(PurchaseLogError) as caught:
        score(folder, tmp_path / "out", artifact, dask_address=dask_cluster.address)
    message = str(caught.value)
    assert "part-00001.parquet" in message and "amount" in message
    assert "4" in message and "7" in message and "twelve" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.server
@pytest.mark.slow
def test_worker_killed_mid_run_completes_on_the_rest(
    tmp_path: Path, parts_dir: Path, artifact: Path, reference: Path
) -> None:
    killed: list[int] = []
    with DaskCluster(workers=2) as cluster:

        def kill_once(chunk: Chunk) -> None:
            if not killed:
                killed.append(cluster.kill_worker(0))

        summary = score(
            parts_dir,
            tmp_path / "s",
            artifact,
            dask_address=cluster.address,
            on_chunk=kill_once,
        )
        assert cluster.workers[0].poll() is not None and cluster.workers[1].poll() is None
    assert killed and summary.chunks == 6  # type: ignore[attr-defined]
    assert sha256s(tmp_path / "s") == sha256s(reference / "scores")


def test_partition_file_schema_is_the_source_schema(data_path: Path, parts_dir: Path) -> None:
    source = plain_schema(pq.read_schema(data_path))
    for path in parts_dir.glob("part-*.parquet"):
        assert pq.read_schema(path).remove_metadata() == source
