"""The timing model: a discrete-time hazard of the next purchase, and its survival curve."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from training.models.boosters import (
    BoostConfig,
    Table,
    check_fitted,
    input_matrix,
    sigmoid,
    train_booster,
)
from training.models.compiled import BoosterModel

FloatArray = NDArray[np.float64]

_P_FLOOR = 1e-9


def day_bins(horizon_days: int) -> FloatArray:
    """Bin edges of the discrete-time hazard: 0, 7, 14, 30, 60 (those below H) and H."""
    inner = [e for e in (7.0, 14.0, 30.0, 60.0) if e < horizon_days]
    return np.array([0.0, *inner, float(horizon_days)])


def person_period(
    days_to_next: FloatArray, event: FloatArray, edges: FloatArray
) -> tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]:
    """Expand snapshots into (row, bin, event-in-bin) triples up to the event/censoring bin.

    A customer who bought on day ``d`` contributes bins ``0..k(d)`` with target 1 only in
    bin ``k(d)``; a censored customer (no purchase within H) contributes every bin with
    target 0: censored customers are kept, not dropped.
    """
    n_bins = len(edges) - 1
    ev = np.asarray(event, dtype=bool)
    k = np.clip(np.searchsorted(edges, days_to_next, side="right") - 1, 0, n_bins - 1)
    last = np.where(ev, k, n_bins - 1)
    reps = last + 1
    rows = np.repeat(np.arange(len(reps), dtype=np.int64), reps)
    starts = np.cumsum(reps) - reps
    bins = np.arange(len(rows), dtype=np.int64) - np.repeat(starts, reps)
    target = (ev[rows] & (bins == last[rows])).astype(np.float64)
    return rows, bins, target


class TimingModel(BoosterModel):
    """Discrete-time hazard of the next purchase over day bins (censoring-aware).

    One LightGBM binary model on person-period rows predicts the hazard of buying in bin
    ``k`` given no purchase before it; the survival curve at bin edges is the running product
    of ``1 - hazard``. Non-event person-period rows are subsampled to ``max_rows`` with
    inverse-probability weights, which keeps training time bounded at millions of customers.
    Its own ``learning_rate`` (above the shared one) because it is the costliest booster
    (about 4 person-period rows per snapshot row) and only shapes the curve within H: the
    level comes from the churn model (``align_survival``). On CDNOW it took 70 of 120 s CPU
    at the shared rate 0.05 (all 1000 rounds).
    """

    def __init__(
        self,
        horizon_days: int = 90,
        max_rows: int = 2_000_000,
        config: BoostConfig | None = None,
        learning_rate: float = 0.15,
    ) -> None:
        self.horizon_days = horizon_days
        self.max_rows = max_rows
        self.config = config or BoostConfig({})
        self.learning_rate = learning_rate

    def _expand(
        self, X: FloatArray, days: FloatArray, event: FloatArray, rng: np.random.Generator | None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        rows, bins, target = person_period(days, event, self.edges_)
        weight = np.ones(len(rows))
        if rng is not None and len(rows) > self.max_rows:
            n_events = float(target.sum())
            rate = max((self.max_rows - n_events) / max(len(rows) - n_events, 1.0), 0.01)
            keep = (target == 1) | (rng.random(len(rows)) < rate)
            rows, bins, target = rows[keep], bins[keep], target[keep]
            weight = np.where(target == 1, 1.0, 1.0 / rate)
        return np.column_stack([X[rows], bins.astype(np.float64)]), target, weight

    def fit(
        self,
        X: pd.DataFrame,
        days_to_next: FloatArray,
        event: FloatArray,
        X_val: pd.DataFrame,
        days_val: FloatArray,
        event_val: FloatArray,
    ) -> TimingModel:
        names = list(X.columns)
        self.edges_ = day_bins(self.horizon_days)
        rng = np.random.default_rng(self.config.seed)
        xt, yt, wt = self._expand(input_matrix(X, names, "TimingModel"), days_to_next, event, rng)
        xv, yv, wv = self._expand(
            input_matrix(X_val, names, "TimingModel"), days_val, event_val, rng
        )
        self.booster_ = train_booster(
            self.config,
            "binary",
            xt,
            yt,
            [*names, "hazard_bin"],
            (xv, yv),
            wt,
            wv,
            learning_rate=self.learning_rate,
        )
        self.feature_names_in_ = names
        return self

    def survival(self, X: Table) -> FloatArray:
        """S(t) at the bin edges (shape n x (n_bins + 1), S(0) = 1), before any rescaling."""
        check_fitted(self, "booster_")
        m = input_matrix(X, self.feature_names_in_, "TimingModel")
        n_bins = len(self.edges_) - 1
        n, k = m.shape
        # person-period rows: each customer's features once per bin, then the bin number
        rows = np.empty((n, n_bins, k + 1))
        rows[:, :, :k] = m[:, None, :]
        rows[:, :, k] = np.arange(n_bins, dtype=np.float64)
        hazard = sigmoid(self.raw_scores(rows.reshape(n * n_bins, k + 1))).reshape(n, n_bins)
        # a sigmoid is never below +0.0, so clipping at 0 is only the upper bound
        np.minimum(hazard, 1.0 - _P_FLOOR, out=hazard)
        np.subtract(1.0, hazard, out=hazard)
        surv = np.empty((n, n_bins + 1))
        surv[:, 0] = 1.0
        np.cumprod(hazard, axis=1, out=surv[:, 1:])
        return surv

    def to_state(self) -> dict[str, Any]:
        """JSON-ready learned state besides the booster (which is saved as LightGBM text)."""
        check_fitted(self, "booster_")
        return {"feature_names": list(self.feature_names_in_), "edges": self.edges_.tolist()}

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        booster: lgb.Booster,
        **params: Any,  # saved JSON values
    ) -> TimingModel:
        """A fitted model from :meth:`to_state` output, its booster and its parameters."""
        model = cls(**params)
        model.booster_ = booster
        model.feature_names_in_ = state["feature_names"]
        model.edges_ = np.asarray(state["edges"], dtype=np.float64)
        return model


def align_survival(surv: FloatArray, p_churn: FloatArray) -> FloatArray:
    """Rescale the cumulative hazard so that S(H) equals the calibrated churn probability.

    S'(t) = S(t) ** (log p_churn / log S(H)) keeps the timing model's shape (when within the
    horizon purchases happen) and the churn model's level (whether one happens at all).
    """
    # minimum(maximum()) is np.clip for these non-zero bounds, without its Python wrapper
    s_h = np.minimum(np.maximum(surv[:, -1], _P_FLOOR), 1.0 - _P_FLOOR)
    p = np.minimum(np.maximum(p_churn, _P_FLOOR), 1.0 - _P_FLOOR)
    power = np.log(p) / np.log(s_h)
    out = np.minimum(np.maximum(surv, _P_FLOOR), 1.0) ** power[:, None]
    out[:, 0] = 1.0
    out[:, -1] = p_churn
    return out


class _Bins(NamedTuple):
    """What :func:`survival_summaries` reads from the bin edges, once per edges."""

    width: FloatArray  # (1, bins)
    starts: FloatArray  # (1, bins)
    day_7: tuple[int, np.float64] | None  # (bin, fraction of it) of day 7; None: at/after H
    day_30: tuple[int, np.float64] | None


@lru_cache(maxsize=16)
def _bins(edges_bytes: bytes) -> _Bins:
    edges = np.frombuffer(edges_bytes, dtype=np.float64)

    def point(t: float) -> tuple[int, np.float64] | None:
        t = min(t, float(edges[-1]))
        j = int(np.searchsorted(edges, t, side="right") - 1)
        if j >= len(edges) - 1:
            return None
        return j, (t - edges[j]) / (edges[j + 1] - edges[j])

    width = (edges[1:] - edges[:-1])[None, :]  # np.diff
    starts = edges[None, :-1].copy()
    for array in (width, starts):
        array.setflags(write=False)
    return _Bins(width, starts, point(7.0), point(30.0))


def survival_summaries(
    surv: FloatArray, edges: FloatArray, *, median: bool = True
) -> dict[str, FloatArray]:
    """p(buy by 7, 30, H), median and E[T | T < H] from S at bin edges.

    Within a bin the hazard is taken as constant (exponential interpolation). The median is
    NaN when S(H) > 0.5 (more likely than not no purchase within the horizon).
    ``median=False`` leaves ``median_days_to_next`` out: the scorer never reads it, and it
    is a third of this function's array calls.
    """
    bins = _bins(np.ascontiguousarray(edges, dtype=np.float64).tobytes())
    width = bins.width
    s_a, s_b = surv[:, :-1], surv[:, 1:]
    ratio = np.minimum(np.maximum(s_b / np.maximum(s_a, _P_FLOOR), _P_FLOOR), 1.0)
    lam = -np.log(ratio) / width
    lw = lam * width
    mass = np.maximum(s_a - s_b, 0.0)  # what np.clip(..., 0.0, None) calls
    total = mass.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(lw > 1e-8, 1.0 / lam - width * ratio / (1.0 - ratio), width / 2.0)
        expected = np.where(total > 0, (mass * (bins.starts + offset)).sum(axis=1) / total, np.nan)
    out = (
        {"median_days_to_next": _median_days(surv, edges, s_a, s_b, ratio, width)} if median else {}
    )

    def at(point: tuple[int, np.float64] | None) -> FloatArray:
        if point is None:
            return 1.0 - surv[:, -1]
        j, frac_t = point
        return 1.0 - surv[:, j] * ratio[:, j] ** frac_t

    return {
        "p_purchase_7d": at(bins.day_7),
        "p_purchase_30d": at(bins.day_30),
        "p_purchase_horizon": 1.0 - surv[:, -1],
        "expected_days_to_next": expected,
        **out,
    }


def _median_days(
    surv: FloatArray,
    edges: FloatArray,
    s_a: FloatArray,
    s_b: FloatArray,
    ratio: FloatArray,
    width: FloatArray,
) -> FloatArray:
    """The median time to the next purchase (NaN when S(H) > 0.5)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # median: first bin where S drops to 0.5, then solve S(a) * ratio**(u/w) = 0.5
        below = s_b <= 0.5
        has = below.any(axis=1)
        k = np.argmax(below, axis=1)
        idx = np.arange(len(surv))
        sa, rk, wk = s_a[idx, k], ratio[idx, k], width[0, k]
        frac = np.where(rk < 1.0, np.log(0.5 / sa) / np.log(rk), 0.0)
        return np.where(has, edges[k] + frac.clip(0.0, 1.0) * wk, np.nan)  # np.clip
