"""An uplift model added to a copy of an artifact: old one untouched, new one hash-checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.builders import FeatureConfig, build_features
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from training.artifact import (
    MANIFEST_NAME,
    ArtifactError,
    add_uplift,
    load_artifact,
    save_artifact,
)
from training.models.bundle import RetainModels
from training.models.uplift import UpliftModel

SCORE_AT = pd.Timestamp("2023-12-01", tz="UTC")


@pytest.fixture(scope="module")
def small_log() -> pd.DataFrame:
    raw = generate_purchase_log(600, seed=5, start="2023-01-01", end="2024-03-31").log
    return canonicalize(raw).log


@pytest.fixture(scope="module")
def source(small_log: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = RetainModels(
        horizon_days=30,
        n_snapshots=2,
        num_boost_round=8,
        early_stopping_rounds=4,
        num_threads=1,
        use_baselines=False,
        lgb_params={"min_data_in_leaf": 10, "num_leaves": 7},
    ).fit(small_log, SCORE_AT)
    return save_artifact(
        tmp_path_factory.mktemp("art") / "artifact",
        models,
        feature_config=FeatureConfig(horizon_days=30),
        segment_config=SegmentConfig(),
        policy_yaml="version: 1\nrules: []\n",
    )


@pytest.fixture(scope="module")
def features(small_log: pd.DataFrame) -> pd.DataFrame:
    return build_features(small_log, SCORE_AT, FeatureConfig(horizon_days=30))


@pytest.fixture(scope="module")
def uplift(features: pd.DataFrame) -> UpliftModel:
    rng = np.random.default_rng(1)
    treated = rng.integers(0, 2, len(features))
    bought = (rng.random(len(features)) < 0.2 + 0.3 * treated).astype(int)
    return UpliftModel(num_boost_round=10, min_data_in_leaf=20).fit(features, treated, bought)


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_artifact_without_uplift_loads_with_none(source: Path) -> None:
    assert load_artifact(source).uplift is None


@pytest.mark.slow
def test_add_uplift_writes_a_new_artifact_and_leaves_the_old_one(
    source: Path, uplift: UpliftModel, features: pd.DataFrame, tmp_path: Path
) -> None:
    before = digests(source)
    out = add_uplift(source, uplift, tmp_path / "with_uplift", uplift_metadata={"n": 7})
    assert digests(source) == before
    after = digests(out)
    # every file of the source is there, byte for byte, manifest aside
    assert {k: v for k, v in after.items() if k in before and k != MANIFEST_NAME} == {
        k: v for k, v in before.items() if k != MANIFEST_NAME
    }
    assert sorted(k for k in after if k not in before) == [
        "uplift/uplift_control.lgb.txt",
        "uplift/uplift_model.json",
        "uplift/uplift_treated.lgb.txt",
    ]
    old, new = (json.loads((d / MANIFEST_NAME).read_text()) for d in (source, out))
    assert new["uplift"] == {"n": 7}
    assert {k: v for k, v in new.items() if k not in ("files", "uplift", "uplift_dir")} == {
        k: v for k, v in old.items() if k != "files"
    }
    loaded = load_artifact(out)
    np.testing.assert_array_equal(loaded.uplift.predict(features), uplift.predict(features))
    # a rerun gives the same bytes
    again = add_uplift(source, uplift, tmp_path / "again", uplift_metadata={"n": 7})
    assert digests(again) == after
    # and an uplift model replaces the one an artifact already holds
    other = UpliftModel(num_boost_round=3, min_data_in_leaf=20, learner="transformed_outcome")
    rng = np.random.default_rng(2)
    other.fit(features, rng.integers(0, 2, len(features)), rng.integers(0, 2, len(features)))
    replaced = add_uplift(out, other, tmp_path / "replaced")
    assert sorted(k for k in digests(replaced) if k.startswith("uplift/")) == [
        "uplift/uplift_model.json",
        "uplift/uplift_transformed.lgb.txt",
    ]
    assert load_artifact(replaced).uplift.learner == "transformed_outcome"


def test_target_that_exists_is_refused(source: Path, uplift: UpliftModel, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="immutable"):
        add_uplift(source, uplift, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_tampered_uplift_model_is_refused(
    source: Path, uplift: UpliftModel, tmp_path: Path
) -> None:
    out = add_uplift(source, uplift, tmp_path / "a")
    booster = out / "uplift" / "uplift_treated.lgb.txt"
    booster.write_text(booster.read_text().replace("leaf_value=", "leaf_value=9 ", 1))
    with pytest.raises(ArtifactError, match="sha256 mismatch for 'uplift/uplift_treated"):
        load_artifact(out)
    # a tampered source is refused before anything is written
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        add_uplift(out, uplift, tmp_path / "b")
    assert not (tmp_path / "b").exists()


class _WritesPickle:
    """An uplift model whose save writes a pickle: the write must fail and leave nothing."""

    def save(self, directory: Path, metadata: dict | None = None) -> None:
        directory.mkdir(parents=True)
        (directory / "model.pkl").write_bytes(b"\x80\x04")


def test_failed_write_leaves_no_artifact_and_no_staging(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match=r"'uplift/model.pkl'; only text and JSON"):
        add_uplift(source, _WritesPickle(), out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_uplift_scores_without_compiled_trees_with_one_warning_and_the_same_numbers(
    source: Path,
    uplift: UpliftModel,
    features: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import warnings

    from training.models.compiled import CompiledTreesUnavailable

    out = add_uplift(source, uplift, tmp_path / "with_uplift")
    values = features[list(uplift.feature_names_in_)].to_numpy(dtype=np.float64)
    names = list(uplift.feature_names_in_)
    compiled = load_artifact(out).uplift.compile()
    assert compiled.compiled
    expected = compiled.predict_values(values, names)
    monkeypatch.setitem(sys.modules, "lleaves", None)  # `import lleaves` -> ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = load_artifact(out).uplift.compile()
    assert not fallback.compiled
    assert [w.category for w in caught] == [CompiledTreesUnavailable]
    assert "lleaves" in str(caught[0].message)
    np.testing.assert_allclose(fallback.predict_values(values, names), expected, atol=1e-9)
    assert np.ptp(expected) > 0  # real, varying uplift scores
