"""The backtest: metric table on hand-made predictions, JSON shape, end-to-end runs."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from features.log.purchase_log import canonicalize
from features.log.schema import PurchaseLogError
from features.synthetic.synth import generate_purchase_log
from training.dataset.labels import build_labels
from training.evaluation.backtest import evaluate, result_from_predictions
from training.evaluation.backtest_result import METHODS, METRIC_KEYS, BacktestResult, best_methods

AS_OF = "2024-01-01"
H = 90

# Four customers known at the cutoff; 0 and 2 churn, 1 and 3 come back after 10 and 30 days.
LABELS = pd.DataFrame(
    {
        "churn": [1, 0, 1, 0],
        "event": [0, 1, 0, 1],
        "days_to_next": [90.0, 10.0, 90.0, 30.0],
        "n_purchase_days_h": [0, 2, 0, 1],
        "spend_h": [0.0, 50.0, 0.0, 20.0],
        "past_purchase_days": [1, 3, 1, 2],
    },
    index=pd.Index(["a", "b", "c", "d"], name="customer_id", dtype="str"),
)
MODEL = pd.DataFrame(
    {
        "churn_probability": [0.8, 0.3, 0.4, 0.6],
        "expected_days_to_next": [80.0, 20.0, 60.0, 70.0],
        "expected_purchases_horizon": [0.5, 1.5, 0.5, 1.5],
        "expected_spend_horizon": [5.0, 40.0, 10.0, 30.0],
    },
    index=LABELS.index,
)
RECENCY = pd.DataFrame(
    {
        "churn_probability": [0.9, 0.1, 0.6, 0.2],
        "expected_days_to_next": np.nan,
        "expected_purchases_horizon": [0.0, 2.0, 0.0, 0.5],
        "expected_spend_horizon": [0.0, 60.0, 0.0, 10.0],
    },
    index=LABELS.index,
)


@pytest.fixture(scope="module")
def hand_result() -> BacktestResult:
    return result_from_predictions(
        {"model": MODEL, "recency": RECENCY}, LABELS, AS_OF, H, training_seconds=1.5
    )


def test_model_metrics_by_hand(hand_result: BacktestResult) -> None:
    m = hand_result.metrics["model"]
    # churners score {0.8, 0.4}, stayers {0.3, 0.6}: 3 of 4 pairs ordered right
    assert m["churn_auc"] == pytest.approx(0.75)
    # precision 1 at recall 1/2 (0.8), 2/3 at recall 1 (0.4)
    assert m["churn_pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["brier"] == pytest.approx((0.2**2 + 0.3**2 + 0.6**2 + 0.6**2) / 4)
    # every probability sits alone in its tenth: ECE = mean |y - p|
    assert m["ece"] == pytest.approx((0.2 + 0.3 + 0.6 + 0.6) / 4)
    # top 10 % of 4 = 1 customer (a, churned) over a base rate of 1/2
    assert m["top_decile_lift"] == pytest.approx(2.0)
    # ranked by p * 90 + (1 - p) * E = a 88, b 41, c 72, d 82; comparable pairs: b(10) < a,
    # c, d (all right), d(30) < a (82 < 88, right), < c (82 > 72, wrong)
    assert m["timing_cindex"] == pytest.approx(4 / 5)
    # returners b and d: |20 - 10|, |70 - 30|
    assert m["timing_mae_days"] == pytest.approx((10 + 40) / 2)
    assert m["count_mae"] == pytest.approx(0.5)
    assert m["aggregate_error"] == pytest.approx(4 / 3 - 1)
    assert m["spend_mae"] == pytest.approx((5 + 10 + 10 + 10) / 4)
    assert m["spend_aggregate_error"] == pytest.approx(85 / 70 - 1)
    # predicted spend ranks b > d > c > a, the actual order: a perfect normalised Gini
    assert m["spend_gini"] == pytest.approx(1.0)


def test_method_without_timing_gets_none(hand_result: BacktestResult) -> None:
    r = hand_result.metrics["recency"]
    assert r["timing_cindex"] is None
    assert r["timing_mae_days"] is None
    assert r["churn_auc"] == pytest.approx(1.0)
    assert r["aggregate_error"] == pytest.approx(2.5 / 3 - 1)
    assert r["count_mae"] == pytest.approx(0.5 / 4)
    assert r["spend_aggregate_error"] == pytest.approx(0.0)


def test_json_shape_exact_keys(hand_result: BacktestResult) -> None:
    data = json.loads(hand_result.to_json())
    assert set(data) == {
        "as_of",
        "horizon_days",
        "n_customers",
        "churn_rate",
        "training_seconds",
        "methods",
        "metrics",
        "baseline_params",
        "degenerate_fits",
        "training_snapshots",
        "combination",
        "totals",
    }
    assert data["as_of"] == "2024-01-01T00:00:00+00:00"
    assert data["horizon_days"] == H
    assert data["n_customers"] == 4
    assert data["churn_rate"] == pytest.approx(0.5)
    assert data["training_seconds"] == pytest.approx(1.5)
    assert data["methods"] == ["model", "recency"]
    assert list(data["metrics"]) == ["model", "recency"]
    for values in data["metrics"].values():
        assert list(values) == list(METRIC_KEYS)
    assert data["metrics"]["recency"]["timing_cindex"] is None
    assert hand_result.to_dict() == data


def test_write_json_is_atomic_and_complete(hand_result: BacktestResult, tmp_path) -> None:
    path = hand_result.write_json(tmp_path / "sub" / "bt.json")
    assert json.loads(path.read_text()) == hand_result.to_dict()
    assert [p.name for p in path.parent.iterdir()] == ["bt.json"]  # no temp file left


def test_best_methods_respects_direction(hand_result: BacktestResult) -> None:
    best = best_methods(hand_result.metrics)
    assert best["churn_auc"] == {"recency"}  # higher is better
    assert best["brier"] == {"recency"}  # lower is better
    # |4/3 - 1| = 0.333 vs |2.5/3 - 1| = 0.167: closest to zero wins
    assert best["aggregate_error"] == {"recency"}
    assert best["timing_cindex"] == {"model"}  # the only one with a value


def test_tables_show_every_metric_and_method(hand_result: BacktestResult) -> None:
    text = hand_result.text_table()
    for key in METRIC_KEYS:
        assert key in text
    assert "0.7500" in text and "n/a" in text
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(hand_result.table())
    rendered = console.export_text()
    assert "retain (LightGBM)" in rendered and "recency rule" in rendered


def test_misaligned_predictions_are_rejected() -> None:
    with pytest.raises(ValueError, match="share one customer index"):
        result_from_predictions({"model": MODEL.iloc[::-1]}, LABELS, AS_OF, H)


def test_gap_in_a_prediction_column_names_it() -> None:
    broken = MODEL.copy()
    broken.loc["c", "churn_probability"] = np.nan
    with pytest.raises(ValueError, match=r"churn_probability.*'c'"):
        result_from_predictions({"model": broken}, LABELS, AS_OF, H)


# --------------------------------------------------------------------------------------
# end to end on a synthetic log
# --------------------------------------------------------------------------------------


# a lighter model and a small BTYD penalty keep the whole backtest in a few seconds
FAST: dict = {
    "models_params": {"use_baselines": False, "num_threads": 1},
    "baseline_penalizer": 0.001,
}


@pytest.fixture(scope="module")
def synth_log() -> pd.DataFrame:
    raw = generate_purchase_log(400, seed=3, start="2022-01-01", end="2024-12-31")
    return canonicalize(raw.log).log


@pytest.fixture(scope="module")
def synth_result(synth_log: pd.DataFrame) -> BacktestResult:
    started = time.process_time()  # CPU time: wall time depends on what else the box runs
    result = evaluate(synth_log, "2024-07-01", horizon_days=H, seed=0, **FAST)
    assert time.process_time() - started < 30  # the whole backtest, four methods
    return result


@pytest.mark.slow
def test_evaluate_end_to_end(synth_log: pd.DataFrame, synth_result: BacktestResult) -> None:
    labels = build_labels(synth_log, "2024-07-01", H)
    assert synth_result.n_customers == len(labels)
    assert synth_result.methods == METHODS
    assert synth_result.labels["churn"].tolist() == labels["churn"].tolist()
    for method in METHODS:
        frame = synth_result.predictions[method]
        assert frame.index.equals(synth_result.labels.index)
        values = synth_result.metrics[method]
        assert list(values) == list(METRIC_KEYS)
        assert 0.5 < values["churn_auc"] <= 1.0, method  # better than chance on a BTYD world
        assert 0 <= values["brier"] <= 0.25, method
        assert 0 <= values["ece"] <= 1
        assert values["count_mae"] >= 0 and values["spend_mae"] >= 0
    for method in ("model", "bgnbd", "paretonbd"):
        assert 0.5 < synth_result.metrics[method]["timing_cindex"] <= 1.0, method
    assert synth_result.metrics["recency"]["timing_cindex"] is None
    assert synth_result.training_seconds is not None and synth_result.training_seconds > 0
    assert set(synth_result.baseline_params) == {"bgnbd", "paretonbd", "gammagamma"}


def test_baseline_churn_is_probability_of_no_purchase(
    synth_log: pd.DataFrame, synth_result: BacktestResult
) -> None:
    from training.baselines.bgnbd import BetaGeoNBD
    from training.baselines.summary import rfm_summary

    rfm = rfm_summary(synth_log, "2024-07-01", time_unit_days=7.0)
    params = synth_result.baseline_params["bgnbd"]
    bg = BetaGeoNBD.from_dict({"model": "BetaGeoNBD", "params": params, "penalizer": 0.001})
    p = bg.probability_of_no_purchase(H / 7, rfm["frequency"], rfm["recency"], rfm["T"])
    got = synth_result.predictions["bgnbd"]["churn_probability"]
    np.testing.assert_allclose(got.to_numpy(), p, rtol=1e-12)


def test_log_must_cover_the_label_window(synth_log: pd.DataFrame) -> None:
    last = synth_log["timestamp"].max()
    with pytest.raises(PurchaseLogError, match=str(last.date())):
        evaluate(synth_log, "2024-11-01", horizon_days=H, methods=("bgnbd",))


def test_window_ending_on_the_last_day_is_accepted(synth_log: pd.DataFrame) -> None:
    last_day = synth_log["timestamp"].max().floor("D")
    as_of = last_day + pd.Timedelta(days=1) - pd.Timedelta(days=H)
    result = evaluate(
        synth_log, as_of, horizon_days=H, methods=("bgnbd", "recency"), baseline_penalizer=0.001
    )
    assert list(result.metrics) == ["bgnbd", "recency"]
    assert result.training_seconds is None
    with pytest.raises(PurchaseLogError, match="needs rows up to"):
        evaluate(synth_log, as_of + pd.Timedelta(days=1), methods=("bgnbd",))


def test_unknown_method_is_rejected(synth_log: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(synth_log, "2024-07-01", methods=("model", "xgboost"))


@pytest.mark.slow
def test_score_fitted_is_the_backtest_of_that_fitted_model() -> None:
    """A model fitted elsewhere (the champion) is judged on the same population, labels and
    metrics as evaluate()'s own fit: fitted identically, the figures are identical."""
    from training.evaluation.backtest import score_fitted
    from training.models.bundle import RetainModels

    params = {
        "horizon_days": 60,
        "n_snapshots": 2,
        "num_boost_round": 8,
        "early_stopping_rounds": 4,
        "num_threads": 1,
        "use_baselines": False,
        "lgb_params": {"min_data_in_leaf": 10, "num_leaves": 7},
    }
    log = canonicalize(generate_purchase_log(300, seed=4, end="2024-03-31").log).log
    cutoff = pd.Timestamp("2023-12-01", tz="UTC")
    expected = evaluate(log, cutoff, 60, models_params=params, methods=("model",))
    models = RetainModels(**params, seed=0).fit(log, cutoff)
    assert score_fitted(models, log, cutoff, 60) == expected.metrics["model"]
    with pytest.raises(ValueError, match="predicts a 60-day horizon; this backtest's is 90"):
        score_fitted(models, log, cutoff, 90)


def test_ranking_metrics_read_the_raw_score_when_given() -> None:
    # calibrated probabilities tie a, b and d; the raw score ranks them apart correctly
    tied = RECENCY.assign(churn_probability=[0.5, 0.5, 0.9, 0.5], churn_score=[3.0, 1.0, 4.0, 2.0])
    result = result_from_predictions({"recency": tied}, LABELS, AS_OF, H)
    r = result.metrics["recency"]
    assert r["churn_auc"] == pytest.approx(1.0)  # from the score; the ties would give 0.875
    assert r["top_decile_lift"] == pytest.approx(2.0)
    # calibration still reads the probabilities
    assert r["brier"] == pytest.approx((0.5**2 + 0.5**2 + 0.1**2 + 0.5**2) / 4)


def test_recency_rule_is_ranked_on_its_raw_silence(
    synth_log: pd.DataFrame, synth_result: BacktestResult
) -> None:
    from training.baselines.summary import rfm_summary
    from training.evaluation.metrics import roc_auc

    rfm = rfm_summary(synth_log, "2024-07-01", time_unit_days=7.0)
    rfm.index = rfm.index.astype(str)
    rfm = rfm.reindex(synth_result.labels.index)
    churn = synth_result.labels["churn"].to_numpy()
    raw = roc_auc(churn, (rfm["T"] - rfm["recency"]).to_numpy())
    tied = roc_auc(churn, synth_result.predictions["recency"]["churn_probability"].to_numpy())
    assert synth_result.metrics["recency"]["churn_auc"] == pytest.approx(raw, abs=1e-12)
    assert raw > tied  # the isotonic map's ties cost the rule AUC
