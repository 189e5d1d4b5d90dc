"""Time-based backtest: retain's LightGBM models against the classic customer-base baselines.

Everything is decided by one cutoff ``as_of`` and a horizon ``H`` (days):

- the LightGBM models (:class:`training.models.RetainModels`) train on snapshots whose label
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

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from features.atomic import write_text_atomic
from features.schema import PurchaseLogError
from features.utc import to_utc_timestamp
from training import metrics
from training.baselines import (
    BetaGeoNBD,
    GammaGamma,
    ParetoNBD,
    RecencyRule,
    degenerate_fit,
    rfm_summary,
)
from training.labels import build_labels

METHODS: tuple[str, ...] = ("model", "bgnbd", "paretonbd", "recency")
METHOD_LABELS: dict[str, str] = {
    "model": "retain (LightGBM)",
    "bgnbd": "BG/NBD",
    "paretonbd": "Pareto/NBD",
    "recency": "recency rule",
}
METRIC_KEYS: tuple[str, ...] = (
    "churn_auc",
    "churn_pr_auc",
    "brier",
    "ece",
    "top_decile_lift",
    "timing_cindex",
    "timing_mae_days",
    "count_mae",
    "aggregate_error",
    "spend_mae",
    "spend_aggregate_error",
    "spend_gini",
)
# +1: higher is better, -1: lower is better, 0: closer to zero is better
METRIC_DIRECTION: dict[str, int] = {
    "churn_auc": 1,
    "churn_pr_auc": 1,
    "brier": -1,
    "ece": -1,
    "top_decile_lift": 1,
    "timing_cindex": 1,
    "timing_mae_days": -1,
    "count_mae": -1,
    "aggregate_error": 0,
    "spend_mae": -1,
    "spend_aggregate_error": 0,
    "spend_gini": 1,
}
PREDICTION_COLUMNS: tuple[str, ...] = (
    "churn_probability",
    "expected_days_to_next",
    "expected_purchases_horizon",
    "expected_spend_horizon",
)
# Optional: a churn score whose order the ranking metrics (AUC, PR-AUC, lift) read instead of
# the probability's. The recency rule's isotonic map ties customers its raw score ranks apart
# (up to 0.015 AUC lost); a baseline is shown at its best, so it is ranked on the raw score.
RANKING_COLUMN = "churn_score"
LABEL_COLUMNS: tuple[str, ...] = (
    "churn",
    "event",
    "days_to_next",
    "n_purchase_days_h",
    "spend_h",
    "past_purchase_days",
)
_WEEK_DAYS = 7.0
_DAY = pd.Timedelta(days=1)


@dataclass
class BacktestResult:
    """Per-method metrics plus the per-customer predictions and labels behind them.

    ``predictions[method]`` and ``labels`` share one index (``customer_id``, the customers
    known at the cutoff); ``labels`` holds the window outcomes and ``past_purchase_days``
    (purchase days before the cutoff), which the plots group by.
    """

    as_of: pd.Timestamp
    horizon_days: int
    metrics: dict[str, dict[str, float | None]]
    predictions: dict[str, pd.DataFrame]
    labels: pd.DataFrame
    training_seconds: float | None = None
    baseline_params: dict[str, dict[str, float]] = field(default_factory=dict)
    # BG/NBD or Pareto/NBD fits at the cutoff that collapsed (``baselines.degenerate_fit``)
    degenerate_fits: dict[str, str] = field(default_factory=dict)
    # the model's training snapshots, used and dropped (``RetainModels.snapshots_``)
    training_snapshots: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_customers(self) -> int:
        return len(self.labels)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (no per-customer rows); ``None`` marks a metric a method lacks."""
        return {
            "as_of": self.as_of.isoformat(),
            "horizon_days": int(self.horizon_days),
            "n_customers": self.n_customers,
            "churn_rate": _clean(float(self.labels["churn"].mean())) if len(self.labels) else None,
            "training_seconds": _clean(self.training_seconds),
            "methods": list(self.metrics),
            "metrics": {
                method: {key: _clean(values.get(key)) for key in METRIC_KEYS}
                for method, values in self.metrics.items()
            },
            "baseline_params": {
                name: {k: _clean(v) for k, v in params.items()}
                for name, params in self.baseline_params.items()
            },
            "degenerate_fits": dict(self.degenerate_fits),
            "training_snapshots": list(self.training_snapshots),
        }

    def notes(self) -> list[str]:
        """What a reader must know besides the table: snapshots dropped, degenerate fits."""
        from training.models import describe_snapshots

        lines = describe_snapshots(self.training_snapshots)
        for name, why in self.degenerate_fits.items():
            lines.append(f"degenerate {METHOD_LABELS.get(name, name)} fit at the cutoff: {why}")
        return lines

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically (temp file in the same directory, then rename)."""
        return write_text_atomic(Path(path), self.to_json() + "\n")

    def table(self, title: str | None = None) -> Table:
        """A rich Table, metrics as rows and methods side by side; the best value is bold."""
        heading = title or (
            f"backtest at {self.as_of.date()} (H = {self.horizon_days} d, "
            f"{self.n_customers:,} customers)"
        )
        table = Table(title=heading)
        table.add_column("metric", style="cyan")
        for method in self.metrics:
            table.add_column(METHOD_LABELS.get(method, method), justify="right")
        best = best_methods(self.metrics)
        for key in METRIC_KEYS:
            cells = []
            for method, values in self.metrics.items():
                text = format_metric(values.get(key))
                cells.append(f"[bold green]{text}[/]" if method in best.get(key, ()) else text)
            table.add_row(key, *cells)
        return table

    def text_table(self) -> str:
        """The same table as plain text (logs, reports, tests)."""
        methods = list(self.metrics)
        header = ["metric", *methods]
        rows = [
            [key, *(format_metric(self.metrics[m].get(key)) for m in methods)]
            for key in METRIC_KEYS
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in [header, *rows]
        ]
        return "\n".join(lines)


def _clean(value: Any) -> float | None:
    """A JSON-safe float: None stays None, NaN/inf become None."""
    if value is None:
        return None
    out = float(value)
    return out if np.isfinite(out) else None


def format_metric(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def best_methods(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, set[str]]:
    """For each metric, the method(s) with the best value (ties share it)."""
    out: dict[str, set[str]] = {}
    for key in METRIC_KEYS:
        direction = METRIC_DIRECTION[key]
        scored = {
            m: (abs(v) if direction == 0 else -direction * v)
            for m, vals in table.items()
            if (v := vals.get(key)) is not None and np.isfinite(v)
        }
        if scored:
            low = min(scored.values())
            out[key] = {m for m, s in scored.items() if np.isclose(s, low, rtol=0, atol=1e-12)}
    return out


# --------------------------------------------------------------------------------------
# metrics on a prediction frame
# --------------------------------------------------------------------------------------


def _present(values: pd.Series) -> bool:
    return bool(values.notna().any())


def method_metrics(
    predictions: pd.DataFrame, labels: pd.DataFrame, horizon_days: int
) -> dict[str, float | None]:
    """All metric keys for one method; ``None`` where its prediction column is all NaN.

    ``predictions`` holds :data:`PREDICTION_COLUMNS` (missing or all-NaN columns mean "no
    such output"); ``labels`` holds build_labels columns, aligned on the same index.
    ``expected_days_to_next`` is E[days to next purchase | one within the horizon] (what
    RetainModels predicts): compared with the actual days among returners (MAE), and, mixed
    with the churn probability into E[min(T, H)], ranked against everyone's censored
    times (concordance).
    """
    if not predictions.index.equals(labels.index):
        raise ValueError("predictions and labels must share one customer index (same order)")
    out: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    pred = predictions.reindex(columns=list(PREDICTION_COLUMNS))
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
    return {k: _clean(v) for k, v in out.items()}


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
        latest = (last.floor("D") + _DAY - pd.Timedelta(days=horizon_days)).date()
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


def _rfm(log: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    out = rfm_summary(log, as_of, time_unit_days=_WEEK_DAYS)
    out.index = pd.Index(out.index.astype(str), name="customer_id", dtype="str")
    return out


def _btyd_predictions(
    model: BetaGeoNBD | ParetoNBD,
    rfm: pd.DataFrame,
    spend_per_purchase: np.ndarray,
    horizon_weeks: float,
) -> pd.DataFrame:
    x, tx, age = (rfm[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T"))
    purchases = model.conditional_expected_purchases(horizon_weeks, x, tx, age)
    silent = model.probability_of_no_purchase(horizon_weeks, x, tx, age)
    # E[T | T < H] = (E[min(T, H)] - H * S(H)) / (1 - S(H)), from the survival curve
    restricted = model.restricted_mean_time_to_purchase(horizon_weeks, x, tx, age)
    returning = 1.0 - silent
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = np.where(
            returning > 1e-9, (restricted - horizon_weeks * silent) / returning, horizon_weeks
        )
    return pd.DataFrame(
        {
            "churn_probability": silent,
            "expected_days_to_next": _WEEK_DAYS * np.clip(conditional, 0.0, horizon_weeks),
            "expected_purchases_horizon": purchases,
            "expected_spend_horizon": purchases * spend_per_purchase,
        },
        index=rfm.index,
    )


def _recency_predictions(
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    horizon_days: int,
    rfm: pd.DataFrame,
    spend_per_purchase: np.ndarray,
) -> pd.DataFrame:
    """Recency rule calibrated on the snapshot ``as_of - H`` (its labels end at ``as_of``)."""
    past = as_of - pd.Timedelta(days=horizon_days)
    past_rfm = _rfm(log, past)
    if len(past_rfm) == 0:
        raise PurchaseLogError(
            f"the recency rule needs customers before {past.date()} (as_of - horizon) to "
            "calibrate on; the log starts later"
        )
    past_labels = build_labels(log, past, horizon_days).reindex(past_rfm.index)
    rule = RecencyRule().fit(
        past_rfm["frequency"],
        past_rfm["recency"],
        past_rfm["T"],
        past_labels["churn"].to_numpy(dtype=np.int64),
    )
    x, tx, age = (rfm[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T"))
    purchases = rule.conditional_expected_purchases(horizon_days / _WEEK_DAYS, x, tx, age)
    return pd.DataFrame(
        {
            "churn_probability": rule.predict_churn_probability(x, tx, age),
            RANKING_COLUMN: rule.score(x, tx, age),
            "expected_days_to_next": np.nan,
            "expected_purchases_horizon": purchases,
            "expected_spend_horizon": purchases * spend_per_purchase,
        },
        index=rfm.index,
    )


def _spend_per_purchase(rfm: pd.DataFrame) -> tuple[np.ndarray, dict[str, float]]:
    """Gamma-Gamma expected spend per purchase day, fitted on repeat buyers with spend > 0."""
    x = rfm["frequency"].to_numpy(dtype=np.float64)
    m = rfm["monetary_value"].to_numpy(dtype=np.float64)
    use = (x > 0) & (m > 0)
    gg = GammaGamma().fit(x[use], m[use])
    if gg.params_["q"] <= 1.0:
        # the population mean p*v/(q-1) does not exist: fall back to the sample mean for x = 0
        per = np.where(
            x > 0, gg.conditional_expected_average_profit(np.maximum(x, 1), m), m[use].mean()
        )
    else:
        per = gg.conditional_expected_average_profit(x, m)
    return np.maximum(per, 0.0), dict(gg.params_)


def _model_predictions(
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    horizon_days: int,
    models_params: Mapping[str, Any] | None,
    seed: int,
    index: pd.Index,
) -> tuple[pd.DataFrame, float, list[dict[str, Any]]]:
    from training.models import RetainModels  # lands in parallel; heavy import kept local

    params = dict(models_params or {})
    params.setdefault("horizon_days", horizon_days)
    params = _with_seed(RetainModels, params, seed)
    started = time.perf_counter()
    models = RetainModels(**params).fit(log, as_of)
    training_seconds = time.perf_counter() - started
    snapshots = list(getattr(models, "snapshots_", []))
    for name, why in getattr(models, "baselines_", {}).get("degenerate", {}).items():
        # the scoring cutoff's own BTYD fit, whose outputs feed the model's features
        snapshots.append(snapshot_note(as_of, horizon_days, name, why))
    return _fitted_predictions(models, log, as_of, horizon_days, index), training_seconds, snapshots


def _fitted_predictions(
    models: Any, log: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int, index: pd.Index
) -> pd.DataFrame:
    """A fitted ``RetainModels``' predictions for ``index`` in :data:`PREDICTION_COLUMNS`."""
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
    models: Any, log: pd.DataFrame, as_of: pd.Timestamp | str, horizon_days: int
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
    from training.models import snapshot_record

    record = snapshot_record(as_of, horizon_days, None, 0, {name: why})
    record["scoring"] = True
    return record


def _with_seed(cls: type, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Pass ``seed`` under whichever name the models class uses for it (if any)."""
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
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
) -> BacktestResult:
    """Backtest at ``as_of``: train/fit on the past, score, compare with ``[as_of, as_of + H)``.

    ``models_params`` go to ``RetainModels`` (``horizon_days`` and ``seed`` are filled in).
    ``baseline_penalizer`` is the BG/NBD and Pareto/NBD L2 penalty; 0 is the plain maximum
    likelihood of the literature (a small value speeds up fits that drift along a ridge).
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
    rfm = _rfm(log, cutoff).reindex(labels.index)
    if rfm["frequency"].isna().any():
        missing = list(labels.index[rfm["frequency"].isna().to_numpy()][:5])
        raise ValueError(f"labels and RFM summary disagree on the population, e.g. {missing}")
    labels = labels.assign(past_purchase_days=(rfm["frequency"] + 1).astype(np.int64))

    predictions: dict[str, pd.DataFrame] = {}
    params: dict[str, dict[str, float]] = {}
    degenerate: dict[str, str] = {}
    snapshots: list[dict[str, Any]] = []
    training_seconds: float | None = None
    horizon_weeks = horizon_days / _WEEK_DAYS
    baselines = [m for m in methods if m != "model"]
    spend = np.zeros(len(rfm))
    if baselines:
        spend, params["gammagamma"] = _spend_per_purchase(rfm)
    for method in methods:
        if method == "model":
            predictions[method], training_seconds, snapshots = _model_predictions(
                log, cutoff, horizon_days, models_params, seed, labels.index
            )
        elif method in ("bgnbd", "paretonbd"):
            btyd = (BetaGeoNBD if method == "bgnbd" else ParetoNBD)(penalizer=baseline_penalizer)
            btyd.fit(rfm["frequency"], rfm["recency"], rfm["T"])
            params[method] = dict(btyd.params_)
            span = float(rfm["T"].max())
            if (why := degenerate_fit(method, btyd.params_, span)) is not None:
                degenerate[method] = why
            predictions[method] = _btyd_predictions(btyd, rfm, spend, horizon_weeks)
        else:
            predictions[method] = _recency_predictions(log, cutoff, horizon_days, rfm, spend)
    result = result_from_predictions(
        predictions, labels, cutoff, horizon_days, training_seconds, params
    )
    result.degenerate_fits = degenerate
    result.training_snapshots = snapshots
    return result
