"""The count forecast's level chosen apart from its shape (training.models.level, issue 25)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.builders import FeatureConfig, build_features
from features.sources.cdnow import read_cdnow
from tests.training.conftest import simulate_log
from training.baselines.bgnbd import BetaGeoNBD
from training.baselines.degenerate import degenerate_fit
from training.evaluation.backtest_result import combination_lines
from training.evaluation.baseline_predictions import fit_btyd, rfm_at
from training.models.bundle import RetainModels
from training.models.combine import Combination
from training.models.level import choose_count_level, classic_count_total, level_factor

AS_OF = pd.Timestamp("2024-09-01", tz="UTC")
H = 30
SMALL: dict[str, Any] = {
    "horizon_days": H,
    "n_snapshots": 6,
    "num_boost_round": 40,
    "num_threads": 1,
    "baseline_sample": 1000,
    "n_snapshots_365": 1,
}


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return simulate_log(1500, seed=11)


def test_the_level_is_the_one_nearer_on_the_shadow_window_and_btyd_without_one() -> None:
    # (model, BG/NBD) aggregate errors on the shadow's out-of-time window
    assert choose_count_level((0.05, -0.01), False)["source"] == "btyd"
    assert choose_count_level((0.01, -0.05), False)["source"] == "model"
    assert choose_count_level((-0.02, 0.02), False)["source"] == "model"  # a tie keeps it
    # another season: that window says nothing of the forecast's level
    kept = choose_count_level((0.05, -0.01), True)
    assert kept["source"] == "model" and kept["shadow_error_btyd"] == -0.01
    # no out-of-time window (a short log): thin evidence falls back toward BTYD
    thin = choose_count_level(None, False)
    assert thin["source"] == "btyd" and "thin evidence" in thin["why"]


def test_the_factor_is_one_when_a_total_is_not_positive() -> None:
    assert level_factor(90.0, 100.0) == pytest.approx(0.9)
    assert level_factor(0.0, 100.0) == 1.0
    assert level_factor(90.0, 0.0) == 1.0
    assert level_factor(float("nan"), 100.0) == 1.0


def test_applying_a_level_rescales_the_count_only_and_survives_a_round_trip() -> None:
    rng = np.random.default_rng(0)
    churn, count, spend = rng.uniform(0, 1, 50), rng.gamma(1, 2, 50), rng.gamma(1, 30, 50)
    combo = Combination(churn_platt=(1.2, -0.1), count_level=0.8)
    p, c, s = combo.apply(pd.DataFrame(index=range(50)), churn, count, spend)
    np.testing.assert_array_equal(c, count * 0.8)
    np.testing.assert_array_equal(s, spend)
    p1, c1, _ = Combination(churn_platt=(1.2, -0.1)).apply(None, churn, count, spend)
    np.testing.assert_array_equal(p, p1)
    assert c1 is count  # level 1: the model's own array, the same bytes as before
    back = Combination.from_dict(combo.to_dict())
    assert back.count_level == 0.8
    # a combination saved before the level existed loads at the model's level
    old = {k: v for k, v in combo.to_dict().items() if k != "count_level"}
    assert Combination.from_dict(old).count_level == 1.0


def test_the_classic_total_is_pareto_nbd_only_where_bgnbd_alone_collapsed(
    log: pd.DataFrame,
) -> None:
    rfm = rfm_at(log, AS_OF)
    x, tx, age = (rfm[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T"))
    healthy = fit_btyd("bgnbd", rfm, 0.0)
    assert degenerate_fit("bgnbd", healthy.params_, float(age.max())) is None
    got = classic_count_total(rfm, healthy, H, 0.0)
    assert got["classic"] == "bgnbd" and "bgnbd_collapsed" not in got
    expected = healthy.conditional_expected_purchases(H / 7.0, x, tx, age).sum()
    assert got["classic_total"] == pytest.approx(float(expected), rel=1e-12)
    # a BG/NBD whose dropout collapsed (a / (a + b) ~ 0: an NBD without churn)
    collapsed = BetaGeoNBD.from_dict(
        {
            "model": "BetaGeoNBD",
            "params": {**healthy.params_, "a": 0.01, "b": 500.0},
        }
    )
    assert degenerate_fit("bgnbd", collapsed.params_, float(age.max())) is not None
    got = classic_count_total(rfm, collapsed, H, 0.0)
    pnbd = fit_btyd("paretonbd", rfm, 0.0)
    assert degenerate_fit("paretonbd", pnbd.params_, float(age.max())) is None
    assert got["classic"] == "paretonbd" and "bgnbd_collapsed" in got
    expected = pnbd.conditional_expected_purchases(H / 7.0, x, tx, age).sum()
    assert got["classic_total"] == pytest.approx(float(expected), rel=1e-12)


def test_a_short_log_forecasts_the_classic_total_with_the_models_shape(
    cdnow_sample_path: Path,
) -> None:
    # two snapshots: no shadow, so the level falls back to the classic (BTYD) total
    cdnow = read_cdnow(cdnow_sample_path).log
    params = {**SMALL, "horizon_days": 90, "n_snapshots": 2}
    models = RetainModels(**params).fit(cdnow, "1997-12-02")
    cutoff = pd.Timestamp("1997-12-02", tz="UTC")
    choice = models.combination_.details["count_level_choice"]
    assert choice["source"] == "btyd" and choice["factor"] == models.combination_.count_level
    assert models.combination_.count_level != 1.0
    scores = models.predict(cdnow, cutoff)["expected_purchases_horizon"].to_numpy()
    bg = BetaGeoNBD.from_dict(models.combination_.bgnbd_state["bgnbd"])  # type: ignore[index]
    rfm = rfm_at(cdnow, cutoff)
    classic = classic_count_total(rfm, bg, 90, models.baseline_penalizer)
    assert scores.sum() == pytest.approx(classic["classic_total"], rel=1e-9)
    # the shape is the model's: the same ranking and ratios as without the level
    models.combination_.count_level = 1.0
    unscaled = models.predict(cdnow, cutoff)["expected_purchases_horizon"].to_numpy()
    np.testing.assert_allclose(scores, unscaled * choice["factor"], rtol=1e-12)
    features = build_features(cdnow, cutoff, FeatureConfig(horizon_days=90))
    assert len(scores) == len(features) == len(rfm)


def test_a_same_season_shadow_sets_the_level_that_was_nearer_there(log: pd.DataFrame) -> None:
    models = RetainModels(**SMALL).fit(log, AS_OF)
    details = models.combination_.details
    source = details["weights_from"]
    assert source["out_of_time"] is True and source["season_gap_days"] == H
    choice = details["count_level_choice"]
    by_weight = details["chosen_before_shrink"]["count"]["aggregate_by_weight"]
    assert choice["shadow_error_model"] == by_weight["1.0"]
    assert choice["shadow_error_btyd"] == by_weight["0.0"]
    nearer = "btyd" if abs(by_weight["0.0"]) < abs(by_weight["1.0"]) else "model"
    assert choice["source"] == nearer
    assert (models.combination_.count_level != 1.0) == (nearer == "btyd")


def test_the_backtest_notes_say_whose_level_the_count_took() -> None:
    base = {"churn_weight": 1.0, "count_weight": 1.0, "spend_weight": 1.0, "weights_from": {}}
    chosen = {
        "source": "btyd",
        "why": "BG/NBD's total was nearer on the shadow",
        "classic": "paretonbd",
        "classic_total": 10180.4,
        "model_total": 10327.0,
        "factor": 0.9858,
    }
    lines = combination_lines({**base, "count_level_choice": chosen}, None)
    assert lines[-1] == (
        "count level: the classic paretonbd total 10,180 (the model's 10,327, factor 0.9858): "
        "BG/NBD's total was nearer on the shadow"
    )
    kept = {"source": "model", "why": "the shadow window is another season"}
    lines = combination_lines({**base, "count_level_choice": kept}, None)
    assert lines[-1] == "count level: the model's (the shadow window is another season)"
    assert len(combination_lines(base, None)) == 1  # saved before the level: no line
