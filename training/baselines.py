"""Classic customer-base baselines the LightGBM models must beat in the backtest.

All models work on the RFM summary of :func:`rfm_summary` (the buy-till-you-die convention:
one transaction per customer and UTC calendar day, the first one is not a repeat purchase):

- :class:`BetaGeoNBD`: BG/NBD, Fader, Hardie & Lee (2005), "Counting your customers the
  easy way: an alternative to the Pareto/NBD model", Marketing Science 24(2).
- :class:`ParetoNBD`: Schmittlein, Morrison & Colombo (1987), likelihood in the form of
  Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions".
- :class:`GammaGamma`: spend per transaction, Fader, Hardie & Lee (2005), "RFM and CLV:
  using iso-value curves for customer base analysis", J. Marketing Research 42(4).
- :class:`RecencyRule`: the rule of thumb marketers use (long silence = churned).

Models follow the scikit-learn contract (hyper-parameters in ``__init__``, learned state in
attributes ending in ``_``, ``NotFittedError`` before ``fit``) and persist as plain JSON
dicts through ``to_dict`` / ``from_dict``. Time is in the summary's time unit throughout.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import optimize
from scipy.special import gammaln, hyp2f1
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from features.returns import match_log_returns, net_amounts
from features.utc import to_utc_timestamp

FloatArray = NDArray[np.float64]

RFM_COLUMNS: tuple[str, ...] = ("frequency", "recency", "T", "monetary_value")
_LOG_BOUND = 15.0  # log-parameters live in [-15, 15]: keeps exp() finite, far from any MLE


# --------------------------------------------------------------------------------------
# RFM summary
# --------------------------------------------------------------------------------------


def rfm_summary(
    log: pd.DataFrame,
    as_of: Any,
    time_unit_days: float = 7.0,
    calibration_start: Any = None,
) -> pd.DataFrame:
    """Per-customer frequency / recency / T / monetary_value as of ``as_of``.

    Uses non-return rows with ``calibration_start <= timestamp < as_of``. Orders of one
    customer on one UTC calendar day form one transaction (summed amount); ``frequency`` is
    the number of transactions after the first, ``recency`` the time from the first to the
    last transaction day and ``T`` from the first transaction day to ``as_of``, both in
    units of ``time_unit_days``. ``monetary_value`` is the mean amount of the repeat
    transactions (0 when ``frequency == 0``), the convention the Gamma-Gamma model expects;
    amounts are net of the returns made before ``as_of`` (``features.returns``).
    Customers without a purchase in the window are absent; the index keeps the log's
    ``customer_id`` dtype (categorical for a canonical log). Naive ``as_of`` is taken as UTC.
    """
    missing = [c for c in ("customer_id", "timestamp", "amount", "is_return") if c not in log]
    if missing:
        raise ValueError(f"rfm_summary: log lacks column(s) {missing}; has {list(log.columns)}")
    if time_unit_days <= 0:
        raise ValueError(f"rfm_summary: time_unit_days must be > 0, got {time_unit_days}")
    as_of_ts = to_utc_timestamp(as_of)
    ts = log["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"rfm_summary: column 'timestamp' must be tz-aware (UTC), got dtype {ts.dtype}"
        )
    keep = (~log["is_return"].astype(bool)) & (ts < as_of_ts)
    if calibration_start is not None:
        keep &= ts >= to_utc_timestamp(calibration_start, "calibration_start")
    rows = log.loc[keep, ["customer_id", "timestamp", "amount"]]
    amount = rows["amount"].astype("float64")
    if (amount < 0).any():
        bad = rows.index[amount < 0][:5].tolist()
        raise ValueError(f"rfm_summary: column 'amount' has negative values at rows {bad}")
    is_return = log["is_return"].to_numpy(dtype=bool)
    if is_return.any():
        # spend net of the returns made before as_of, like the features and labels
        net = net_amounts(
            log["amount"].to_numpy(dtype=np.float64),
            is_return,
            match_log_returns(log),
            (ts < as_of_ts).to_numpy(dtype=bool),
        )
        amount = pd.Series(net[keep.to_numpy(dtype=bool)], index=rows.index)

    day = rows["timestamp"].dt.tz_convert("UTC").dt.floor("D")
    days = (
        pd.DataFrame({"customer_id": rows["customer_id"], "day": day, "amount": amount})
        .groupby(["customer_id", "day"], observed=True, sort=True)["amount"]
        .sum()
        .reset_index()
    )
    per = days.groupby("customer_id", observed=True, sort=True)
    first = per["day"].min()
    last = per["day"].max()
    n_days = per["day"].size()
    total = per["amount"].sum()
    first_amount = per["amount"].first()  # rows are sorted by day within customer

    unit = pd.Timedelta(days=time_unit_days)
    frequency = (n_days - 1).astype("float64")
    repeat_spend = total - first_amount
    monetary = np.where(frequency > 0, repeat_spend / frequency.where(frequency > 0, 1.0), 0.0)
    out = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last - first) / unit,
            "T": (as_of_ts - first) / unit,
            "monetary_value": monetary,
        }
    )
    out.index.name = "customer_id"
    return out


# --------------------------------------------------------------------------------------
# shared machinery
# --------------------------------------------------------------------------------------


def _as_float_arrays(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate an (x, t_x, T) triple; the error names the offending argument and position.

    Returns float64 copies. Valid same-shape input (every scoring call) passes one cheap
    combined check; anything else takes the per-argument checks that name the problem.
    """
    x, tx, age = (np.asarray(v, dtype="float64") for v in (frequency, recency, T))
    if x.shape == tx.shape == age.shape:
        if x.size and _valid_triple(x, tx, age):
            return x.astype("float64"), tx.astype("float64"), age.astype("float64")
    else:
        x, tx, age = np.broadcast_arrays(x, tx, age)
    for name, arr in (("frequency", x), ("recency", tx), ("T", age)):
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            pos = np.flatnonzero(bad.ravel())[:5].tolist()
            raise ValueError(f"{name} must be finite and >= 0; bad at positions {pos}")
    bad = tx > age * (1 + 1e-12) + 1e-12
    if bad.any():
        pos = np.flatnonzero(bad.ravel())[:5].tolist()
        raise ValueError(f"recency must be <= T; violated at positions {pos}")
    bad = (x == 0) & (tx > 0)
    if bad.any():
        pos = np.flatnonzero(bad.ravel())[:5].tolist()
        raise ValueError(f"recency must be 0 when frequency is 0; violated at positions {pos}")
    return x.astype("float64"), tx.astype("float64"), age.astype("float64")


def _valid_triple(x: FloatArray, tx: FloatArray, age: FloatArray) -> bool:
    """True when ``_as_float_arrays``' checks all pass; False sends it to the detailed ones.

    NaN propagates through minimum/maximum and fails both comparisons, so one lower and one
    upper bound cover "finite and >= 0" for all three arguments (and warn about nothing).
    """
    lo = np.minimum(np.minimum(x, tx), age)
    hi = np.maximum(np.maximum(x, tx), age)
    if not (lo.min() >= 0.0 and hi.max() < np.inf):
        return False
    if (tx > age * (1 + 1e-12) + 1e-12).any():
        return False
    return not ((x == 0) & (tx > 0)).any()


def _group_rows(*cols: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """Unique rows and their counts: the likelihood only needs each distinct row once."""
    stacked = np.column_stack(cols)
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype("float64")


# The no-dropout collapse: BG/NBD and Pareto/NBD fitted to a population that shows no sign
# of dropout (a short or growing log) push their dropout distribution to "never": BG/NBD's
# a -> 0 (seen: a = 3.5e-05), Pareto/NBD's s -> 0 (seen: s = 1.7e-04) or beta -> infinity.
# Their P(alive) is then ~1 for everyone and says nothing about churn. The rule, on the
# fitted parameters: BG/NBD is degenerate when the mean dropout probability after a purchase,
# a / (a + b), is below 0.1 %; Pareto/NBD when the share of customers expected to drop out
# within ``span`` weeks (the longest customer age of the fit), 1 - (beta / (beta + span))^s,
# is below 1 %. For scale: the CDNOW fits at 1998-01-01 give 21 % per purchase (a = 0.61,
# b = 2.27) and 61 % over 78 weeks (s = 0.37, beta = 6.4).
BGNBD_MIN_DROPOUT = 1e-3
PNBD_MIN_DROPOUT = 1e-2


def degenerate_fit(model: str, params: dict[str, float], span: float = 52.0) -> str | None:
    """Why a fitted BG/NBD (``bgnbd``) or Pareto/NBD (``paretonbd``) is degenerate, or None.

    ``span`` is the time the fit observed (its largest ``T``), in the fit's time unit. Any
    parameter not finite and positive is degenerate too.
    """
    bad = [k for k, v in params.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        return f"parameter(s) {bad} not finite and positive"
    if model == "bgnbd":
        a, b = params["a"], params["b"]
        dropout = a / (a + b)
        if dropout < BGNBD_MIN_DROPOUT:
            return (
                f"a = {a:.3g}, b = {b:.3g}: mean dropout probability per purchase "
                f"{dropout:.2g} < {BGNBD_MIN_DROPOUT:g}, a no-dropout collapse "
                "(P(alive) ~ 1 for everyone)"
            )
        return None
    if model == "paretonbd":
        s_, beta = params["s"], params["beta"]
        dropout = 1.0 - (beta / (beta + max(span, 0.0))) ** s_
        if dropout < PNBD_MIN_DROPOUT:
            return (
                f"s = {s_:.3g}, beta = {beta:.3g}: expected dropout within {span:.0f} time "
                f"units {dropout:.2g} < {PNBD_MIN_DROPOUT:g}, a no-dropout collapse "
                "(P(alive) ~ 1 for everyone)"
            )
        return None
    raise ValueError(f"degenerate_fit: unknown model {model!r}; 'bgnbd' or 'paretonbd'")


class FitBudgetExceeded(RuntimeError):
    """The likelihood was evaluated ``max_evaluations`` times without converging."""


def _fit_log_params(
    neg_mean_ll: Any,
    x0: NDArray[np.float64],
    penalizer: float,
    max_evaluations: int | None = None,
) -> tuple[FloatArray, optimize.OptimizeResult]:
    """Minimise the mean negative log-likelihood over log-parameters.

    L-BFGS-B from ``x0``; only if it reports failure (finite-difference gradients on the
    flat Pareto/NBD ridge can stall it) a Nelder-Mead polish continues from its end point.
    ``max_evaluations`` bounds the work deterministically: Pareto/NBD's hyp2f1 slows down
    by orders of magnitude in some parameter regions (seen: minutes for one fit on a
    synthetic snapshot), and per-snapshot feature fits must not hang training.
    """
    calls = [0]

    def objective(logp: FloatArray) -> float:
        calls[0] += 1
        if max_evaluations is not None and calls[0] > max_evaluations:
            raise FitBudgetExceeded(f"no convergence within {max_evaluations} evaluations")
        value = neg_mean_ll(np.exp(logp)) + penalizer * float(np.sum(np.exp(logp) ** 2))
        return value if np.isfinite(value) else 1e300

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(x0)
    first = optimize.minimize(
        objective, x0, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-12, "gtol": 1e-8}
    )
    polish = first
    if not first.success:
        polish = optimize.minimize(
            objective,
            first.x,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-7, "fatol": 1e-11, "maxiter": 2000},
        )
    best = polish if polish.fun <= first.fun else first
    if not np.isfinite(best.fun) or best.fun >= 1e300:
        raise RuntimeError(f"maximum-likelihood fit failed: {best.message}")
    return np.exp(best.x), best


class _CountModel:
    """Common API of the BG/NBD and Pareto/NBD transaction-count models."""

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ()
    params_: dict[str, float]
    loglik_: float
    n_customers_: int

    def __init__(self, penalizer: float = 0.0, max_evaluations: int | None = None) -> None:
        self.penalizer = penalizer
        self.max_evaluations = max_evaluations

    # subclasses provide the per-row log-likelihood and initial values
    def _loglik_rows(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        raise NotImplementedError

    def _initial(self, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
        raise NotImplementedError

    def _check_fitted(self) -> FloatArray:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet: call fit(frequency, recency, T) "
                "or from_dict(...) first"
            )
        return np.array([self.params_[k] for k in self.PARAM_NAMES], dtype="float64")

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Self:
        """Maximum-likelihood fit on per-customer (frequency, recency, T)."""
        if self.penalizer < 0:
            raise ValueError(f"penalizer must be >= 0, got {self.penalizer}")
        x, tx, age = _as_float_arrays(frequency, recency, T)
        if x.size == 0:
            raise ValueError("cannot fit on zero customers")
        (ux, utx, uage), weight = _group_rows(x.ravel(), tx.ravel(), age.ravel())
        n = float(weight.sum())

        def neg_mean_ll(params: FloatArray) -> float:
            return -float(np.dot(weight, self._loglik_rows(params, ux, utx, uage))) / n

        params, _ = _fit_log_params(
            neg_mean_ll, np.log(self._initial(x, tx, age)), self.penalizer, self.max_evaluations
        )
        self.params_ = {k: float(v) for k, v in zip(self.PARAM_NAMES, params, strict=True)}
        self.loglik_ = -neg_mean_ll(params) * n
        self.n_customers_ = int(n)
        return self

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
        """Per-customer log-likelihood of (x, t_x, T) under the fitted parameters."""
        params = self._check_fitted()
        return self._loglik_rows(params, *_as_float_arrays(frequency, recency, T))

    def probability_of_no_purchase(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(no purchase in (T, T + t] | x, t_x, T): the churn probability for horizon t.

        Exact for both models: observing (x, t_x) over (0, T] and nothing in (T, T + t] is
        observing (x, t_x) over (0, T + t], so the probability is L(x, t_x, T + t) /
        L(x, t_x, T). It mixes P(dead) with P(alive) * P(silent for t | alive).
        """
        params = self._check_fitted()
        return self._no_purchase(params, t, *_as_float_arrays(frequency, recency, T))

    def _no_purchase(
        self,
        params: FloatArray,
        t: float | ArrayLike,
        x: FloatArray,
        tx: FloatArray,
        age: FloatArray,
    ) -> FloatArray:
        """:meth:`probability_of_no_purchase` on arrays ``_as_float_arrays`` already checked."""
        horizon = np.asarray(t, dtype="float64")
        if (horizon < 0).any() or not np.isfinite(horizon).all():
            raise ValueError(f"t must be finite and >= 0, got {t!r}")
        later, now = self._loglik_later_and_now(params, x, tx, age, horizon)
        return np.clip(np.exp(later - now), 0.0, 1.0)

    def _loglik_later_and_now(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray, t: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Log-likelihood rows over (0, T + t] and over (0, T]."""
        return self._loglik_rows(params, x, tx, age + t), self._loglik_rows(params, x, tx, age)

    def survival_function(
        self, times: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(next purchase later than T + u) for each u in ``times``: shape (n, len(times)).

        The curve does not reach 0: it levels off at P(dead) (customers who never buy again).
        """
        grid = np.asarray(times, dtype="float64").ravel()
        x, tx, age = _as_float_arrays(frequency, recency, T)
        x, tx, age = (np.atleast_1d(v).ravel()[:, None] for v in (x, tx, age))
        return self.probability_of_no_purchase(grid[None, :], x, tx, age)

    def restricted_mean_time_to_purchase(
        self,
        horizon: float,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        n_grid: int = 64,
    ) -> FloatArray:
        """Expected time to the next purchase capped at ``horizon`` (area under the survival).

        The uncapped mean is infinite (some customers never return); the restricted mean is
        finite, equals ``horizon`` for a surely-dead customer and ranks customers by timing.
        """
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        grid = np.linspace(0.0, horizon, n_grid + 1)
        surv = self.survival_function(grid, frequency, recency, T)
        return np.trapezoid(surv, grid, axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (hyper-parameters and learned parameters)."""
        self._check_fitted()
        return {
            "model": type(self).__name__,
            "penalizer": self.penalizer,
            "params": dict(self.params_),
            "loglik": self.loglik_,
            "n_customers": self.n_customers_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        if state.get("model") != cls.__name__:
            raise ValueError(f"state is for model {state.get('model')!r}, not {cls.__name__!r}")
        missing = [k for k in cls.PARAM_NAMES if k not in state.get("params", {})]
        if missing:
            raise ValueError(f"{cls.__name__} state lacks parameter(s) {missing}")
        model = cls(penalizer=float(state.get("penalizer", 0.0)))
        model.params_ = {k: float(state["params"][k]) for k in cls.PARAM_NAMES}
        model.loglik_ = float(state.get("loglik", math.nan))
        model.n_customers_ = int(state.get("n_customers", 0))
        return model

    def __repr__(self) -> str:
        if not hasattr(self, "params_"):
            return f"{type(self).__name__}(penalizer={self.penalizer})"
        fitted = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{type(self).__name__}({fitted}, loglik={self.loglik_:.2f})"


# --------------------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------------------


class BetaGeoNBD(_CountModel):
    """BG/NBD: Poisson purchases at rate lambda ~ Gamma(r, alpha); after each purchase the
    customer drops out with probability p ~ Beta(a, b).

    ``penalizer`` adds ``penalizer * sum(params**2)`` to the mean negative log-likelihood
    (the lifetimes convention), which tames small or degenerate samples.
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("r", "alpha", "a", "b")

    def _initial(self, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
        rate = max(float(x.mean()) / max(float(age.mean()), 1e-9), 1e-3)
        return np.array([1.0, 1.0 / rate, 1.0, 1.0])

    @staticmethod
    def _loglik_head(
        params: FloatArray, x: FloatArray, tx: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """The terms of the log-likelihood that do not depend on T: (a1 + a2, a4)."""
        r, alpha, a, b = params
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(
                x > 0,
                np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx),
                -np.inf,
            )
        return a1 + a2, a4

    @staticmethod
    def _loglik_tail(
        params: FloatArray, x: FloatArray, age: FloatArray, head: FloatArray, a4: FloatArray
    ) -> FloatArray:
        r, alpha = params[0], params[1]
        a3 = -(r + x) * np.log(alpha + age)
        return head + np.logaddexp(a3, a4)

    def _loglik_rows(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        head, a4 = self._loglik_head(params, x, tx)
        return self._loglik_tail(params, x, age, head, a4)

    def _loglik_later_and_now(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray, t: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """As the base class, with the T-free terms of both likelihoods computed once."""
        head, a4 = self._loglik_head(params, x, tx)
        later = self._loglik_tail(params, x, age + t, head, a4)
        return later, self._loglik_tail(params, x, age, head, a4)

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(still alive at T | x, t_x, T); 1 for customers with no repeat purchase."""
        params = self._check_fitted()
        return self._p_alive(params, *_as_float_arrays(frequency, recency, T))

    @staticmethod
    def _p_alive(params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
        """:meth:`conditional_probability_alive` on checked arrays."""
        r, alpha, a, b = params
        log_ratio = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * (np.log(alpha + age) - np.log(alpha + tx))
        )
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700.0))), 1.0)

    def expected_purchases(self, t: float | ArrayLike) -> FloatArray:
        """E[X(t)]: repeat purchases of a new customer in their first t units."""
        r, alpha, a, b = self._check_fitted()
        tt = np.asarray(t, dtype="float64")
        z = tt / (alpha + tt)
        return (
            (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + tt)) ** r * hyp2f1(r, b, a + b - 1, z))
        )

    def conditional_expected_purchases(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[repeat purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10)."""
        params = self._check_fitted()
        x, tx, age = _as_float_arrays(frequency, recency, T)
        return self._expected_given(params, t, x, age, self._p_alive(params, x, tx, age))

    @staticmethod
    def _expected_given(
        params: FloatArray,
        t: float | ArrayLike,
        x: FloatArray,
        age: FloatArray,
        p_alive: FloatArray,
    ) -> FloatArray:
        """:meth:`conditional_expected_purchases` on checked arrays and their P(alive)."""
        r, alpha, a, b = params
        tt = np.asarray(t, dtype="float64")
        z = tt / (alpha + age + tt)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
        bracket = 1 - ((alpha + age) / (alpha + age + tt)) ** (r + x) * hyp
        factor = (a + b + x - 1) / (a - 1)
        return factor * bracket * p_alive


# --------------------------------------------------------------------------------------
# Pareto/NBD
# --------------------------------------------------------------------------------------


class ParetoNBD(_CountModel):
    """Pareto/NBD: Poisson purchases at rate lambda ~ Gamma(r, alpha) while alive;
    exponential lifetime with rate mu ~ Gamma(s, beta).

    ``penalizer`` as for :class:`BetaGeoNBD`.
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("r", "alpha", "s", "beta")

    def _initial(self, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
        rate = max(float(x.mean()) / max(float(age.mean()), 1e-9), 1e-3)
        mean_t = max(float(age.mean()), 1e-3)
        return np.array([1.0, 1.0 / rate, 1.0, mean_t])

    @staticmethod
    def _log_a0(params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
        """log A0 of Fader & Hardie's note, taking the hyp2f1 branch with argument in [0, 1).

        A0 is a difference of two positive terms (t_x and T); it is formed in log space as
        l1 + log(1 - exp(l2 - l1)) so it is 0 -> -inf cleanly when t_x == T.
        """
        r, alpha, s, beta = params
        rsx = r + s + x
        if alpha >= beta:
            big, b_arg = alpha, s + 1.0
        else:
            big, b_arg = beta, r + x
        gap = abs(alpha - beta)
        l1 = np.log(hyp2f1(rsx, b_arg, rsx + 1.0, gap / (big + tx))) - rsx * np.log(big + tx)
        l2 = np.log(hyp2f1(rsx, b_arg, rsx + 1.0, gap / (big + age))) - rsx * np.log(big + age)
        diff = np.minimum(l2 - l1, 0.0)
        with np.errstate(divide="ignore"):
            return l1 + np.log(-np.expm1(diff))

    def _log_alive_odds(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        """log P(dead, data) / P(alive, data)."""
        r, alpha, s, beta = params
        return (
            np.log(s)
            - np.log(r + s + x)
            + (r + x) * np.log(alpha + age)
            + s * np.log(beta + age)
            + self._log_a0(params, x, tx, age)
        )

    def _loglik_rows(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        r, alpha, s, beta = params
        head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        alive = -(r + x) * np.log(alpha + age) - s * np.log(beta + age)
        # far from the optimum A0 can come out NaN; the optimiser treats a non-finite
        # likelihood as a wall (``_fit_log_params``), so the warning is only noise
        with np.errstate(invalid="ignore"):
            dead = np.log(s) - np.log(r + s + x) + self._log_a0(params, x, tx, age)
            return head + np.logaddexp(alive, dead)

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(still alive at T | x, t_x, T)."""
        params = self._check_fitted()
        return self._p_alive(params, *_as_float_arrays(frequency, recency, T))

    def _p_alive(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        """:meth:`conditional_probability_alive` on checked arrays."""
        odds = self._log_alive_odds(params, x, tx, age)
        return 1.0 / (1.0 + np.exp(np.minimum(odds, 700.0)))

    def conditional_expected_purchases(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[purchases in (T, T + t] | x, t_x, T] (Schmittlein et al. 1987, eq. 22)."""
        params = self._check_fitted()
        r, alpha, s, beta = params
        x, tx, age = _as_float_arrays(frequency, recency, T)
        tt = np.asarray(t, dtype="float64")
        p_alive = self._p_alive(params, x, tx, age)
        scale = (r + x) * (beta + age) / (alpha + age)
        if abs(s - 1.0) < 1e-8:
            life = np.log((beta + age + tt) / (beta + age))
        else:
            life = (1 - ((beta + age) / (beta + age + tt)) ** (s - 1)) / (s - 1)
        return p_alive * scale * life


# --------------------------------------------------------------------------------------
# Gamma-Gamma spend
# --------------------------------------------------------------------------------------


class GammaGamma:
    """Spend per transaction: z ~ Gamma(p, nu), nu ~ Gamma(q, v) per customer.

    Fitted on customers with ``frequency > 0`` and their mean repeat spend; assumes spend is
    independent of the transaction process (check with a correlation before relying on it).
    The model needs positive spend: repeat customers whose mean repeat spend is 0 (free
    items, as in the CDNOW master log) are left out of the fit when ``drop_zero_spend``
    (their number is kept in ``n_zero_spend_``), else ``fit`` raises.
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("p", "q", "v")
    params_: dict[str, float]
    loglik_: float
    n_customers_: int
    n_zero_spend_: int

    def __init__(self, penalizer: float = 0.0, drop_zero_spend: bool = True) -> None:
        self.penalizer = penalizer
        self.drop_zero_spend = drop_zero_spend

    @staticmethod
    def _validate(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[FloatArray, FloatArray]:
        x, m = np.broadcast_arrays(
            np.asarray(frequency, dtype="float64"), np.asarray(monetary_value, dtype="float64")
        )
        for name, arr in (("frequency", x), ("monetary_value", m)):
            bad = ~np.isfinite(arr) | (arr < 0)
            if bad.any():
                pos = np.flatnonzero(bad.ravel())[:5].tolist()
                raise ValueError(f"{name} must be finite and >= 0; bad at positions {pos}")
        return x, m

    @staticmethod
    def _loglik_rows(params: FloatArray, x: FloatArray, m: FloatArray) -> FloatArray:
        p, q, v = params
        px = p * x
        return (
            gammaln(px + q)
            - gammaln(px)
            - gammaln(q)
            + q * np.log(v)
            + (px - 1) * np.log(m)
            + px * np.log(x)
            - (px + q) * np.log(x * m + v)
        )

    def _check_fitted(self) -> FloatArray:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                "GammaGamma is not fitted yet: call fit(frequency, monetary_value) "
                "or from_dict(...) first"
            )
        return np.array([self.params_[k] for k in self.PARAM_NAMES], dtype="float64")

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGamma:
        """Maximum-likelihood fit; rows with frequency 0 are ignored (no repeat spend)."""
        if self.penalizer < 0:
            raise ValueError(f"penalizer must be >= 0, got {self.penalizer}")
        x, m = (v.ravel() for v in self._validate(frequency, monetary_value))
        zero_spend = (x > 0) & (m <= 0)
        if zero_spend.any() and not self.drop_zero_spend:
            pos = np.flatnonzero(zero_spend)[:5].tolist()
            raise ValueError(
                f"monetary_value must be > 0 where frequency > 0; 0 at positions {pos} "
                f"({int(zero_spend.sum())} rows); pass drop_zero_spend=True to leave them out"
            )
        use = (x > 0) & ~zero_spend
        x, m = x[use], m[use]
        if x.size == 0:
            raise ValueError(
                "GammaGamma.fit needs customers with frequency > 0 and monetary_value > 0; got none"
            )
        (ux, um), weight = _group_rows(x, m)
        n = float(weight.sum())

        def neg_mean_ll(params: FloatArray) -> float:
            return -float(np.dot(weight, self._loglik_rows(params, ux, um))) / n

        mean_m = float(m.mean())
        params, _ = _fit_log_params(
            neg_mean_ll, np.log(np.array([1.0, 2.0, mean_m])), self.penalizer
        )
        self.params_ = {k: float(v) for k, v in zip(self.PARAM_NAMES, params, strict=True)}
        self.loglik_ = -neg_mean_ll(params) * n
        self.n_customers_ = int(n)
        self.n_zero_spend_ = int(zero_spend.sum())
        return self

    def conditional_expected_average_profit(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """E[spend per transaction | x, m]: a weighted mean of the population mean p*v/(q-1)
        and the customer's own mean m, the weight on m growing with x.

        For frequency 0 this is the population mean (needs q > 1).
        """
        p, q, v = self._check_fitted()
        x, m = self._validate(frequency, monetary_value)
        return (p * (v + x * m)) / (p * x + q - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        self._check_fitted()
        return {
            "model": "GammaGamma",
            "penalizer": self.penalizer,
            "drop_zero_spend": self.drop_zero_spend,
            "params": dict(self.params_),
            "loglik": self.loglik_,
            "n_customers": self.n_customers_,
            "n_zero_spend": self.n_zero_spend_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> GammaGamma:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        if state.get("model") != "GammaGamma":
            raise ValueError(f"state is for model {state.get('model')!r}, not 'GammaGamma'")
        missing = [k for k in cls.PARAM_NAMES if k not in state.get("params", {})]
        if missing:
            raise ValueError(f"GammaGamma state lacks parameter(s) {missing}")
        model = cls(
            penalizer=float(state.get("penalizer", 0.0)),
            drop_zero_spend=bool(state.get("drop_zero_spend", True)),
        )
        model.params_ = {k: float(state["params"][k]) for k in cls.PARAM_NAMES}
        model.loglik_ = float(state.get("loglik", math.nan))
        model.n_customers_ = int(state.get("n_customers", 0))
        model.n_zero_spend_ = int(state.get("n_zero_spend", 0))
        return model


# --------------------------------------------------------------------------------------
# Recency rule
# --------------------------------------------------------------------------------------


class RecencyRule:
    """The marketer's rule: the longer a customer has been silent, the likelier they churned.

    ``score`` = T - recency, the time since the last purchase day (what marketers call
    recency), in the summary's time unit. On the CDNOW sample it ranks 39-week churn with a
    ROC AUC of about 0.77, slightly better than BG/NBD's P(no purchase) (0.76); variants that
    divide the silence by the customer's own inter-purchase gap rank worse (about 0.55),
    because one-time buyers, the likeliest churners, have no gap of their own.

    ``fit`` learns an isotonic (monotone increasing) map from score to the churn rate
    observed in a labelled training snapshot, so ``predict_churn_probability`` is calibrated.
    Expected purchases in the next t units = the historical repeat rate frequency / T times t.
    """

    def score(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
        """Monotone churn score: time since the last purchase day (>= 0)."""
        _, tx, age = _as_float_arrays(frequency, recency, T)
        return age - tx

    def fit(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, churned: ArrayLike
    ) -> RecencyRule:
        """Learn the score -> P(churn) map from a labelled snapshot (churned: 0/1 per row)."""
        x, tx, age = _as_float_arrays(frequency, recency, T)
        y = np.asarray(churned)
        if y.shape != x.shape:
            raise ValueError(f"churned has shape {y.shape}, expected {x.shape}")
        if not np.isin(y, [0, 1]).all():
            raise ValueError("churned must hold only 0/1 (or bool) values")
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(self.score(x, tx, age), y.astype("float64"))
        self.thresholds_x_ = np.asarray(iso.X_thresholds_, dtype="float64")
        self.thresholds_y_ = np.asarray(iso.y_thresholds_, dtype="float64")
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "thresholds_x_"):
            raise NotFittedError("RecencyRule is not fitted yet: call fit(...) or from_dict(...)")

    def predict_churn_probability(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Calibrated P(churn) from the isotonic map learned in ``fit``."""
        self._check_fitted()
        return np.interp(self.score(frequency, recency, T), self.thresholds_x_, self.thresholds_y_)

    def conditional_expected_purchases(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Historical repeat rate frequency / T extrapolated over the next t units."""
        x, _, age = _as_float_arrays(frequency, recency, T)
        rate = np.divide(x, age, out=np.zeros_like(x), where=age > 0)
        return rate * np.asarray(t, dtype="float64")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        self._check_fitted()
        return {
            "model": "RecencyRule",
            "thresholds_x": self.thresholds_x_.tolist(),
            "thresholds_y": self.thresholds_y_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RecencyRule:
        """Rebuild a fitted rule from :meth:`to_dict` output."""
        if state.get("model") != "RecencyRule":
            raise ValueError(f"state is for model {state.get('model')!r}, not 'RecencyRule'")
        rule = cls()
        rule.thresholds_x_ = np.asarray(state["thresholds_x"], dtype="float64")
        rule.thresholds_y_ = np.asarray(state["thresholds_y"], dtype="float64")
        return rule
