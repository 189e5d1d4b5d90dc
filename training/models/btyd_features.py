"""BG/NBD and Pareto/NBD inside the boosters: extra feature columns and offsets.

Per snapshot, BG/NBD and Pareto/NBD are fitted on that snapshot's history only
(:func:`fit_baselines`); their outputs (P(alive), expected purchases, P(no purchase) in H)
are extra model inputs (:func:`baseline_arrays`, on every request), and with an offset the
churn, count and spend boosters start from the BG/NBD prediction (:func:`baseline_offset`).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from features.catalog import BTYD_FEATURES
from training.baselines.bgnbd import BetaGeoNBD
from training.baselines.degenerate import degenerate_fit
from training.baselines.likelihood import DegenerateFitStopped, FitBudgetExceeded
from training.baselines.paretonbd import ParetoNBD
from training.baselines.summary import check_rfm
from training.models.boosters import Table, input_column

FloatArray = NDArray[np.float64]

BASELINE_FEATURES: tuple[str, ...] = tuple(BTYD_FEATURES)  # documented in features.catalog

# Pareto/NBD P(alive) as a feature: fitted on at most this many customers (its four
# population parameters need far fewer than BG/NBD's 10,000 here) and given up after this
# many likelihood evaluations, deterministically (hyp2f1 can be very slow; see baselines).
PNBD_FEATURE_SAMPLE = 4_000
PNBD_FEATURE_EVALUATIONS = 400
_FLOAT_MAX = float(np.finfo(np.float64).max)  # where np.nan_to_num sends +inf


Offset = Literal["none", "bgnbd_logit", "bgnbd_log_count", "bgnbd_log_spend"]
Model = TypeVar("Model", BetaGeoNBD, ParetoNBD)
_FITTED: dict[int, tuple[dict[str, Any], dict[str, float], Any, FloatArray]] = {}
_FITTED_MAX = 64


def fitted_count_model(cls: type[Model], state: dict[str, Any]) -> tuple[Model, FloatArray]:
    """``cls.from_dict(state)`` and its ``fitted_params()`` (read-only), rebuilt only when
    ``state`` is another dict or its parameters changed: a model's states are read on
    every request, and rebuilding the model from JSON cost more than its arithmetic.
    """
    hit = _FITTED.get(id(state))
    if hit is not None and hit[0] is state and hit[1] == state.get("params"):
        model = hit[2]
        if type(model) is cls:
            return model, hit[3]
    model = cls.from_dict(state)
    params = model.fitted_params()
    params.setflags(write=False)
    if len(_FITTED) >= _FITTED_MAX:
        _FITTED.clear()
    # the entry holds ``state`` itself, so its id is not reused while it is cached
    _FITTED[id(state)] = (state, dict(state["params"]), model, params)
    return model, params


def baseline_offset(kind: Offset, X: Table, scale: float = 1.0) -> FloatArray | None:
    """The BG/NBD prediction on the booster's raw scale, used as LightGBM ``init_score``.

    Boosting from the baseline means the trees learn a correction to BG/NBD; where the data
    run out (e.g. tenures longer than any training snapshot saw) the prediction falls back to
    BG/NBD's structural decline instead of a flat tree extrapolation.
    """
    if kind == "none":
        return None
    missing = [c for c in ("bgnbd_p_no_purchase_h", "bgnbd_expected_purchases_h") if c not in X]
    if missing:
        raise KeyError(f"offset {kind!r} needs baseline column(s) {missing}")
    # Direct ufuncs, not np.clip / np.nan_to_num (whose Python wrappers cost more than the
    # arithmetic on a request's few rows), with the same results: fmax(v, lo) maps NaN to lo
    # like nan_to_num(maximum(v, lo), nan=lo), and the minimum with the largest float is
    # where nan_to_num sends +inf.
    if kind == "bgnbd_logit":
        p = np.minimum(np.maximum(input_column(X, "bgnbd_p_no_purchase_h"), 1e-4), 1 - 1e-4)
        return np.log(p) - np.log1p(-p)
    count = np.minimum(
        np.fmax(input_column(X, "bgnbd_expected_purchases_h") * scale, 1e-4), _FLOAT_MAX
    )
    if kind == "bgnbd_log_count":
        return np.log(count)
    value = np.minimum(np.fmax(input_column(X, "monetary_mean"), 1.0), _FLOAT_MAX)
    return np.log(count) + np.log(value)


def offset_pair(
    kind: Offset, X: pd.DataFrame, X_val: pd.DataFrame, scale: float = 1.0
) -> tuple[FloatArray, FloatArray] | None:
    """``init_score`` of the training and the validation rows, or None without an offset."""
    train = baseline_offset(kind, X, scale)
    if train is None:
        return None
    valid = baseline_offset(kind, X_val, scale)
    assert valid is not None
    return train, valid


def btyd_inputs(features: Table) -> tuple[FloatArray, FloatArray, FloatArray]:
    """BTYD (frequency, recency, T) in weeks from the feature columns."""
    x = input_column(features, "n_repeat_days")
    age = np.maximum(input_column(features, "tenure_days") / 7.0, 1e-6)
    tx = (input_column(features, "active_span_days") / 7.0).clip(0.0, age)  # np.clip
    # several orders on the first purchase day span hours but are no repeat purchase
    return x, np.where(x > 0, tx, 0.0), age


def rfm_day_inputs(features: Table) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The backtest's RFM summary (x, t_x, T in weeks) from the feature columns.

    :func:`training.baselines.summary.rfm_summary` counts whole purchase *days*: T from the
    first purchase day, recency between the first and last purchase days. For a cutoff at
    midnight UTC (every backtest, training and scoring cutoff) those are the exact tenure
    and recency rounded up to whole days, bit for bit; :func:`btyd_inputs` (the boosters'
    features) keeps the exact times, which moved BG/NBD's aggregate forecast on Complete
    Journey 2017-09-01 from +0.69 % to +1.08 % with the same parameters.
    """
    x = input_column(features, "n_repeat_days")
    age_days = np.ceil(input_column(features, "tenure_days"))
    span_days = age_days - np.ceil(input_column(features, "recency_days"))
    age = np.maximum(age_days / 7.0, 1e-6)
    tx = np.clip(span_days / 7.0, 0.0, age)
    return x, np.where(x > 0, tx, 0.0), age


def classic_bgnbd_outputs(features: Table, state: dict[str, Any]) -> dict[str, FloatArray]:
    """The backtest's BG/NBD forecast (``state``: :func:`classic_bgnbd_state`) per customer.

    ``count``: expected purchase days in the horizon; ``churn``: P(no purchase in it).
    """
    bg, params = fitted_count_model(BetaGeoNBD, state["bgnbd"])
    h = float(state["horizon_days"]) / 7.0
    x, tx, age = check_rfm(*rfm_day_inputs(features))
    with np.errstate(all="ignore"):
        p_alive = bg.p_alive_array(params, x, tx, age)
        return {
            "count": bg.expected_purchases_array(params, h, x, age, p_alive),
            "churn": bg.no_purchase_array(params, h, x, tx, age),
        }


def classic_bgnbd_state(bg: BetaGeoNBD, horizon_days: int, as_of: pd.Timestamp) -> dict[str, Any]:
    """A fitted classic BG/NBD as JSON, with the horizon its outputs answer."""
    return {
        "bgnbd": bg.to_dict(),
        "horizon_days": int(horizon_days),
        "fitted_at": as_of.isoformat(),
    }


def fit_baselines(
    features: pd.DataFrame, max_customers: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """BG/NBD and Pareto/NBD fitted on one snapshot's customers (its history only).

    Their four parameters describe the population, so a random subsample of
    ``max_customers`` fits them about as well and keeps million-customer snapshots cheap.
    A degenerate fit (``training.baselines.degenerate_fit``: the no-dropout collapse) is
    recorded under ``state["degenerate"]``: Pareto/NBD's is dropped (its P(alive) column is
    NaN for the snapshot, as when its fit fails); BG/NBD's is kept but flagged, because the
    offsets start from its expectations, which stay a count model's (an NBD's) when it
    collapses, and the trees correct them.

    A Pareto/NBD fit that stays in the no-dropout collapse for
    ``training.baselines.likelihood.GIVE_UP_PATIENCE`` iterations stops there: its result
    would be dropped, and there the hyp2f1 terms are slowest. Every fit starts from the
    moment-based default, not from the previous snapshot's fit: a warm start reaches the
    same optimum only within the optimiser's tolerance (parameters 1e-5 apart on CDNOW),
    which moves every feature and the backtest for a fraction of a CPU second, and from a
    collapsed fit it stays on the collapse (Complete Journey 2017-04-05: log-likelihood
    4.6 worse).
    """
    x, tx, age = btyd_inputs(features)
    pick = baseline_sample(len(x), max_customers, seed)
    if pick is not None:
        x, tx, age = x[pick], tx[pick], age[pick]
    return fit_baseline_rows(x, tx, age, seed)


def baseline_sample(n_customers: int, max_customers: int, seed: int) -> NDArray[np.intp] | None:
    """Positions (in the feature frame's order) of the customers the fits use; None: all.

    Its own function so a cluster, which holds a snapshot's customers in partitions, draws
    the very positions :func:`fit_baselines` draws and fetches only those rows.
    """
    if n_customers <= max_customers:
        return None
    return np.random.default_rng(seed).choice(n_customers, max_customers, replace=False)


def fit_baseline_rows(x: FloatArray, tx: FloatArray, age: FloatArray, seed: int) -> dict[str, Any]:
    """:func:`fit_baselines` on the sampled customers' (x, t_x, T), in sample order."""
    bg = BetaGeoNBD(penalizer=0.001).fit(x, tx, age)
    state: dict[str, Any] = {"bgnbd": bg.to_dict(), "degenerate": {}}
    span = float(age.max()) if len(age) else 52.0

    def collapsed(params: dict[str, float]) -> str | None:
        return degenerate_fit("paretonbd", params, span)

    if (why := degenerate_fit("bgnbd", bg.params_, span)) is not None:
        state["degenerate"]["bgnbd"] = f"{why}; kept (the offsets start from it)"
    try:
        sub = np.random.default_rng(seed + 1).permutation(len(x))[:PNBD_FEATURE_SAMPLE]
        pnbd = ParetoNBD(penalizer=0.001, max_evaluations=PNBD_FEATURE_EVALUATIONS)
        pnbd.fit(x[sub], tx[sub], age[sub], give_up=collapsed)
        state["pnbd"] = pnbd.to_dict()
        if (why := degenerate_fit("paretonbd", pnbd.params_, span)) is not None:
            state["pnbd"] = None  # its feature column is then NaN for this snapshot
            state["degenerate"]["pnbd"] = f"{why}; pnbd_p_alive dropped"
    except DegenerateFitStopped as exc:
        state["pnbd"] = None
        state["degenerate"]["pnbd"] = f"{exc}; pnbd_p_alive dropped"
    except (ValueError, FloatingPointError, FitBudgetExceeded) as exc:
        state["pnbd"] = None  # its feature column is then NaN for this snapshot
        state["degenerate"]["pnbd"] = f"fit failed ({type(exc).__name__}); pnbd_p_alive dropped"
    return state


def baseline_features(
    features: pd.DataFrame, state: dict[str, Any], horizon_days: int
) -> pd.DataFrame:
    """BG/NBD P(alive), expected purchases and P(no purchase) in H, Pareto/NBD P(alive)."""
    return pd.DataFrame(baseline_arrays(features, state, horizon_days), index=features.index)


def baseline_arrays(
    features: Table, state: dict[str, Any], horizon_days: int
) -> dict[str, FloatArray]:
    """The ``BASELINE_FEATURES`` columns as arrays, in that order."""
    bg, params = fitted_count_model(BetaGeoNBD, state["bgnbd"])
    h = horizon_days / 7.0
    # The public methods would each re-check (x, t_x, T) and recompute P(alive); checking
    # once and sharing P(alive) gives the same numbers at a fraction of the fixed cost.
    x, tx, age = check_rfm(*btyd_inputs(features))
    with np.errstate(all="ignore"):
        p_alive = bg.p_alive_array(params, x, tx, age)
        out = {
            "bgnbd_p_alive": p_alive,
            "bgnbd_expected_purchases_h": bg.expected_purchases_array(params, h, x, age, p_alive),
            "bgnbd_p_no_purchase_h": bg.no_purchase_array(params, h, x, tx, age),
        }
        if state.get("pnbd"):
            pnbd, pnbd_params = fitted_count_model(ParetoNBD, state["pnbd"])
            out["pnbd_p_alive"] = pnbd.p_alive_array(pnbd_params, x, tx, age)
        else:
            out["pnbd_p_alive"] = np.full(len(x), np.nan)
    return out


def bgnbd_365_ratio(features: Table, state: dict[str, Any], horizon_days: int) -> FloatArray:
    """Per customer E[purchases in 365 d] / E[purchases in H] under BG/NBD (>= 1).

    Used to extrapolate horizon spend to 365 days when the history is too short for 365-day
    labels; it accounts for dropout, unlike a flat 365 / H.
    """
    bg, params = fitted_count_model(BetaGeoNBD, state["bgnbd"])
    x, tx, age = check_rfm(*btyd_inputs(features))  # checked once (see baseline_arrays)
    with np.errstate(all="ignore"):
        p_alive = bg.p_alive_array(params, x, tx, age)
        e_h = bg.expected_purchases_array(params, horizon_days / 7.0, x, age, p_alive)
        e_y = bg.expected_purchases_array(params, 365.0 / 7.0, x, age, p_alive)
        ratio = np.where(e_h > 1e-12, e_y / e_h, 365.0 / horizon_days)
    return np.clip(np.nan_to_num(ratio, nan=365.0 / horizon_days), 1.0, 365.0 / horizon_days)
