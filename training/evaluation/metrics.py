"""Metrics of the backtest (churn ranking and calibration, timing, counts, spend) and of uplift.

Pure numpy functions on 1-D arrays, so the backtest, the report and the promotion gate
all compute a metric the same way. Conventions:

- churn metrics take ``y`` (1 = churned) and a probability or score ``p`` (higher = more
  likely to churn); ranking metrics return NaN when ``y`` holds a single class (undefined,
  and common in small segments), instead of failing a whole backtest table;
- ties in scores count one half (ROC AUC, concordance) or are averaged over (Gini, lift);
- every function raises ``ValueError`` naming the argument for NaN / mismatched input.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

FloatArray = NDArray[np.float64]


def _arrays(**named: ArrayLike) -> list[FloatArray]:
    """1-D float arrays of one length, finite; the error names the argument."""
    out: list[FloatArray] = []
    length: int | None = None
    for name, value in named.items():
        arr = np.asarray(value, dtype="float64").ravel()
        if not np.isfinite(arr).all():
            pos = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
            raise ValueError(f"{name} has non-finite values at positions {pos}")
        if length is not None and arr.size != length:
            raise ValueError(f"{name} has length {arr.size}, expected {length}")
        length = arr.size
        out.append(arr)
    if not length:
        raise ValueError(f"empty input: {', '.join(named)}")
    return out


def _binary(y: FloatArray, name: str = "y") -> FloatArray:
    if not np.isin(y, (0.0, 1.0)).all():
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))[:5].tolist()
        raise ValueError(f"{name} must be 0/1; other values at positions {bad}")
    return y


# --------------------------------------------------------------------------------------
# churn: ranking
# --------------------------------------------------------------------------------------


def roc_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve = P(score of a churner > score of a non-churner), ties 1/2.

    Mann-Whitney form on average ranks, O(n log n). NaN for a single class.
    """
    yy, pp = _arrays(y=y, p=p)
    _binary(yy)
    n_pos = float(yy.sum())
    n_neg = yy.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(pp)
    return float((ranks[yy == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Average precision: sum over thresholds of precision x recall increment.

    The step-wise (not interpolated) area, as ``sklearn.metrics.average_precision_score``;
    its baseline is the churn rate, not 0.5. NaN without positives.
    """
    yy, pp = _arrays(y=y, p=p)
    _binary(yy)
    n_pos = yy.sum()
    if n_pos == 0:
        return math.nan
    order = np.argsort(-pp, kind="mergesort")
    ys, ps = yy[order], pp[order]
    # one threshold per distinct score: evaluate at the last row of each tie block
    last = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last]
    seen = (np.arange(ys.size) + 1.0)[last]
    precision = tp / seen
    recall_step = np.diff(np.r_[0.0, tp]) / n_pos
    return float(np.sum(precision * recall_step))


def top_decile_lift(y: ArrayLike, p: ArrayLike, fraction: float = 0.1) -> float:
    """Churn rate among the top ``fraction`` by score over the overall churn rate.

    The top group has ceil(fraction * n) customers; customers tied with its boundary score
    contribute pro rata (their mean churn rate), so the result does not depend on row order.
    NaN without churners.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    yy, pp = _arrays(y=y, p=p)
    _binary(yy)
    base = yy.mean()
    if base == 0:
        return math.nan
    k = math.ceil(fraction * yy.size)
    ys = _tie_averaged(yy, pp, descending=True)
    return float(ys[:k].mean() / base)


def _tie_averaged(values: FloatArray, score: FloatArray, descending: bool) -> FloatArray:
    """``values`` ordered by ``score`` with each tie block replaced by its mean.

    The expectation over all orderings of the ties, for any statistic linear in the
    ordered values (cumulative sums, top-k sums).
    """
    order = np.argsort(-score if descending else score, kind="mergesort")
    vs, ss = values[order], score[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    sums = np.add.reduceat(vs, starts)
    sizes = np.diff(np.r_[starts, vs.size])
    return np.repeat(sums / sizes, sizes)


# --------------------------------------------------------------------------------------
# churn: calibration
# --------------------------------------------------------------------------------------


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared error of probabilities: 0 perfect, 0.25 for a constant 0.5."""
    yy, pp = _arrays(y=y, p=p)
    _binary(yy)
    return float(np.mean((pp - yy) ** 2))


def _bin_ids(
    p: FloatArray, n_bins: int, strategy: Literal["uniform", "quantile"]
) -> tuple[NDArray[np.intp], FloatArray]:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("p must be probabilities in [0, 1]")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    # right-closed bins except the first; p == 1 falls in the last bin
    ids = np.clip(np.searchsorted(edges[1:-1], p, side="left"), 0, n_bins - 1)
    return ids, edges


def calibration_curve(
    y: ArrayLike,
    p: ArrayLike,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> pd.DataFrame:
    """Reliability-diagram data: one row per non-empty bin.

    Columns ``bin``, ``lower``, ``upper``, ``mean_predicted``, ``fraction_positive``,
    ``count``. ``uniform`` cuts [0, 1] in equal widths; ``quantile`` puts about the same
    number of customers in each bin (better when scores crowd near 0). Bins are (lower,
    upper], the first one [0, upper].
    """
    yy, pp = _arrays(y=y, p=p)
    _binary(yy)
    ids, edges = _bin_ids(pp, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=pp, minlength=n_bins)
    sum_y = np.bincount(ids, weights=yy, minlength=n_bins)
    used = count > 0
    return pd.DataFrame(
        {
            "bin": np.flatnonzero(used),
            "lower": edges[:-1][used],
            "upper": edges[1:][used],
            "mean_predicted": sum_p[used] / count[used],
            "fraction_positive": sum_y[used] / count[used],
            "count": count[used],
        }
    )


def expected_calibration_error(
    y: ArrayLike,
    p: ArrayLike,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> float:
    """Sum over bins of (bin share of customers) x |churn rate - mean probability|.

    Default: 10 equal-width bins on [0, 1] (see :func:`calibration_curve` for the bins).
    """
    curve = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    weight = curve["count"].to_numpy() / curve["count"].sum()
    gap = np.abs(curve["fraction_positive"] - curve["mean_predicted"]).to_numpy()
    return float(np.sum(weight * gap))


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def concordance_index(time: ArrayLike, event: ArrayLike, predicted_time: ArrayLike) -> float:
    """Harrell's C for right-censored times: share of comparable pairs ordered correctly.

    A pair (i, j) is comparable when i had the event (``event`` 1, e.g. bought again) and
    ``time_i < time_j``, or ``time_i == time_j`` with j censored (j lasted at least as long).
    It is concordant when ``predicted_time_i < predicted_time_j``; prediction ties count 1/2.
    Pass predicted *times* (larger = later); for a risk score pass its negative. NaN
    without comparable pairs.

    O(n log^2 n): a bottom-up merge over the rows sorted by time, each level vectorised with
    one sort and ``searchsorted``; 100k rows take well under a second.
    """
    tt, ee, pp = _arrays(time=time, event=event, predicted_time=predicted_time)
    _binary(ee, "event")
    n = tt.size
    # sort by time, events before censored at equal times, then by prediction
    order = np.lexsort((pp, -ee, tt))
    tt, ee, pp = tt[order], ee[order], pp[order]
    rank = rankdata(pp, method="dense").astype(np.int64)  # 1..R
    span = np.int64(rank.max() + 1)
    pos = np.arange(n, dtype=np.int64)
    is_event = ee == 1

    greater = np.zeros(n, dtype=np.int64)  # later rows with a larger prediction
    equal = np.zeros(n, dtype=np.int64)  # later rows with the same prediction
    width = 1
    while width < n:
        block = pos // width
        pair = pos // (2 * width)
        right = (block % 2) == 1
        keys = np.sort(pair[right] * span + rank[right])
        left = ~right & is_event
        base = pair[left] * span
        lo = np.searchsorted(keys, base + rank[left], side="left")
        hi = np.searchsorted(keys, base + rank[left], side="right")
        end = np.searchsorted(keys, base + span, side="left")
        greater[left] += end - hi
        equal[left] += hi - lo
        width *= 2

    after = (n - 1 - pos)[is_event]
    concordant = float(greater[is_event].sum())
    tied = float(equal[is_event].sum())
    discordant = float(after.sum()) - concordant - tied

    # Remove pairs of events at the same time (not comparable). Sorted by prediction within
    # such a block, each pair was counted concordant (prediction <) or tied (prediction ==).
    ev = pd.DataFrame({"t": tt[is_event], "p": pp[is_event]})
    per_time = ev.groupby("t").size().to_numpy(dtype="float64")
    per_time_pred = ev.groupby(["t", "p"]).size().to_numpy(dtype="float64")
    same_time_pairs = float(np.sum(per_time * (per_time - 1) / 2))
    same_time_tied = float(np.sum(per_time_pred * (per_time_pred - 1) / 2))
    tied -= same_time_tied
    concordant -= same_time_pairs - same_time_tied

    comparable = concordant + discordant + tied
    if comparable == 0:
        return math.nan
    return (concordant + 0.5 * tied) / comparable


# --------------------------------------------------------------------------------------
# counts and spend
# --------------------------------------------------------------------------------------


def mae(pred: ArrayLike, actual: ArrayLike) -> float:
    """Mean absolute error per customer (e.g. purchases or spend in the horizon)."""
    pp, aa = _arrays(pred=pred, actual=actual)
    return float(np.mean(np.abs(pp - aa)))


def aggregate_error(pred: ArrayLike, actual: ArrayLike) -> float:
    """sum(pred) / sum(actual) - 1: the error of the total forecast (finance cares about it).

    Positive = over-forecast. NaN when the actual total is 0.
    """
    pp, aa = _arrays(pred=pred, actual=actual)
    total = aa.sum()
    if total == 0:
        return math.nan
    return float(pp.sum() / total - 1.0)


def gini(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Normalised Gini of a ranking of customers by predicted value (spend, CLV).

    Order customers by ``predicted`` descending and take the Lorenz curve of ``actual``
    (cumulative share of actual total against share of customers); the Gini is twice the
    area between that curve and the diagonal. Normalised = Gini(predicted order) /
    Gini(perfect order by actual): 1 perfect ranking, 0 random, negative worse than random.
    Ties in ``predicted`` are averaged over (expected value under a random tie order).
    For 0/1 ``actual`` it equals 2 * ROC AUC - 1. ``actual`` must be >= 0, not all 0.
    """
    aa, pp = _arrays(actual=actual, predicted=predicted)
    if (aa < 0).any():
        raise ValueError("actual must be >= 0 (spend, purchases)")
    if aa.sum() == 0:
        raise ValueError("actual sums to 0: the Gini of a ranking is undefined")

    def raw(ordered: FloatArray) -> float:
        n = ordered.size
        lorenz = np.cumsum(ordered) / ordered.sum()
        return float(lorenz.sum() / n - (n + 1) / (2 * n))

    best = raw(np.sort(aa)[::-1])
    if best == 0:
        return math.nan
    return raw(_tie_averaged(aa, pp, descending=True)) / best


# --------------------------------------------------------------------------------------
# uplift: targeting by incremental response (treated vs held-out customers)
# --------------------------------------------------------------------------------------
#
# The definitions are Radcliffe's (2007) as scikit-uplift 0.5.1 implements them
# (``qini_curve``, ``perfect_qini_curve`` with negative effects, ``qini_auc_score``):
# scikit-uplift itself calls ``sklearn.utils.extmath.stable_cumsum``, deprecated in
# scikit-learn 1.8 and removed in 1.10, so retain keeps its own copy here.


def _uplift_arrays(
    y: ArrayLike, score: ArrayLike, treatment: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    yy, ss, tt = _arrays(y=y, score=score, treatment=treatment)
    _binary(yy)
    _binary(tt, "treatment")
    if tt.all() or not tt.any():
        raise ValueError("treatment must hold both treated (1) and held-out (0) customers")
    return yy, ss, tt


def qini_curve(
    y: ArrayLike, score: ArrayLike, treatment: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """(customers targeted, incremental buyers) when targeting by ``score``, highest first.

    At the top ``k`` customers: ``Y_t(k) - Y_c(k) * N_t(k) / N_c(k)``, the treated buyers
    minus the held-out buyers scaled to the treated count (0 while no held-out customer is
    among them). Tied scores are one step: points only at the end of each tie block, so the
    curve does not depend on row order. Starts at (0, 0).
    """
    yy, ss, tt = _uplift_arrays(y, score, treatment)
    order = np.argsort(ss, kind="mergesort")[::-1]
    ys, ts, ss = yy[order], tt[order], ss[order]
    ends = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1]
    n_treated = np.cumsum(ts)[ends]
    n_all = (ends + 1).astype(np.float64)
    n_control = n_all - n_treated
    y_treated = np.cumsum(ys * ts)[ends]
    y_control = np.cumsum(ys * (1.0 - ts))[ends]
    scale = np.divide(n_treated, n_control, out=np.zeros_like(n_treated), where=n_control > 0)
    return np.r_[0.0, n_all], np.r_[0.0, y_treated - y_control * scale]


def _area(x: FloatArray, g: FloatArray) -> float:
    return float(np.sum((g[1:] + g[:-1]) * np.diff(x)) / 2.0)


def qini_coefficient(y: ArrayLike, score: ArrayLike, treatment: ArrayLike) -> float:
    """Area between the Qini curve and random targeting, over the same area of the best one.

    1 = the perfect order (treated buyers first, held-out buyers last), 0 = no better than
    random, negative = worse. The random line joins (0, 0) to the curve's end; the perfect
    curve targets by ``y * treatment - y * (1 - treatment)`` (negative effects allowed).
    NaN when the perfect curve is no better than random.
    """
    yy, ss, tt = _uplift_arrays(y, score, treatment)
    x, g = qini_curve(yy, ss, tt)
    x_best, g_best = qini_curve(yy, yy * tt - yy * (1.0 - tt), tt)
    random = x[-1] * g[-1] / 2.0
    best = _area(x_best, g_best) - random
    if best == 0:
        return math.nan
    return (_area(x, g) - random) / best


def uplift_at_top(
    y: ArrayLike, score: ArrayLike, treatment: ArrayLike, fraction: float = 0.3
) -> float:
    """Buying rate of treated minus held-out customers among the top ``fraction`` by score.

    The top group has ceil(fraction * n) customers of both groups together; customers tied
    with its boundary score count pro rata, so the result does not depend on row order.
    NaN when the top group holds no treated or no held-out customer.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    yy, ss, tt = _uplift_arrays(y, score, treatment)
    k = math.ceil(fraction * yy.size)
    n_t, n_c, y_t, y_c = (
        float(_tie_averaged(values, ss, descending=True)[:k].sum())
        for values in (tt, 1.0 - tt, yy * tt, yy * (1.0 - tt))
    )
    if n_t == 0 or n_c == 0:
        return math.nan
    return y_t / n_t - y_c / n_c
