"""The model combined with BG/NBD per output, chosen out of time, and the planner's totals,
on the CDNOW sample (2,357 real customers, 1997-01 .. 1998-06)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.builders import FeatureConfig, build_features
from features.sources.cdnow import read_cdnow
from tests.training.conftest import simulate_log
from training.dataset.labels import build_labels
from training.evaluation.backtest import evaluate
from training.evaluation.backtest_result import BacktestResult
from training.evaluation.baseline_predictions import rfm_at
from training.models.btyd_features import rfm_day_inputs
from training.models.bundle import RetainModels
from training.models.combine import (
    FULL_EVIDENCE_SNAPSHOTS,
    MIN_GAIN,
    SAME_SEASON_DAYS,
    Combination,
    btyd_outputs,
    fit_combination,
    season_gap_days,
)
from training.models.shadow import Shadow

AS_OF = pd.Timestamp("1998-01-01", tz="UTC")
H = 90
SMALL = {
    "horizon_days": H,
    "n_snapshots": 6,
    "num_boost_round": 40,
    "num_threads": 1,
    "baseline_sample": 1000,
    "n_snapshots_365": 1,
}


@pytest.fixture(scope="module")
def log(cdnow_sample_path: Path) -> pd.DataFrame:
    return read_cdnow(cdnow_sample_path).log


@pytest.fixture(scope="module")
def fitted(log: pd.DataFrame) -> RetainModels:
    return RetainModels(**SMALL).fit(log, AS_OF)


@pytest.fixture(scope="module")
def result(log: pd.DataFrame) -> BacktestResult:
    return evaluate(log, AS_OF, H, models_params=SMALL, baseline_penalizer=0.001)


def test_weights_come_from_an_out_of_time_forecast_before_the_test_window(
    fitted: RetainModels,
) -> None:
    details = fitted.combination_.details
    source = details["weights_from"]
    assert source["out_of_time"] is True
    # the shadow forecasts the latest training window (as_of - H) from snapshots whose
    # label windows end by its start: the situation of the real model one horizon earlier
    scored = pd.Timestamp(source["scored_at"])
    assert scored == AS_OF - pd.Timedelta(days=H)
    trained = [pd.Timestamp(c) for c in source["trained_on"]]
    assert trained and max(trained) <= scored - pd.Timedelta(days=H)
    # six monthly cutoffs 1997-05-06 .. 1997-10-03; three end by 1997-10-03
    assert len(trained) == details["evidence_snapshots"] == 3


def test_thin_evidence_pulls_the_levels_toward_bgnbd(fitted: RetainModels) -> None:
    combo, details = fitted.combination_, fitted.combination_.details
    shrink = details["evidence_shrink"]
    assert shrink == pytest.approx(3 / FULL_EVIDENCE_SNAPSHOTS)
    # a 90-day shadow window is another season than the forecast's: the model is kept
    assert details["weights_from"]["another_season"] is True
    for name in ("count", "spend", "churn"):
        chosen = details["chosen_before_shrink"][name]
        factor = 1.0 if name == "churn" else shrink  # the churn level is recalibrated instead
        assert getattr(combo, f"{name}_weight") == pytest.approx(1.0 * factor)
        # a blend replaces the model only for a material gain on the shadow window
        assert chosen["loss"] <= chosen["loss_model"]
        if chosen["weight"] < 1.0:
            assert chosen["loss"] <= (1 - MIN_GAIN) * chosen["loss_model"]
            assert chosen["loss"] <= chosen["loss_btyd"] + 1e-12


def test_weight_zero_is_bgnbd_and_predictions_apply_the_fitted_weights(
    fitted: RetainModels, log: pd.DataFrame
) -> None:
    features = build_features(log, AS_OF, FeatureConfig(horizon_days=H))
    x = fitted._frame_input(features)
    own = (fitted.churn_.predict_proba(x), fitted.count_.predict(x), fitted.spend_.predict(x))
    classic = fitted.combination_.bgnbd_state
    base = btyd_outputs(x, None, classic)
    p, c, s = Combination(0.0, 0.0, 0.0, (1.0, 0.0), bgnbd_state=classic).apply(x, *own)
    np.testing.assert_allclose(p, np.clip(base["churn"], 1e-6, 1 - 1e-6), rtol=1e-9)
    np.testing.assert_allclose(c, base["count"])
    np.testing.assert_allclose(s, base["spend"])
    scores = fitted.predict(log, AS_OF)
    w = fitted.combination_.count_weight
    assert 0.0 <= w <= 1.0
    np.testing.assert_allclose(
        scores["expected_purchases_horizon"], w * own[1] + (1 - w) * base["count"], rtol=1e-12
    )
    assert not np.allclose(scores["churn_probability"], own[0])  # the latest season's map


def test_the_model_alone_skips_bgnbd_with_the_general_formulas_bytes(
    fitted: RetainModels, log: pd.DataFrame
) -> None:
    features = build_features(log, AS_OF, FeatureConfig(horizon_days=H))
    x = fitted._frame_input(features)
    own = (fitted.churn_.predict_proba(x), fitted.count_.predict(x), fitted.spend_.predict(x))
    classic = fitted.combination_.bgnbd_state
    platt = (0.83, -0.21)
    p, c, s = Combination(1.0, 1.0, 1.0, platt, bgnbd_state=classic).apply(x, *own)
    base = btyd_outputs(x, None, classic)
    q = np.clip(own[0], 1e-6, 1 - 1e-6)
    z = 1.0 * (np.log(q) - np.log1p(-q)) + 0.0 * np.log(base["churn"])
    general = 1.0 / (1.0 + np.exp(-(platt[0] * z + platt[1])))
    assert p.tobytes() == general.tobytes()
    assert c.tobytes() == (1.0 * own[1] + 0.0 * base["count"]).tobytes()
    assert s.tobytes() == (1.0 * own[2] + 0.0 * base["spend"]).tobytes()
    # one weight below 1 uses the classic model for that output
    _, c_half, _ = Combination(count_weight=0.5, bgnbd_state=classic).apply(x, *own)
    assert not np.allclose(c_half, own[1])


def test_saved_model_scores_with_the_same_combination(
    fitted: RetainModels, log: pd.DataFrame, tmp_path: Path
) -> None:
    loaded = RetainModels.load(fitted.save(tmp_path / "models"))
    assert loaded.combination_.to_dict() == fitted.combination_.to_dict()
    pd.testing.assert_frame_equal(loaded.predict(log, AS_OF), fitted.predict(log, AS_OF))


def test_backtest_reports_weights_calibration_and_the_total_with_its_interval(
    result: BacktestResult,
) -> None:
    data = result.to_dict()
    combination = data["combination"]
    assert {"count_weight", "spend_weight", "churn_weight", "weights_from"} <= set(combination)
    fit_ece = combination["calibration_ece_latest_window"]
    assert 0.0 <= fit_ece < 0.2
    labels = result.labels
    for name, column in (("purchases", "n_purchase_days_h"), ("spend", "spend_h")):
        total = data["totals"][name]
        assert total["actual"] == pytest.approx(float(labels[column].sum()))
        assert total["low"] < total["forecast"] < total["high"]
        forecast = result.predictions["model"][
            "expected_purchases_horizon" if name == "purchases" else "expected_spend_horizon"
        ].sum()
        assert total["forecast"] == pytest.approx(float(forecast))
        assert total["covered"] == (total["low"] <= total["actual"] <= total["high"])
        # six held-out cutoffs and the shadow's out-of-time forecast
        assert total["past_n"] == 7
        assert 0 <= total["past_covered"] <= total["past_n"]
    notes = "\n".join(result.notes())
    assert f"churn calibrator ECE on its window {fit_ece:.4f}" in notes
    assert "total purchases: forecast" in notes


def test_short_log_without_out_of_time_evidence_falls_back_toward_bgnbd(
    log: pd.DataFrame,
) -> None:
    # two snapshots (1997-08-04 and 1997-09-03 for 1997-12-02 - 90 d): none ends a horizon
    # before the latest, so no shadow; the held-out customers choose, shrunk by 2 / 6
    params = {**SMALL, "n_snapshots": 2}
    models = RetainModels(**params).fit(log, "1997-12-02")
    details = models.combination_.details
    assert details["weights_from"]["out_of_time"] is False
    assert details["evidence_shrink"] == pytest.approx(2 / FULL_EVIDENCE_SNAPSHOTS)
    for name in ("count", "spend"):
        assert getattr(models.combination_, f"{name}_weight") <= 2 / FULL_EVIDENCE_SNAPSHOTS


def test_combination_off_is_the_model_alone(log: pd.DataFrame) -> None:
    params = {**SMALL, "n_snapshots": 2, "combine_outputs": False}
    models = RetainModels(**params).fit(log, "1997-12-02")
    assert models.combination_.details["identity"] is True
    features = build_features(log, "1997-12-02", FeatureConfig(horizon_days=H))
    x = models._frame_input(features)
    scores = models.predict_features(features, "1997-12-02")
    np.testing.assert_allclose(scores["expected_purchases_horizon"], models.count_.predict(x))


# A simulated log with purchases at every hour of the day (the CDNOW sample has dates only):
# exact timestamps and purchase days give different (t_x, T) unless rounded to whole days.
TIMED_AS_OF = pd.Timestamp("2024-09-01", tz="UTC")


@pytest.fixture(scope="module")
def timed_log() -> pd.DataFrame:
    return simulate_log(1500, seed=11)


def test_the_classic_inputs_are_the_backtests_rfm_summary(timed_log: pd.DataFrame) -> None:
    features = build_features(timed_log, TIMED_AS_OF, FeatureConfig(horizon_days=H))
    rfm = rfm_at(timed_log, TIMED_AS_OF).reindex(features.index.astype(str))
    x, tx, age = rfm_day_inputs(features)
    assert (features["recency_days"] % 1 != 0).mean() > 0.5  # most last purchases mid-day
    np.testing.assert_array_equal(x, rfm["frequency"].to_numpy())
    np.testing.assert_array_equal(tx, rfm["recency"].to_numpy())
    np.testing.assert_array_equal(age, rfm["T"].to_numpy())


def test_weight_zero_reproduces_the_backtests_bgnbd_forecast_exactly(
    timed_log: pd.DataFrame,
) -> None:
    # the backtest's own penalty (0: plain maximum likelihood) and all customers
    params = {**SMALL, "baseline_sample": 100_000}
    result = evaluate(timed_log, TIMED_AS_OF, H, models_params=params, methods=("model", "bgnbd"))
    models = result.fitted
    assert models is not None
    features = build_features(timed_log, TIMED_AS_OF, FeatureConfig(horizon_days=H))
    features.index = pd.Index(features.index.astype(str), name="customer_id")
    x = models._frame_input(features.reindex(result.labels.index))
    own = (models.churn_.predict_proba(x), models.count_.predict(x), models.spend_.predict(x))
    classic = models.combination_.bgnbd_state
    assert classic is not None
    p, c, _ = Combination(0.0, 0.0, 0.0, (1.0, 0.0), bgnbd_state=classic).apply(x, *own)
    bgnbd = result.predictions["bgnbd"]
    np.testing.assert_array_equal(c, bgnbd["expected_purchases_horizon"].to_numpy())
    # the boosters' own BG/NBD columns (penalty 0.001, exact times: the weight-0 end before)
    # are another forecast
    own_bgnbd = btyd_outputs(x)["count"]
    assert np.abs(own_bgnbd / c - 1).max() > 1e-3
    silent = np.clip(bgnbd["churn_probability"].to_numpy(), 1e-6, 1 - 1e-6)  # the logit's clip
    np.testing.assert_allclose(p, silent, rtol=1e-9)
    assert classic["bgnbd"]["params"] == result.baseline_params["bgnbd"]
    assert models.baseline_penalizer == 0.0


def test_a_shadow_of_another_season_keeps_the_model_and_one_of_the_same_season_blends(
    fitted: RetainModels, log: pd.DataFrame
) -> None:
    # the shadow's window starts a horizon before the forecast's
    assert season_gap_days(30) == 30 and season_gap_days(90) == 90
    assert season_gap_days(365) == pytest.approx(0.25) and season_gap_days(300) == 65.25
    # the fitted model's shadow window, forecast by the model with its level overshot by
    # 60 % (as on a new season): its loss there wants BG/NBD; with a 30-day horizon that
    # window is the forecast's season and the blend applies, with 90 days the model is kept
    details = fitted.combination_.details
    cutoff = pd.Timestamp(details["weights_from"]["scored_at"])
    features = build_features(log, cutoff, FeatureConfig(horizon_days=H))
    labels = build_labels(log, cutoff, H).reindex(features.index)
    x = fitted._frame_input(features).to_frame(features.index)
    frame = pd.concat([x, labels], axis=1).assign(cutoff=cutoff)
    own = {
        "churn": fitted.churn_.predict_proba(x),
        "count": 1.6 * fitted.count_.predict(x),
        "spend": 1.6 * fitted.spend_.predict(x),
    }
    shadow = Shadow(frame, own, ["1997-01-01"] * FULL_EVIDENCE_SNAPSHOTS, cutoff.isoformat())
    near = fit_combination(frame, own, x, FULL_EVIDENCE_SNAPSHOTS, shadow, horizon_days=30)
    far = fit_combination(frame, own, x, FULL_EVIDENCE_SNAPSHOTS, shadow, horizon_days=H)
    assert 30 <= SAME_SEASON_DAYS < H
    near_w = {k: v["weight"] for k, v in near.details["chosen_before_shrink"].items()}
    assert (near.count_weight, near.spend_weight, near.churn_weight) == (
        near_w["count"],
        near_w["spend"],
        near_w["churn"],
    )
    assert min(near_w.values()) < 1.0
    assert (far.count_weight, far.spend_weight, far.churn_weight) == (1.0, 1.0, 1.0)
    assert far.details["weights_from"]["another_season"] is True
