"""The packaged artifact: round trip, and every way a tampered or unsafe directory is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.builders import FeatureConfig
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from training.artifact import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ArtifactError,
    load_artifact,
    save_artifact,
)
from training.models.bundle import RetainModels

POLICY_YAML = "version: 1\nrules: []\n"
SCORE_AT = pd.Timestamp("2023-12-01", tz="UTC")


@pytest.fixture(scope="module")
def small_log() -> pd.DataFrame:
    raw = generate_purchase_log(300, seed=11, start="2023-01-01", end="2024-03-31").log
    return canonicalize(raw).log


@pytest.fixture(scope="module")
def fitted(small_log: pd.DataFrame) -> RetainModels:
    return RetainModels(
        horizon_days=30,
        n_snapshots=2,
        num_boost_round=8,
        early_stopping_rounds=4,
        num_threads=1,
        use_baselines=False,
        lgb_params={"min_data_in_leaf": 10, "num_leaves": 7},
    ).fit(small_log, SCORE_AT)


@pytest.fixture(scope="module")
def saved(fitted: RetainModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_artifact(
        tmp_path_factory.mktemp("art") / "artifact",
        fitted,
        feature_config=FeatureConfig(horizon_days=30),
        segment_config=SegmentConfig(at_risk_days=100.0),
        policy_yaml=POLICY_YAML,
        metrics={"model": {"churn_auc": 0.81, "count_mae": None}},
    )


@pytest.fixture()
def copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy", symlinks=True))


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST_NAME).read_text())


def _write_manifest(path: Path, manifest: dict) -> None:
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.slow
def test_round_trip_predicts_identically(
    saved: Path, fitted: RetainModels, small_log: pd.DataFrame
) -> None:
    artifact = load_artifact(saved)
    pd.testing.assert_frame_equal(
        artifact.models.predict(small_log, SCORE_AT), fitted.predict(small_log, SCORE_AT)
    )
    assert artifact.policy_yaml == POLICY_YAML
    assert artifact.feature_config == FeatureConfig(horizon_days=30)
    assert artifact.segment_config == SegmentConfig(at_risk_days=100.0)
    assert artifact.horizon_days == 30
    assert artifact.metrics == {"model": {"churn_auc": 0.81, "count_mae": None}}


def test_manifest_lists_every_file_with_its_sha256(saved: Path) -> None:
    manifest = _manifest(saved)
    assert manifest["format"] == "retain-artifact"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["horizon_days"] == 30
    assert manifest["libraries"]["lightgbm"] == "4.7.0"
    schema = {c["name"]: c["dtype"] for c in manifest["input_schema"]}
    assert schema["timestamp"] == "datetime64[us, UTC]"
    assert schema["customer_id"] == "category"
    on_disk = {
        p.relative_to(saved).as_posix()
        for p in saved.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }
    assert set(manifest["files"]) == on_disk
    assert "offer_policy.yaml" in on_disk
    assert {Path(p).suffix for p in on_disk} <= {".txt", ".json", ".yaml"}
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((saved / rel).read_bytes()).hexdigest() == digest


def test_save_refuses_existing_artifact_and_leaves_no_temp_dirs(
    saved: Path, fitted: RetainModels
) -> None:
    with pytest.raises(ArtifactError, match="already exists"):
        save_artifact(saved, fitted, feature_config=None, segment_config=None, policy_yaml="x: 1")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["artifact"]


def test_tampered_file_is_refused(copy: Path) -> None:
    target = copy / "models" / "churn.lgb.txt"
    target.write_text(target.read_text().replace("tree", "TREE", 1))
    with pytest.raises(ArtifactError, match=r"sha256 mismatch for 'models/churn.lgb.txt'"):
        load_artifact(copy)


def test_tampered_policy_is_refused(copy: Path) -> None:
    (copy / "offer_policy.yaml").write_text("version: 1\nrules: [evil]\n")
    with pytest.raises(ArtifactError, match=r"sha256 mismatch for 'offer_policy\.yaml'"):
        load_artifact(copy)


def test_unlisted_file_is_refused(copy: Path) -> None:
    (copy / "models" / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match=r"'models/notes.txt' is not listed in the manifest"):
        load_artifact(copy)


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "m.joblib", "m.cloudpickle"])
def test_pickle_files_are_refused(copy: Path, name: str) -> None:
    (copy / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactError, match="is a pickle file"):
        load_artifact(copy)


def test_pickle_content_under_an_allowed_name_is_refused(copy: Path) -> None:
    payload = b"\x80\x04\x95K\x01."
    (copy / "models" / "extra.json").write_bytes(payload)
    manifest = _manifest(copy)
    manifest["files"]["models/extra.json"] = hashlib.sha256(payload).hexdigest()
    _write_manifest(copy, manifest)
    with pytest.raises(ArtifactError, match="pickle magic byte"):
        load_artifact(copy)


def test_other_extensions_are_refused(copy: Path) -> None:
    (copy / "hook.py").write_text("print('hi')")
    with pytest.raises(ArtifactError, match=r"'hook.py' has extension '.py'"):
        load_artifact(copy)


def test_symlinks_are_refused(copy: Path, tmp_path: Path) -> None:
    target = copy / "models" / "count.lgb.txt"
    outside = tmp_path / "outside.txt"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(outside, target)
    with pytest.raises(ArtifactError, match="is a symlink"):
        load_artifact(copy)


def test_paths_escaping_the_directory_are_refused(copy: Path) -> None:
    manifest = _manifest(copy)
    manifest["files"]["../outside.txt"] = "0" * 64
    _write_manifest(copy, manifest)
    with pytest.raises(ArtifactError, match="escapes the artifact directory"):
        load_artifact(copy)


def test_missing_listed_file_is_refused(copy: Path) -> None:
    (copy / "models" / "spend.lgb.txt").unlink()
    with pytest.raises(ArtifactError, match=r"missing: \['models/spend.lgb.txt'\]"):
        load_artifact(copy)


def test_wrong_format_version_is_refused(copy: Path) -> None:
    manifest = _manifest(copy)
    manifest["format_version"] = FORMAT_VERSION + 1
    _write_manifest(copy, manifest)
    with pytest.raises(
        ArtifactError, match=f"format_version {FORMAT_VERSION + 1} is not supported"
    ):
        load_artifact(copy)


def test_wrong_format_name_is_refused(copy: Path) -> None:
    manifest = _manifest(copy)
    manifest["format"] = "something-else"
    _write_manifest(copy, manifest)
    with pytest.raises(ArtifactError, match="format is 'something-else'"):
        load_artifact(copy)


def test_directory_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a retain artifact"):
        load_artifact(tmp_path)


def test_feature_config_other_than_the_models_is_refused_on_load(copy: Path) -> None:
    # the manifest is not hashed unless its digest was recorded outside: edit it in place
    manifest = _manifest(copy)
    assert manifest["feature_config"] == {"horizon_days": 30}
    manifest["feature_config"]["horizon_days"] = 90
    _write_manifest(copy, manifest)
    with pytest.raises(
        ArtifactError,
        match=r"feature_config \(horizon_days 90\) disagrees with the models' \(horizon_days 30\)",
    ):
        load_artifact(copy)


def test_tampered_artifact_is_one_error_line_from_the_cli(
    copy: Path, small_log: pd.DataFrame, tmp_path: Path
) -> None:
    manifest = _manifest(copy)
    manifest["feature_config"]["horizon_days"] = 90
    _write_manifest(copy, manifest)
    small_log.to_parquet(tmp_path / "log.parquet")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = ["--data", str(tmp_path / "log.parquet"), "--as-of", "2024-01-01"]
    args += ["--model-uri", str(copy), "--out", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "score", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("error:") == 1
    assert "disagrees with the models' (horizon_days 30)" in done.stderr
    assert not (tmp_path / "out").exists()


def test_save_refuses_a_feature_config_other_than_the_models(
    fitted: RetainModels, tmp_path: Path
) -> None:
    assert fitted.feature_config == FeatureConfig(horizon_days=30)
    with pytest.raises(ArtifactError, match="disagrees with the models'"):
        save_artifact(
            tmp_path / "artifact",
            fitted,
            feature_config=FeatureConfig(horizon_days=90),
            segment_config=None,
            policy_yaml=POLICY_YAML,
        )
    assert list(tmp_path.iterdir()) == []


def test_feature_config_caps_the_horizon_once() -> None:
    assert FeatureConfig.for_horizon(30) == FeatureConfig(horizon_days=30)
    assert FeatureConfig.for_horizon(400) == FeatureConfig(horizon_days=365)
    assert RetainModels(horizon_days=400).feature_config == FeatureConfig(horizon_days=365)
