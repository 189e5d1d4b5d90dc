"""Metrics on tiny hand-computed cases, and against scikit-learn where it has the metric."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn import calibration as sk_calibration
from sklearn import metrics as sk_metrics

from training.evaluation.metrics import (
    aggregate_error,
    brier,
    calibration_curve,
    concordance_index,
    expected_calibration_error,
    gini,
    mae,
    pr_auc,
    roc_auc,
    top_decile_lift,
)


def test_roc_auc_hand_computed() -> None:
    # churners 0.35, 0.8 vs non-churners 0.1, 0.4: pairs won 1, 0, 1, 1 -> 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie counts one half: (0.2 vs 0.2) 1/2 + (0.9 vs 0.2) 1 over 2 pairs
    assert roc_auc([0, 1, 1], [0.2, 0.2, 0.9]) == pytest.approx(0.75)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_pr_auc_hand_computed() -> None:
    # ranked 0.8 (1), 0.4 (0), 0.35 (1), 0.1 (0): precision 1 at recall 1/2, 2/3 at recall 1
    assert pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # tied scores form one threshold: precision 1/2 at recall 1
    assert pr_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(pr_auc([0, 0], [0.2, 0.3]))


def test_ranking_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    p = np.round(np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1), 2)  # many ties
    assert roc_auc(y, p) == pytest.approx(sk_metrics.roc_auc_score(y, p), abs=1e-12)
    assert pr_auc(y, p) == pytest.approx(sk_metrics.average_precision_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(sk_metrics.brier_score_loss(y, p), abs=1e-12)


def test_brier_hand_computed() -> None:
    # (0.01 + 0.01 + 0.16 + 0.09) / 4
    assert brier([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.3]) == pytest.approx(0.0675)


def test_expected_calibration_error_hand_computed() -> None:
    y = [0, 1, 1, 0, 1]
    p = [0.05, 0.15, 0.12, 0.95, 0.98]
    # bins [0, .1]: p .05 y 0 -> .05; (.1, .2]: p .135 y 1 -> .865; (.9, 1]: p .965 y .5
    # -> .465; weighted by 1, 2, 2 of 5
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 2 * 0.865 + 2 * 0.465) / 5)
    # quantile bins of [.1, .2, .3, .4] in two: {.1, .2} (y 0) and {.3, .4} (y 1)
    got = expected_calibration_error([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 2, "quantile")
    assert got == pytest.approx((2 * 0.15 + 2 * 0.65) / 4)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="strategy"):
        expected_calibration_error(y, p, strategy="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.5, 1.5])


def test_calibration_curve_hand_computed_and_sklearn() -> None:
    curve = calibration_curve([0, 1, 1, 0, 1], [0.05, 0.15, 0.12, 0.95, 0.98])
    assert curve["bin"].tolist() == [0, 1, 9]
    assert curve["count"].tolist() == [1, 2, 2]
    np.testing.assert_allclose(curve["mean_predicted"], [0.05, 0.135, 0.965])
    np.testing.assert_allclose(curve["fraction_positive"], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(curve["lower"], [0.0, 0.1, 0.9])

    rng = np.random.default_rng(5)
    p = rng.beta(0.7, 3.0, 3000)
    y = (rng.random(3000) < p).astype(int)
    for strategy in ("uniform", "quantile"):
        ours = calibration_curve(y, p, 10, strategy)
        frac, mean = sk_calibration.calibration_curve(y, p, n_bins=10, strategy=strategy)
        np.testing.assert_allclose(ours["fraction_positive"], frac)
        np.testing.assert_allclose(ours["mean_predicted"], mean)


def test_top_decile_lift_hand_computed() -> None:
    y = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0]  # base rate 0.2
    p = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.05]
    assert top_decile_lift(y, p) == pytest.approx(1.0 / 0.2)
    # the top 2 are 0.9 (1) and 0.8 (0): rate 0.5
    assert top_decile_lift(y, p, fraction=0.2) == pytest.approx(0.5 / 0.2)
    # a tie at the boundary is shared pro rata, whatever the row order
    tied = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9, 0.05]
    assert top_decile_lift(y, tied) == pytest.approx(0.5 / 0.2)
    order = np.arange(10)[::-1]
    assert top_decile_lift(np.array(y)[order], np.array(tied)[order]) == pytest.approx(2.5)
    assert math.isnan(top_decile_lift([0, 0], [0.1, 0.2]))


def _brute_concordance(time_: np.ndarray, event: np.ndarray, pred: np.ndarray) -> float:
    """The definition, pair by pair (for small n only)."""
    num = den = 0.0
    for i in range(len(time_)):
        if not event[i]:
            continue
        for j in range(len(time_)):
            if i != j and (time_[i] < time_[j] or (time_[i] == time_[j] and not event[j])):
                den += 1
                num += 1.0 if pred[i] < pred[j] else 0.5 if pred[i] == pred[j] else 0.0
    return num / den if den else math.nan


def test_concordance_index_hand_computed() -> None:
    # comparable: (0,1) (0,2) (0,3) concordant; (1,2) discordant 3 > 2; (1,3) concordant
    assert concordance_index([1, 2, 3, 4], [1, 1, 0, 1], [1, 3, 2, 4]) == pytest.approx(0.8)
    # two events at t=1 are not comparable; (0,2) concordant, (1,2) tied prediction
    assert concordance_index([1, 1, 2], [1, 1, 1], [1, 2, 2]) == pytest.approx(0.75)
    # an event and a censoring at the same time are comparable
    assert concordance_index([2, 2], [1, 0], [1, 2]) == 1.0
    assert concordance_index([2, 2], [1, 0], [2, 1]) == 0.0
    assert math.isnan(concordance_index([1, 2], [0, 0], [1, 2]))


def test_concordance_index_matches_definition_with_ties() -> None:
    rng = np.random.default_rng(9)
    for _ in range(100):
        n = int(rng.integers(2, 30))
        t = rng.integers(0, 6, n).astype(float)
        e = rng.integers(0, 2, n)
        p = rng.integers(0, 5, n).astype(float)
        expected = _brute_concordance(t, e, p)
        got = concordance_index(t, e, p)
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-12)


def test_concordance_index_is_fast_on_100k_rows() -> None:
    rng = np.random.default_rng(1)
    n = 100_000
    t = rng.exponential(30.0, n)
    e = rng.integers(0, 2, n)
    perfect = concordance_index(t, e, t)
    start = time.perf_counter()
    noisy = concordance_index(t, e, t + rng.normal(0, 30.0, n))
    elapsed = time.perf_counter() - start
    assert perfect == 1.0
    assert 0.6 < noisy < 0.9
    assert elapsed < 10.0


def test_count_and_spend_errors_hand_computed() -> None:
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert aggregate_error([1, 2, 3], [2, 2, 5]) == pytest.approx(6 / 9 - 1)
    assert math.isnan(aggregate_error([1.0], [0.0]))


def test_gini_hand_computed() -> None:
    actual = [0.0, 10.0, 30.0, 60.0]
    assert gini(actual, [1, 2, 3, 4]) == pytest.approx(1.0)
    assert gini(actual, [4, 3, 2, 1]) == pytest.approx(-1.0)
    # order 60, 10, 30, 0: Lorenz .6 .7 1 1 -> 3.3/4 - 5/8 = .2; perfect 3.5/4 - 5/8 = .25
    assert gini(actual, [1, 3, 2, 4]) == pytest.approx(0.8)
    assert gini(actual, [7, 7, 7, 7]) == pytest.approx(0.0)  # no information
    with pytest.raises(ValueError, match="actual must be >= 0"):
        gini([-1.0, 2.0], [1, 2])


def test_gini_equals_2auc_minus_1_for_binary_actual() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) + 0.3 * y, 1)  # with ties
    assert gini(y, p) == pytest.approx(2 * roc_auc(y, p) - 1, abs=1e-12)


def test_input_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="p has length 2, expected 3"):
        roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="p has non-finite values at positions \\[1\\]"):
        brier([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="y must be 0/1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="event must be 0/1"):
        concordance_index([1, 2], [0, 3], [1, 2])
