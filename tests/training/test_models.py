"""RetainModels on a small simulated log: probabilities, calibration, consistency, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from features.builders import FeatureConfig, build_features
from tests.training.conftest import simulate_log
from training.dataset.labels import build_labels
from training.models.btyd_features import baseline_offset
from training.models.bundle import PREDICTION_COLUMNS, RetainModels
from training.models.calibration import ProbabilityCalibrator
from training.models.churn import ChurnModel
from training.models.spend import SpendModel
from training.models.timing import (
    TimingModel,
    align_survival,
    day_bins,
    person_period,
    survival_summaries,
)

AS_OF = pd.Timestamp("2024-09-01", tz="UTC")
H = 90
SMALL = {
    "num_boost_round": 30,
    "num_threads": 1,
    "n_snapshots": 3,
    "n_snapshots_365": 2,
    "baseline_sample": 400,
}


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return simulate_log(1500, seed=11)


@pytest.fixture(scope="module")
def fitted(log: pd.DataFrame) -> RetainModels:
    return RetainModels(horizon_days=H, use_baselines=True, **SMALL).fit(log, AS_OF)


@pytest.fixture(scope="module")
def features(log: pd.DataFrame) -> pd.DataFrame:
    return build_features(log, AS_OF, FeatureConfig(horizon_days=H))


@pytest.fixture(scope="module")
def scores(fitted: RetainModels, log: pd.DataFrame) -> pd.DataFrame:
    return fitted.predict(log, AS_OF)


# ---- hand-checked building blocks -------------------------------------------------------


def test_day_bins() -> None:
    assert day_bins(90).tolist() == [0, 7, 14, 30, 60, 90]
    assert day_bins(20).tolist() == [0, 7, 14, 20]


def test_person_period_by_hand() -> None:
    edges = np.array([0.0, 7.0, 14.0, 30.0])
    # bought on day 3 (bin 0), day 14 (bin 2: 14 starts the third bin), censored at 30
    rows, bins, target = person_period(np.array([3.0, 14.0, 30.0]), np.array([1, 1, 0]), edges)
    assert rows.tolist() == [0, 1, 1, 1, 2, 2, 2]
    assert bins.tolist() == [0, 0, 1, 2, 0, 1, 2]
    assert target.tolist() == [1, 0, 0, 1, 0, 0, 0]


def test_align_survival_by_hand() -> None:
    surv = np.array([[1.0, 0.9, 0.8, 0.5]])
    # log(0.25) / log(0.5) = 2: every S is squared
    out = align_survival(surv, np.array([0.25]))
    np.testing.assert_allclose(out, [[1.0, 0.81, 0.64, 0.25]])


def test_survival_summaries_constant_hazard() -> None:
    edges = np.array([0.0, 10.0])
    summary = survival_summaries(np.array([[1.0, 0.5]]), edges)
    lam = np.log(2.0) / 10.0
    # truncated exponential mean on [0, 10): 1/lam - 10 * S(10) / (1 - S(10))
    assert summary["expected_days_to_next"][0] == pytest.approx(1 / lam - 10.0)
    assert summary["median_days_to_next"][0] == pytest.approx(10.0)
    assert summary["p_purchase_7d"][0] == pytest.approx(1 - np.exp(-lam * 7))
    assert summary["p_purchase_horizon"][0] == pytest.approx(0.5)
    never = survival_summaries(np.array([[1.0, 0.8]]), edges)
    assert np.isnan(never["median_days_to_next"][0])


# ---- the fitted bundle ------------------------------------------------------------------


@pytest.mark.slow
def test_prediction_columns_and_ranges(scores: pd.DataFrame, features: pd.DataFrame) -> None:
    assert list(scores.columns) == list(PREDICTION_COLUMNS)
    assert scores.index.equals(features.index)
    probs = scores[["churn_probability", "p_purchase_7d", "p_purchase_30d", "p_purchase_horizon"]]
    assert ((probs >= 0) & (probs <= 1)).all().all()
    assert (scores["expected_days_to_next"].between(0, H)).all()
    assert (scores["expected_purchases_horizon"] >= 0).all()
    assert (scores["expected_spend_365d"] >= scores["expected_spend_horizon"] - 1e-9).all()
    assert (scores["expected_next_purchase_date"] >= AS_OF).all()


def test_timing_agrees_with_churn(scores: pd.DataFrame) -> None:
    np.testing.assert_allclose(
        scores["p_purchase_horizon"], 1.0 - scores["churn_probability"], atol=1e-12
    )
    assert (scores["p_purchase_7d"] <= scores["p_purchase_30d"] + 1e-12).all()
    assert (scores["p_purchase_30d"] <= scores["p_purchase_horizon"] + 1e-12).all()
    median = scores["median_days_to_next"]
    assert (median.isna() == (scores["churn_probability"] > 0.5)).all()


def test_calibrated_on_holdout_cutoff(scores: pd.DataFrame, log: pd.DataFrame) -> None:
    """The label window [AS_OF, AS_OF + 90 d) was never seen in training."""
    labels = build_labels(log, AS_OF, H).reindex(scores.index)
    assert scores["churn_probability"].mean() == pytest.approx(labels["churn"].mean(), abs=0.04)
    # churn ranking is informative
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels["churn"], scores["churn_probability"]) > 0.75
    total = scores["expected_spend_horizon"].sum() / labels["spend_h"].sum()
    assert total == pytest.approx(1.0, abs=0.25)
    count = scores["expected_purchases_horizon"].sum() / labels["n_purchase_days_h"].sum()
    assert count == pytest.approx(1.0, abs=0.25)


@pytest.mark.slow
def test_save_load_round_trip(fitted: RetainModels, features: pd.DataFrame, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = RetainModels.load(tmp_path / "m")
    pd.testing.assert_frame_equal(
        loaded.predict_features(features, AS_OF),
        fitted.predict_features(features, AS_OF),
        check_exact=True,
    )
    assert loaded.get_params() == fitted.get_params()
    # the training snapshots (used and dropped, with why) travel with the model
    assert loaded.snapshots_ == fitted.snapshots_
    assert [s["used"] for s in fitted.snapshots_ if s["horizon_days"] == H] == [True] * 3


def test_get_params_returns_every_init_parameter_and_rebuilds_the_estimator() -> None:
    model = RetainModels(horizon_days=30, lgb_params={"num_leaves": 3}, **SMALL)
    params = model.get_params()
    assert params["horizon_days"] == 30 and params["lgb_params"] == {"num_leaves": 3}
    assert params["num_boost_round"] == SMALL["num_boost_round"]
    assert params["use_baselines"] is True  # a default
    assert len(params) == 22
    assert RetainModels(**params).get_params() == params


def test_clone_gives_an_unfitted_estimator_with_equal_params(
    fitted: RetainModels, features: pd.DataFrame
) -> None:
    check_is_fitted(fitted)
    learned = set(vars(fitted)) - set(fitted.get_params())
    assert "churn_" in learned and all(name.endswith("_") for name in learned)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not any(name.endswith("_") for name in vars(copy))
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    with pytest.raises(NotFittedError, match="not fitted"):
        copy.predict_features(features, AS_OF)


def test_set_params_changes_the_copy_only(fitted: RetainModels) -> None:
    copy = clone(fitted)
    assert copy.set_params(horizon_days=30, lgb_params={"num_leaves": 3}) is copy
    assert copy.get_params()["horizon_days"] == 30 and copy.horizon_days == 30
    assert copy.get_params()["lgb_params"] == {"num_leaves": 3}
    assert fitted.horizon_days == H and fitted.lgb_params is None
    round_trip = clone(copy)
    assert round_trip.get_params() == copy.get_params()
    with pytest.raises(ValueError, match="no_such_parameter"):
        copy.set_params(no_such_parameter=1)


def test_each_model_restores_its_own_state(fitted: RetainModels, features: pd.DataFrame) -> None:
    x = fitted.model_input(features.to_numpy(dtype=np.float64), list(features.columns))
    churn = ChurnModel.from_state(
        json.loads(json.dumps(fitted.churn_.to_state())), fitted.churn_.booster_
    )
    np.testing.assert_array_equal(churn.predict_proba(x), fitted.churn_.predict_proba(x))
    timing = TimingModel.from_state(
        json.loads(json.dumps(fitted.timing_.to_state())), fitted.timing_.booster_
    )
    np.testing.assert_array_equal(timing.survival(x), fitted.timing_.survival(x))
    for model in (fitted.count_, fitted.spend_):
        state = json.loads(json.dumps(model.to_state()))
        again = SpendModel.from_state(state, model.booster_)
        assert again.objective == model.objective and again.scale_ == model.scale_
        np.testing.assert_array_equal(again.predict(x), model.predict(x))
    with pytest.raises(NotFittedError):
        SpendModel().to_state()


def test_column_order_does_not_matter(fitted: RetainModels, features: pd.DataFrame) -> None:
    shuffled = features[list(np.random.default_rng(0).permutation(features.columns))]
    shuffled = shuffled.assign(unrelated=1.0)
    pd.testing.assert_frame_equal(
        fitted.predict_features(shuffled, AS_OF),
        fitted.predict_features(features, AS_OF),
        check_exact=True,
    )


def test_missing_column_is_named(fitted: RetainModels, features: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="recency_days"):
        fitted.predict_features(features.drop(columns="recency_days"), AS_OF)


def test_platt_calibration_keeps_ranking_and_round_trips() -> None:
    raw = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 1, 0, 1, 1])
    cal = ProbabilityCalibrator("platt").fit(raw, y)
    out = cal.transform(raw)
    assert np.all(np.diff(out) > 0)
    again = ProbabilityCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again.transform(raw), out)
    with pytest.raises(ValueError, match="single class"):
        ProbabilityCalibrator("platt").fit(raw, np.ones(6))


def test_not_fitted_error(features: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        RetainModels().predict_features(features, AS_OF)


def test_contributions_add_up_to_raw_log_odds(fitted: RetainModels, features: pd.DataFrame) -> None:
    x = fitted._model_input(features.iloc[:50])
    full = fitted.churn_.contributions(x)
    assert (full["baseline_offset"] != 0).any()
    np.testing.assert_allclose(
        full.sum(axis=1), fitted.churn_.predict_log_odds(x), rtol=1e-9, atol=1e-9
    )


def test_path_contributions_add_up_and_rank_like_shap(
    fitted: RetainModels, features: pd.DataFrame
) -> None:
    """Saabas path contributions: exact decomposition of the trees' log-odds, and their
    strongest feature is mostly TreeSHAP's strongest feature."""
    x = fitted._model_input(features)
    paths, bias = fitted.churn_.path_contributions(x)
    offset = baseline_offset(fitted.churn_.offset, x)
    assert offset is not None
    np.testing.assert_allclose(
        paths.sum(axis=1) + bias + offset, fitted.churn_.predict_log_odds(x), rtol=0, atol=1e-9
    )
    shap = fitted.churn_.contributions(x)[list(x.columns)].to_numpy()
    agree = np.mean(np.argmax(paths, axis=1) == np.argmax(shap, axis=1))
    assert agree > 0.5, agree
    reasons = fitted.feature_contributions(features.iloc[:50])
    assert list(reasons.columns) == list(x.columns)
    assert "bias" not in reasons
    np.testing.assert_array_equal(reasons.to_numpy(), paths[:50])


@pytest.mark.slow
def test_compiled_boosters_predict_what_lightgbm_predicts(
    fitted: RetainModels, features: pd.DataFrame, tmp_path: Path
) -> None:
    """lleaves machine code from the saved text gives LightGBM's numbers; empty input too."""
    compiled = RetainModels.load(fitted.save(tmp_path / "models")).compile()
    assert compiled.churn_.compiled and not fitted.churn_.compiled
    expected = fitted.predict_features(features, AS_OF)
    got = compiled.predict_features(features, AS_OF)
    numbers = [c for c in PREDICTION_COLUMNS if c != "expected_next_purchase_date"]
    np.testing.assert_allclose(got[numbers], expected[numbers], rtol=1e-9, atol=1e-12)
    assert (got["churn_probability"] != 0.5).all()
    empty = compiled.predict_features(features.iloc[:0], AS_OF)
    assert empty.empty and list(empty.columns) == list(PREDICTION_COLUMNS)
    assert compiled.feature_contributions(features.iloc[:0]).shape == (
        0,
        len(compiled.input_names_),
    )
    # reasons: the compiled leaf lookup routes every row as LightGBM's pred_leaf does, so
    # the path contributions are the same numbers, bit for bit; values at LightGBM's zero
    # threshold (|x| <= 1e-35 reads as 0) route alike too
    tiny = features.iloc[:40].copy()
    tiny.iloc[::3, 0] = 1e-36
    tiny.iloc[1::3, 0] = -1e-36
    for frame in (features, tiny):
        pd.testing.assert_frame_equal(
            compiled.feature_contributions(frame),
            fitted.feature_contributions(frame),
            check_exact=True,
        )


def test_no_leakage_and_determinism(log: pd.DataFrame) -> None:
    """Rows at or after as_of cannot influence fit(log, as_of); same seed, same model."""
    params = {**SMALL, "use_baselines": False, "n_snapshots": 2}
    full = RetainModels(**params).fit(log, AS_OF)
    past = RetainModels(**params).fit(log.loc[log["timestamp"] < AS_OF], AS_OF)
    feats = build_features(log, AS_OF, FeatureConfig(horizon_days=H))
    pd.testing.assert_frame_equal(
        full.predict_features(feats, AS_OF), past.predict_features(feats, AS_OF), check_exact=True
    )


@pytest.mark.slow
def test_a_cancelled_only_order_predicts_no_spend(log: pd.DataFrame) -> None:
    """Money is net of returns in the features and the spend targets (features.log.returns): a
    customer whose only order was cancelled the same day has spent nothing, and is not
    predicted to spend that order's value again."""
    placed = AS_OF - pd.Timedelta(days=20)
    extra = pd.DataFrame(
        {
            "customer_id": ["zz-cancelled", "zz-cancelled"],
            "timestamp": pd.DatetimeIndex(
                [placed + pd.Timedelta(hours=10), placed + pd.Timedelta(hours=17)]
            ).as_unit("us"),
            "amount": [77_000.0, 77_000.0],
            "quantity": 1.0,
            "order_id": ["big-1", "Cbig-1"],
            "discount": False,
            "is_return": [False, True],
        }
    )
    full = pd.concat([log.assign(customer_id=log["customer_id"].astype(str)), extra])
    full["customer_id"] = full["customer_id"].astype("category")
    full = full.sort_values(["customer_id", "timestamp", "order_id"]).reset_index(drop=True)
    full = full[list(log.columns)]
    models = RetainModels(horizon_days=H, **SMALL).fit(full, AS_OF)
    scores = models.predict(full, AS_OF)
    row = scores.loc["zz-cancelled"]
    assert row["expected_spend_horizon"] < 0.001 * 77_000
    assert row["expected_spend_365d"] < 0.001 * 77_000
