"""A broken feature snapshot, at start-up and rewritten under a running service.

Real processes: ``retain serve`` must refuse a snapshot the model cannot score from with one
line (exit 2); a running ``bentoml serve`` whose snapshot is rewritten truncated, without
``as_of`` or without a model column must keep answering ``/score/ids`` from the last good
snapshot, refuse ``/admin/reload-snapshot`` with the reason, and say so in ``/readyz``.
Before: every ``/score/ids`` was a 500 while ``/readyz`` said ready, and a snapshot lacking
a model column passed start-up and reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.builders import build_features
from features.log.purchase_log import canonicalize
from features.synthetic.synth import generate_purchase_log
from serving.http.snapshot import FeatureSnapshot, SnapshotError, model_columns
from serving.scorer import ScoringModel
from tests.serving.server_artifact import server_artifact
from tests.serving.test_serve_startup import assert_one_line_refusal, base_env, retain_serve
from tests.serving.test_service_http import start_service, stop_service

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return generate_purchase_log(200, seed=7, start="2023-01-01", end="2024-06-30").log


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, raw_log: pd.DataFrame) -> Path:
    return server_artifact(tmp_path_factory.mktemp("artifact") / "retain-artifact", raw_log)


@pytest.fixture(scope="module")
def model(artifact_dir: Path) -> ScoringModel:
    return ScoringModel.load(artifact_dir)


def snapshot(raw_log: pd.DataFrame, model: ScoringModel, as_of: str) -> pd.DataFrame:
    log = canonicalize(raw_log).log
    features = build_features(log, as_of, model.artifact.feature_config)
    return features.reset_index().assign(as_of=pd.Timestamp(as_of, tz="UTC"))


def broken_snapshots(good: pd.DataFrame, model: ScoringModel, path: Path) -> dict[str, bytes]:
    """The bytes of each broken snapshot, by what is wrong with it."""
    column = model.artifact.models.feature_names_in_[0]
    out: dict[str, bytes] = {}
    good.to_parquet(path)
    out["truncated"] = path.read_bytes()[: path.stat().st_size // 2]
    out["garbage"] = b"not parquet at all\n" * 50
    good.drop(columns=["as_of"]).to_parquet(path)
    out["no as_of"] = path.read_bytes()
    good.drop(columns=[column]).to_parquet(path)
    out[column] = path.read_bytes()
    return out


def test_snapshot_without_a_model_column_is_refused_at_load(
    tmp_path: Path, raw_log: pd.DataFrame, model: ScoringModel
) -> None:
    good = snapshot(raw_log, model, "2024-05-01")
    path = tmp_path / "features.parquet"
    for reason, data in broken_snapshots(good, model, path).items():
        path.write_bytes(data)
        with pytest.raises(
            SnapshotError, match="Parquet" if reason in ("truncated", "garbage") else reason
        ):
            FeatureSnapshot.load(path, model_columns(model))
    good.to_parquet(path)
    loaded = FeatureSnapshot.load(path, model_columns(model))
    assert len(loaded.features) == len(good)
    assert set(model_columns(model)) <= set(loaded.features.names)


@pytest.mark.parametrize("case", ["truncated", "no as_of", "model column"])
def test_retain_serve_refuses_a_broken_snapshot_in_one_line(
    tmp_path: Path, raw_log: pd.DataFrame, model: ScoringModel, artifact_dir: Path, case: str
) -> None:
    path = tmp_path / "features.parquet"
    broken = broken_snapshots(snapshot(raw_log, model, "2024-05-01"), model, path)
    column = model.artifact.models.feature_names_in_[0]
    key = column if case == "model column" else case
    path.write_bytes(broken[key])
    args = ["--model-uri", str(artifact_dir), "--feature-snapshot", str(path)]
    done = retain_serve(args, tmp_path, base_env())
    line = assert_one_line_refusal(done, "SnapshotError", str(path))
    if case == "model column":
        assert f"lacks the model's column(s) {column}" in line


@pytest.fixture()
def live(
    tmp_path: Path, artifact_dir: Path, raw_log: pd.DataFrame, model: ScoringModel
) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "features.parquet"
    snapshot(raw_log, model, "2024-05-01").to_parquet(path)
    env = {
        "RETAIN_MODEL_URI": str(artifact_dir),
        "RETAIN_FEATURE_SNAPSHOT": str(path),
        "RETAIN_API_KEY": "",
    }
    process, url = start_service(env, tmp_path / "serve.log")
    try:
        yield url, path
    finally:
        stop_service(process)


def test_a_broken_rewrite_keeps_the_last_good_snapshot_and_readyz_says_why(
    live: tuple[str, Path], raw_log: pd.DataFrame, model: ScoringModel
) -> None:
    url, path = live
    good = snapshot(raw_log, model, "2024-05-01")
    ids = list(good["customer_id"].iloc[:3])

    def scored() -> list[dict[str, object]]:
        response = httpx.post(f"{url}/score/ids", json={"customer_ids": ids}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["results"]

    before = scored()
    assert [r["status"] for r in before] == ["scored"] * 3

    column = model.artifact.models.feature_names_in_[0]
    scratch = path.parent / "scratch.parquet"  # the snapshot is one file: not read
    for reason, data in broken_snapshots(good, model, scratch).items():
        path.write_bytes(data)
        assert scored() == before  # the last good snapshot, not a 500
        ready_response = httpx.get(f"{url}/readyz", timeout=10)
        assert ready_response.status_code == 200
        ready = ready_response.json()
        assert ready["snapshot_state"] == "stale"
        assert ready["snapshot_error"].startswith("last reload failed: ")
        assert str(path) in ready["snapshot_error"]
        expected = "Parquet" if reason in ("truncated", "garbage") else reason
        assert expected in ready["snapshot_error"]
        if reason == column:
            assert f"lacks the model's column(s) {column}" in ready["snapshot_error"]
        reload = httpx.post(f"{url}/admin/reload-snapshot", json={}, timeout=60)
        assert reload.status_code == 409
        assert expected in reload.json()["error"]
        assert "serving the one before" in reload.json()["error"]
        assert scored() == before

    # a good rewrite is picked up again and readyz says so (the same file as at start: ok)
    later = snapshot(raw_log, model, "2024-06-01")
    later.to_parquet(path)
    after = scored()
    assert [r["as_of"][:10] for r in after] == ["2024-06-01"] * 3
    ready = httpx.get(f"{url}/readyz", timeout=10).json()
    assert ready["snapshot_state"] == "ok"
    assert "snapshot_error" not in ready
    reload = httpx.post(f"{url}/admin/reload-snapshot", json={}, timeout=60)
    assert reload.status_code == 200
    assert reload.json()["as_of_max"].startswith("2024-06-01")
