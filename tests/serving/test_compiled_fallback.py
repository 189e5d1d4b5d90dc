"""Compiled trees are optional: without lleaves, or when compiling fails, scoring falls back to
LightGBM's own predictor with one warning and the same numbers."""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.builders import FeatureConfig
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from serving.offers.policy import OfferPolicy
from serving.scorer import NUMBER_COLUMNS, SCORE_COLUMNS, ScoringModel, score
from training.artifact import save_artifact
from training.models.bundle import RetainModels
from training.models.compiled import CompiledTreesUnavailable

AS_OF = "2024-06-01"
HORIZON = 30


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    raw = generate_purchase_log(300, seed=5, start="2023-01-01", end="2024-06-30").log
    return canonicalize(raw).log


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, log: pd.DataFrame) -> Path:
    # the default model (BTYD baselines on); only the boosting rounds are cut for speed
    models = RetainModels(
        horizon_days=HORIZON, n_snapshots=2, num_boost_round=12, early_stopping_rounds=4
    ).fit(log, "2024-04-01")
    return save_artifact(
        tmp_path_factory.mktemp("artifact") / "retain",
        models,
        feature_config=FeatureConfig(horizon_days=HORIZON),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.default().to_yaml(),
    )


@pytest.fixture(scope="module")
def compiled_scores(artifact: Path, log: pd.DataFrame) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompiledTreesUnavailable)
        model = ScoringModel.load(artifact)
    assert model.artifact.models.compiled
    return score(model, log, AS_OF)


def _lleaves_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lleaves", None)  # `import lleaves` -> ImportError


def _no_temporary_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    # lleaves compiles from a model file in a temporary directory; make that fail
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/retain-no-tmp")


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [(_lleaves_missing, "lleaves"), (_no_temporary_directory, "FileNotFoundError")],
    ids=["lleaves-missing", "compile-fails"],
)
@pytest.mark.slow
def test_scoring_falls_back_to_lightgbm_with_one_warning_and_the_same_numbers(
    artifact: Path,
    log: pd.DataFrame,
    compiled_scores: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    breakage: object,
    reason: str,
) -> None:
    breakage(monkeypatch)  # type: ignore[operator]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ScoringModel.load(artifact)
    fallback = [w for w in caught if issubclass(w.category, CompiledTreesUnavailable)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    assert reason in str(fallback[0].message)
    assert not model.artifact.models.compiled  # no booster, nor the reasons' leaf lookup

    fallen_back = score(model, log, AS_OF)
    assert len(fallen_back) == len(compiled_scores) > 100
    for column in NUMBER_COLUMNS:
        np.testing.assert_allclose(
            fallen_back[column].to_numpy(),
            compiled_scores[column].to_numpy(),
            rtol=0,
            atol=1e-9,
            err_msg=column,
        )
    others = [c for c in SCORE_COLUMNS if c not in NUMBER_COLUMNS]
    pd.testing.assert_frame_equal(fallen_back[others], compiled_scores[others])
