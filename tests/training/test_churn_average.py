"""The churn probability's average with BG/NBD, chosen on the shadow's out-of-time window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.builders import FeatureConfig, build_features
from features.sources.cdnow import read_cdnow
from training.evaluation import metrics
from training.evaluation.backtest_result import combination_lines
from training.models.bundle import RetainModels
from training.models.churn_average import CHURN_AVERAGE, choose_churn_average
from training.models.combine import Combination, btyd_outputs, fit_combination
from training.models.shadow import Shadow

CUTOFFS = pd.to_datetime(["2017-09-02", "2017-10-02", "2017-11-01"], utc=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _window(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True churn probabilities and labels drawn from them."""
    rng = np.random.default_rng(seed)
    truth = np.clip(rng.beta(0.8, 3.0, n), 0.01, 0.99)
    return truth, (rng.random(n) < truth).astype(np.float64)


def test_the_average_is_chosen_where_it_calibrates_better_out_of_time() -> None:
    truth, y = _window(20_000, 1)
    over = _sigmoid(_logit(truth) + 0.9)  # the model's level overshoots on a new window
    under = _sigmoid(_logit(truth) - 0.9)  # BG/NBD's undershoots: the average lies between
    share, info = choose_churn_average(y, over, under, another_season=False)
    assert share == CHURN_AVERAGE == 0.5
    assert info["ece_model"] == metrics.expected_calibration_error(y, over)
    assert info["ece_average"] == metrics.expected_calibration_error(y, 0.5 * over + 0.5 * under)
    assert info["ece_average"] < 0.5 * info["ece_model"]
    # a calibrated model against a biased BG/NBD: the model alone
    share, info = choose_churn_average(y, truth, under, another_season=False)
    assert share == 1.0
    assert info["ece_model"] < info["ece_average"]
    # equal ECE is no evidence for the average
    assert choose_churn_average(y, truth, truth, another_season=False)[0] == 1.0
    # another season is no evidence either: the model kept, the comparison recorded
    share, info = choose_churn_average(y, over, under, another_season=True)
    assert share == 1.0
    assert info["why"] == "another season: the model kept"
    assert info["ece_average"] < info["ece_model"]


def _inputs(truth: np.ndarray) -> pd.DataFrame:
    """BTYD input columns where BG/NBD's churn probability is ``truth``."""
    n = len(truth)
    return pd.DataFrame(
        {
            "bgnbd_p_no_purchase_h": truth,
            "bgnbd_expected_purchases_h": -np.log(truth),
            "n_repeat_days": np.full(n, 2.0),
            "n_purchase_days": np.full(n, 3.0),
            "monetary_total": np.full(n, 90.0),
        }
    )


def _case(shift: float, seed: int = 3) -> tuple[pd.DataFrame, dict, pd.DataFrame, Shadow]:
    """Held-out rows of three cutoffs where model and BG/NBD are both calibrated, and a shadow
    whose out-of-time churn is off by ``shift`` on the logit scale."""
    truth, y = _window(3 * 2_000, seed)
    x = _inputs(truth)
    frame = x.assign(
        churn=y,
        n_purchase_days_h=-np.log(truth),
        spend_h=-30.0 * np.log(truth),
        cutoff=np.repeat(CUTOFFS, 2_000),
    )
    model = {"churn": truth, "count": -np.log(truth), "spend": -30.0 * np.log(truth)}
    t_sh, y_sh = _window(4_000, seed + 1)
    sh_frame = _inputs(t_sh).assign(
        churn=y_sh, n_purchase_days_h=-np.log(t_sh), spend_h=-30.0 * np.log(t_sh)
    )
    predictions = {
        "churn": _sigmoid(_logit(t_sh) + shift),
        "count": -np.log(t_sh),
        "spend": -30.0 * np.log(t_sh),
    }
    shadow = Shadow(sh_frame, predictions, [c.isoformat() for c in CUTOFFS[:2]], "2017-11-01")
    return frame, model, x, shadow


def test_fit_combination_averages_when_the_shadow_overshoots_in_the_same_season() -> None:
    frame, model, x, shadow = _case(shift=0.9)
    combo = fit_combination(frame, model, x, 3, shadow, horizon_days=30)
    chosen = combo.details["churn_average_chosen_on"]
    assert combo.churn_average == 0.5
    assert chosen["why"] == "out-of-time ECE"
    assert chosen["scored_at"] == "2017-11-01"
    assert chosen["ece_average"] < chosen["ece_model"]
    # the recorded ECEs are those of the mapped shadow forecast and its average
    alone = Combination(
        combo.count_weight, combo.spend_weight, combo.churn_weight, combo.churn_platt
    )
    p_sh, _, _ = alone.apply(shadow.frame, *shadow.predictions.values())
    y_sh = shadow.frame["churn"].to_numpy()
    assert chosen["ece_model"] == metrics.expected_calibration_error(y_sh, p_sh)
    # scoring applies the average of the mapped model and BG/NBD
    p, _, _ = combo.apply(x, *model.values())
    p_alone, _, _ = alone.apply(x, *model.values())
    np.testing.assert_allclose(p, 0.5 * p_alone + 0.5 * btyd_outputs(x)["churn"], rtol=1e-12)
    # a 90-day horizon puts the shadow window in another season: the model kept
    far = fit_combination(frame, model, x, 3, shadow, horizon_days=90)
    assert far.churn_average == 1.0
    assert far.details["churn_average_chosen_on"]["why"] == "another season: the model kept"


def test_fit_combination_keeps_the_model_when_its_out_of_time_forecast_is_calibrated() -> None:
    frame, model, x, shadow = _case(shift=0.0)
    combo = fit_combination(frame, model, x, 3, shadow, horizon_days=30)
    assert combo.churn_average == 1.0
    chosen = combo.details["churn_average_chosen_on"]
    assert chosen["ece_model"] <= chosen["ece_average"]


def test_without_a_shadow_the_churn_probability_falls_back_toward_bgnbd() -> None:
    frame, model, x, _ = _case(shift=0.0)
    latest = (frame["cutoff"] == CUTOFFS[-1]).to_numpy()
    sub = {k: v[latest] for k, v in model.items()}
    combo = fit_combination(frame.loc[latest], sub, x.loc[latest], 1, None)
    assert combo.churn_average == CHURN_AVERAGE
    chosen = combo.details["churn_average_chosen_on"]
    assert chosen["why"] == "no out-of-time window"
    # the calibrator's ECE on its window is the map's; the averaged one is recorded beside it
    y = frame.loc[latest, "churn"].to_numpy()
    alone = Combination(churn_weight=combo.churn_weight, churn_platt=combo.churn_platt)
    p_map = alone.apply(x.loc[latest], *sub.values())[0]
    p_avg = combo.apply(x.loc[latest], *sub.values())[0]
    fit_ece = combo.details["calibration_ece_latest_window"]
    assert fit_ece == pytest.approx(metrics.expected_calibration_error(y, p_map), abs=1e-12)
    averaged = metrics.expected_calibration_error(y, p_avg)
    assert chosen["ece_latest_window_averaged"] == pytest.approx(averaged, abs=1e-12)
    assert fit_ece != pytest.approx(averaged)


def test_the_average_survives_a_save_and_older_models_score_as_before() -> None:
    truth, _ = _window(500, 5)
    x = _inputs(truth)
    own = (_sigmoid(_logit(truth) + 0.5), -np.log(truth), -30.0 * np.log(truth))
    combo = Combination(1.0, 1.0, 1.0, (1.1, -0.2), churn_average=0.5)
    loaded = Combination.from_dict(combo.to_dict())
    assert loaded.churn_average == 0.5
    assert loaded.apply(x, *own)[0].tobytes() == combo.apply(x, *own)[0].tobytes()
    # the average uses BG/NBD even when every blend weight is 1 (no fast path)
    alone = Combination(1.0, 1.0, 1.0, (1.1, -0.2))
    assert not np.allclose(combo.apply(x, *own)[0], alone.apply(x, *own)[0])
    # a model saved before the average has no key: the mapped model alone, same bytes
    state = alone.to_dict()
    del state["churn_average"]
    old = Combination.from_dict(state)
    assert old.churn_average == 1.0
    assert old.apply(x, *own)[0].tobytes() == alone.apply(x, *own)[0].tobytes()


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_the_note_says_whether_the_churn_probability_is_averaged(share: float) -> None:
    combination = {
        **Combination(churn_average=share).to_dict(),
        "weights_from": {"out_of_time": True, "trained_on": [], "scored_at": "2017-11-01"},
        "churn_average_chosen_on": {
            "why": "out-of-time ECE",
            "ece_model": 0.0232,
            "ece_average": 0.0208 if share < 1 else 0.0251,
        },
    }
    note = "\n".join(combination_lines(combination, None))
    if share < 1:
        assert "churn probability averaged with BG/NBD (model 0.50)" in note
        assert "(out-of-time ECE: model 0.0232, average 0.0208)" in note
    else:
        assert "churn probability the model alone (out-of-time ECE: model 0.0232" in note


def test_a_short_log_scores_the_average_of_the_mapped_model_and_the_classic_bgnbd(
    cdnow_sample_path: Path,
) -> None:
    # two snapshots for 1997-12-02 - 90 d: none ends a horizon before the latest, no shadow
    log = read_cdnow(cdnow_sample_path).log
    params: dict[str, Any] = {
        "horizon_days": 90,
        "n_snapshots": 2,
        "num_boost_round": 40,
        "num_threads": 1,
        "baseline_sample": 1000,
        "n_snapshots_365": 1,
    }
    models = RetainModels(**params).fit(log, "1997-12-02")
    combo = models.combination_
    assert combo.details["weights_from"]["out_of_time"] is False
    assert combo.churn_average == CHURN_AVERAGE
    features = build_features(log, "1997-12-02", FeatureConfig(horizon_days=90))
    x = models._frame_input(features)
    scores = models.predict_features(features, "1997-12-02")
    a, b = combo.churn_platt
    w = combo.churn_weight
    classic = btyd_outputs(x, combo.spend_state, combo.bgnbd_state)["churn"]
    z = w * _logit(np.clip(models.churn_.predict_proba(x), 1e-6, 1 - 1e-6)) + (1 - w) * _logit(
        np.clip(classic, 1e-6, 1 - 1e-6)
    )
    expected = 0.5 * _sigmoid(a * z + b) + 0.5 * classic
    np.testing.assert_allclose(scores["churn_probability"], expected, rtol=1e-9)
    assert "churn probability averaged with BG/NBD (model 0.50) (no out-of-time window)" in (
        "\n".join(combination_lines(combo.to_dict(), None))
    )
