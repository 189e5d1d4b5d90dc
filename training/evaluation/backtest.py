"""Time-based backtest: retain's LightGBM models against the classic customer-base baselines.

Everything is decided by one cutoff ``as_of`` and a horizon ``H`` (days):

- the LightGBM models (:class:`training.models.bundle.RetainModels`) train on snapshots whose label
  windows end at or before ``as_of`` (the models class picks the snapshots);
- BG/NBD, Pareto/NBD and Gamma-Gamma are fitted on the history before ``as_of`` (weekly
  units, the literature's convention); the recency rule learns its score -> P(churn) map on
  the snapshot ``as_of - H`` whose labels end exactly at ``as_of``;
- every customer with an order before ``as_of`` is scored and compared with what they did
  in ``[as_of, as_of + H)``, so the log must reach the last day of that window.

A baseline's churn probability is P(no purchase in the next H days) from its own model, its
expected purchases are purchase days (the BTYD unit of a transaction), its spend is expected
purchases times the Gamma-Gamma expected spend per transaction, and its timing (BG/NBD and
Pareto/NBD only) is E[days to the next purchase | one within H], from the area under its
survival curve over the horizon, the same quantity RetainModels predicts. A metric a method
cannot produce is ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.log.schema import PurchaseLogError
from features.utc import day_after_last_row, to_utc_timestamp
from training.baselines.degenerate import degenerate_fit
from training.dataset.labels import build_labels
from training.evaluation import metrics
from training.evaluation.backtest_result import METHODS, METRIC_KEYS, BacktestResult, clean_metric
from training.evaluation.baseline_predictions import (
    RANKING_COLUMN,
    WEEK_DAYS,
    btyd_predictions,
    fit_btyd,
    recency_predictions,
    rfm_at,
    spend_per_purchase,
)

if TYPE_CHECKING:
    from training.dataset.snapshot_builder import SnapshotBuilder
    from training.models.bundle import RetainModels
    from training.models.combine import Combination

COMPARED_PREDICTIONS: tuple[str, ...] = (
    "churn_probability",
    "expected_days_to_next",
    "expected_purchases_horizon",
    "expected_spend_horizon",
)
"""The predictions every backtest method is scored on: the part of
:data:`training.models.bundle.PREDICTION_COLUMNS` that the baselines can make too."""
_DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------------------
# metrics on a prediction frame
# --------------------------------------------------------------------------------------


def _present(values: pd.Series) -> bool:
    return bool(values.notna().any())


def method_metrics(
    predictions: pd.DataFrame, labels: pd.DataFrame, horizon_days: int
) -> dict[str, float | None]:
    """All metric keys for one method; ``None`` where its prediction column is all NaN.

    ``predictions`` holds :data:`COMPARED_PREDICTIONS` (missing or all-NaN columns mean "no
    such output"); ``labels`` holds build_labels columns, aligned on the same index.
    ``expected_days_to_next`` is E[days to next purchase | one within the horizon] (what
    RetainModels predicts): compared with the actual days among returners (MAE), and, mixed
    with the churn probability into E[min(T, H)], ranked against everyone's censored
    times (concordance).
    """
    if not predictions.index.equals(labels.index):
        raise ValueError("predictions and labels must share one customer index (same order)")
    out: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    pred = predictions.reindex(columns=list(COMPARED_PREDICTIONS))
    churn = labels["churn"].to_numpy(dtype=np.int64)
    event = labels["event"].to_numpy(dtype=np.int64)
    days = labels["days_to_next"].to_numpy(dtype=np.float64)
    count = labels["n_purchase_days_h"].to_numpy(dtype=np.float64)
    spend = labels["spend_h"].to_numpy(dtype=np.float64)

    p = pred["churn_probability"]
    prob = _complete(p, "churn_probability") if _present(p) else None
    if prob is not None:
        both = 0 < churn.sum() < len(churn)
        # a method's own ordering, where its probabilities tie what it ranks apart
        rank = prob
        if RANKING_COLUMN in predictions and _present(predictions[RANKING_COLUMN]):
            rank = _complete(predictions[RANKING_COLUMN], RANKING_COLUMN)
        out["churn_auc"] = float(metrics.roc_auc(churn, rank)) if both else None
        out["churn_pr_auc"] = float(metrics.pr_auc(churn, rank)) if both else None
        out["brier"] = float(metrics.brier(churn, prob))
        out["ece"] = float(metrics.expected_calibration_error(churn, prob))
        out["top_decile_lift"] = float(metrics.top_decile_lift(churn, rank)) if both else None

    d = pred["expected_days_to_next"]
    if _present(d):
        expected_days = _complete(d, "expected_days_to_next")
        if event.any():
            # rank everyone by E[min(T, H)] = P(churn) * H + P(return) * E[T | T < H]
            ranked = (
                expected_days
                if prob is None
                else prob * horizon_days + (1.0 - prob) * expected_days
            )
            out["timing_cindex"] = float(metrics.concordance_index(days, event, ranked))
            returners = event == 1
            out["timing_mae_days"] = float(metrics.mae(expected_days[returners], days[returners]))

    c = pred["expected_purchases_horizon"]
    if _present(c):
        expected_count = _complete(c, "expected_purchases_horizon")
        out["count_mae"] = float(metrics.mae(expected_count, count))
        out["aggregate_error"] = (
            float(metrics.aggregate_error(expected_count, count)) if count.sum() > 0 else None
        )

    s = pred["expected_spend_horizon"]
    if _present(s):
        expected_spend = _complete(s, "expected_spend_horizon")
        out["spend_mae"] = float(metrics.mae(expected_spend, spend))
        out["spend_aggregate_error"] = (
            float(metrics.aggregate_error(expected_spend, spend)) if spend.sum() > 0 else None
        )
        out["spend_gini"] = float(metrics.gini(spend, expected_spend)) if spend.sum() > 0 else None
    return {k: clean_metric(v) for k, v in out.items()}


def _complete(values: pd.Series, name: str) -> np.ndarray:
    """A prediction column must be complete once present: a gap is a bug, not a zero."""
    arr = values.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        example = list(values.index[bad][:5])
        raise ValueError(
            f"prediction column {name!r} has {int(bad.sum())} non-finite value(s), e.g. customers {example}"
        )
    return arr


def result_from_predictions(
    predictions: Mapping[str, pd.DataFrame],
    labels: pd.DataFrame,
    as_of: pd.Timestamp | str,
    horizon_days: int,
    training_seconds: float | None = None,
    baseline_params: dict[str, dict[str, float]] | None = None,
) -> BacktestResult:
    """Score given per-method predictions against labels (also the entry point for tests)."""
    table = {
        method: method_metrics(frame, labels, horizon_days) for method, frame in predictions.items()
    }
    return BacktestResult(
        as_of=to_utc_timestamp(as_of),
        horizon_days=int(horizon_days),
        metrics=table,
        predictions=dict(predictions),
        labels=labels,
        training_seconds=training_seconds,
        baseline_params=baseline_params or {},
    )


# --------------------------------------------------------------------------------------
# the backtest
# --------------------------------------------------------------------------------------


def check_coverage(log: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int) -> None:
    """The label window must be observed to its last calendar day, else churn is overstated."""
    if len(log) == 0:
        raise PurchaseLogError("the purchase log is empty: nothing to backtest")
    last = log["timestamp"].max()
    window_end = as_of + pd.Timedelta(days=horizon_days)
    if last < window_end - _DAY:
        latest = (day_after_last_row(log) - pd.Timedelta(days=horizon_days)).date()
        raise PurchaseLogError(
            f"column 'timestamp': the log ends at {last} but the label window "
            f"[{as_of.date()}, {window_end.date()}) needs rows up to {(window_end - _DAY).date()}; "
            f"use --as-of {latest} or earlier, or a shorter horizon"
        )
    first = log["timestamp"].min()
    if first >= as_of:
        raise PurchaseLogError(
            f"column 'timestamp': the log starts at {first}, not before the cutoff {as_of}; "
            "there is no history to train on"
        )


def _model_predictions(
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    horizon_days: int,
    models_params: Mapping[str, Any] | None,
    seed: int,
    index: pd.Index,
    snapshots: SnapshotBuilder | None = None,
    baseline_penalizer: float = 0.0,
) -> tuple[pd.DataFrame, float, list[dict[str, Any]], RetainModels]:
    from training.models.bundle import RetainModels  # heavy import kept local

    params = dict(models_params or {})
    params.setdefault("horizon_days", horizon_days)
    # the model's BG/NBD inputs fitted like the baselines' (weight 0 is the classic model)
    params.setdefault("baseline_penalizer", baseline_penalizer)
    params = _with_seed(RetainModels, params, seed)
    started = time.perf_counter()
    models = RetainModels(**params).fit(log, as_of, snapshots=snapshots)
    training_seconds = time.perf_counter() - started
    notes = list(getattr(models, "snapshots_", []))
    for name, why in getattr(models, "baselines_", {}).get("degenerate", {}).items():
        # the scoring cutoff's own BTYD fit, whose outputs feed the model's features
        notes.append(snapshot_note(as_of, horizon_days, name, why))
    predictions = _fitted_predictions(models, log, as_of, horizon_days, index)
    return predictions, training_seconds, notes, models


def _fitted_predictions(
    models: RetainModels, log: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int, index: pd.Index
) -> pd.DataFrame:
    """A fitted ``RetainModels``' predictions for ``index`` in :data:`COMPARED_PREDICTIONS`."""
    raw = models.predict(log, as_of)
    raw.index = pd.Index(raw.index.astype(str), name="customer_id", dtype="str")
    missing = index.difference(raw.index)
    if len(missing):
        raise ValueError(
            f"RetainModels.predict left out {len(missing)} customer(s) known at {as_of}, "
            f"e.g. {list(missing[:5])}"
        )
    return pd.DataFrame(
        {
            "churn_probability": raw["churn_probability"],
            # undefined when a return within H has probability ~0: take H, like the baselines
            "expected_days_to_next": raw["expected_days_to_next"].fillna(float(horizon_days)),
            "expected_purchases_horizon": raw["expected_purchases_horizon"],
            "expected_spend_horizon": raw["expected_spend_horizon"],
        }
    ).reindex(index)


def score_fitted(
    models: RetainModels, log: pd.DataFrame, as_of: pd.Timestamp | str, horizon_days: int
) -> dict[str, float | None]:
    """The backtest metrics of an already fitted model (e.g. the champion's) at ``as_of``.

    Same population, labels and metrics as :func:`evaluate`'s ``model`` row, so a model
    trained elsewhere is judged on exactly the challenger's backtest. The model's own
    horizon must be ``horizon_days``, or its predictions answer another question.
    """
    if int(models.horizon_days) != int(horizon_days):
        raise ValueError(
            f"the model predicts a {models.horizon_days}-day horizon; this backtest's is "
            f"{horizon_days} days"
        )
    cutoff = to_utc_timestamp(as_of)
    check_coverage(log, cutoff, horizon_days)
    labels = build_labels(log, cutoff, horizon_days)
    if len(labels) == 0:
        raise PurchaseLogError(f"no customer has an order before the cutoff {cutoff}")
    predictions = _fitted_predictions(models, log, cutoff, horizon_days, labels.index)
    return method_metrics(predictions, labels, horizon_days)


def snapshot_note(as_of: pd.Timestamp, horizon_days: int, name: str, why: str) -> dict[str, Any]:
    """The scoring cutoff's degenerate feature baseline, in ``snapshots_``' record form."""
    from training.dataset.snapshots import snapshot_record

    record = snapshot_record(as_of, horizon_days, None, 0, {name: why})
    record["scoring"] = True
    return record


def _with_seed(cls: type, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Pass ``seed`` under whichever name the models class uses for it (if any)."""
    import inspect

    accepted = inspect.signature(cls).parameters
    for name in ("random_state", "seed"):
        if name in accepted and name not in params:
            params[name] = seed
            break
    return params


def evaluate(
    log: pd.DataFrame,
    as_of: pd.Timestamp | str,
    horizon_days: int = 90,
    models_params: Mapping[str, Any] | None = None,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    baseline_penalizer: float = 0.0,
    snapshots: SnapshotBuilder | None = None,
) -> BacktestResult:
    """Backtest at ``as_of``: train/fit on the past, score, compare with ``[as_of, as_of + H)``.

    ``models_params`` go to ``RetainModels`` (``horizon_days`` and ``seed`` are filled in).
    ``baseline_penalizer`` is the BG/NBD and Pareto/NBD L2 penalty; 0 is the plain maximum
    likelihood of the literature (a small value speeds up fits that drift along a ridge).
    ``snapshots`` builds the models' training snapshots (``RetainModels.fit``; default: here).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, got {horizon_days}")
    cutoff = to_utc_timestamp(as_of)
    check_coverage(log, cutoff, horizon_days)

    labels = build_labels(log, cutoff, horizon_days)
    if len(labels) == 0:
        raise PurchaseLogError(f"no customer has an order before the cutoff {cutoff}")
    rfm = rfm_at(log, cutoff).reindex(labels.index)
    if rfm["frequency"].isna().any():
        missing = list(labels.index[rfm["frequency"].isna().to_numpy()][:5])
        raise ValueError(f"labels and RFM summary disagree on the population, e.g. {missing}")
    labels = labels.assign(past_purchase_days=(rfm["frequency"] + 1).astype(np.int64))

    predictions: dict[str, pd.DataFrame] = {}
    params: dict[str, dict[str, float]] = {}
    degenerate: dict[str, str] = {}
    snapshot_notes: list[dict[str, Any]] = []
    training_seconds: float | None = None
    fitted: RetainModels | None = None
    horizon_weeks = horizon_days / WEEK_DAYS
    baselines = [m for m in methods if m != "model"]
    spend = np.zeros(len(rfm))
    if baselines:
        spend, params["gammagamma"] = spend_per_purchase(rfm)
    for method in methods:
        if method == "model":
            predictions[method], training_seconds, snapshot_notes, fitted = _model_predictions(
                log,
                cutoff,
                horizon_days,
                models_params,
                seed,
                labels.index,
                snapshots,
                baseline_penalizer,
            )
        elif method in ("bgnbd", "paretonbd"):
            btyd = fit_btyd(method, rfm, baseline_penalizer)
            params[method] = dict(btyd.params_)
            span = float(rfm["T"].max())
            if (why := degenerate_fit(method, btyd.params_, span)) is not None:
                degenerate[method] = why
            predictions[method] = btyd_predictions(btyd, rfm, spend, horizon_weeks)
        else:
            predictions[method] = recency_predictions(log, cutoff, horizon_days, rfm, spend)
    result = result_from_predictions(
        predictions, labels, cutoff, horizon_days, training_seconds, params
    )
    result.degenerate_fits = degenerate
    result.training_snapshots = snapshot_notes
    result.fitted = fitted
    combination = getattr(fitted, "combination_", None)
    if combination is not None:
        result.combination = combination.to_dict()
        result.totals = planner_totals(combination, predictions["model"], labels)
    return result


def planner_totals(
    combination: Combination, predictions: pd.DataFrame, labels: pd.DataFrame
) -> dict[str, dict[str, Any]]:
    """Forecast totals with their 90 % interval, the actual totals, and past coverage."""
    totals = combination.total_interval(
        predictions["expected_purchases_horizon"].to_numpy(dtype=np.float64),
        predictions["expected_spend_horizon"].to_numpy(dtype=np.float64),
    )
    actual = {"purchases": labels["n_purchase_days_h"].sum(), "spend": labels["spend_h"].sum()}
    past = combination.details.get("totals", {})
    out: dict[str, dict[str, Any]] = {}
    for name, total in totals.items():
        record = past.get(name, {})
        out[name] = {
            **total,
            "actual": float(actual[name]),
            "covered": bool(total["low"] <= float(actual[name]) <= total["high"]),
            "past_covered": int(record.get("past_covered", 0)),
            "past_n": int(record.get("past_n", 0)),
        }
    return out
