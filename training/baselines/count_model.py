"""What BG/NBD and Pareto/NBD share: fitting, P(no purchase), survival, JSON state.

:class:`CountModel` follows the scikit-learn contract (hyper-parameters in ``__init__``,
learned state in attributes ending in ``_``, ``NotFittedError`` before ``fit``) and persists
as a plain JSON dict through ``to_dict`` / ``from_dict``. Time is in the summary's unit.

The array API: ``fitted_params()`` and the ``*_array`` methods take arrays that
:func:`training.baselines.summary.check_rfm` has already checked. The public methods check
their input and call them; the models' BTYD features (``training.models.btyd_features``) call them
directly, so one check and one P(alive) serve several outputs on every request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.exceptions import NotFittedError

from training.baselines.likelihood import fit_log_params, group_rows
from training.baselines.summary import check_rfm

FloatArray = NDArray[np.float64]


class CountModel:
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

    def _initial(self, mean_x: float, mean_age: float) -> FloatArray:
        """Moment-based start from the customers' mean frequency and mean T."""
        raise NotImplementedError

    def _fit_loglik(
        self, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> Callable[[FloatArray], FloatArray]:
        """The per-row log-likelihood of a fit's fixed rows as a function of the parameters
        (a model may precompute what depends on the rows alone)."""
        return lambda params: self._loglik_rows(params, x, tx, age)

    def fitted_params(self) -> FloatArray:
        """The fitted parameters in ``PARAM_NAMES`` order, as the ``*_array`` methods take them."""
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet: call fit(frequency, recency, T) "
                "or from_dict(...) first"
            )
        return np.array([self.params_[k] for k in self.PARAM_NAMES], dtype="float64")

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        *,
        start: Mapping[str, float] | None = None,
        give_up: Callable[[dict[str, float]], str | None] | None = None,
        weights: ArrayLike | None = None,
    ) -> Self:
        """Maximum-likelihood fit on per-customer (frequency, recency, T).

        ``weights``: how many customers each row stands for, so a reduced RFM summary
        (unique (x, t_x, T) rows with counts, e.g. merged from a cluster's partitions) fits
        the model its customers would; the likelihood groups rows the same way either way
        (:func:`training.baselines.likelihood.group_rows`), so the optimum is the same within
        the optimiser's tolerance (the moment-based start is then a weighted mean, equal
        to the per-customer one up to rounding).

        ``start``: parameters to start the optimiser from (a fit on similar data, such as
        the previous training snapshot's), instead of the moment-based default; the
        optimum is the same within the optimiser's tolerance, reached in fewer evaluations.
        ``give_up(params)`` names why parameters are of no use (the caller's degenerate
        rule); a fit that stays there stops early with
        ``training.baselines.likelihood.DegenerateFitStopped``.
        """
        if self.penalizer < 0:
            raise ValueError(f"penalizer must be >= 0, got {self.penalizer}")
        x, tx, age = check_rfm(frequency, recency, T)
        if x.size == 0:
            raise ValueError("cannot fit on zero customers")
        if weights is None:
            (ux, utx, uage), weight = group_rows(x.ravel(), tx.ravel(), age.ravel())
            means = (float(x.mean()), float(age.mean()))
        else:
            w = _check_weights(weights, x.size)
            (ux, utx, uage), weight = group_rows(x.ravel(), tx.ravel(), age.ravel(), weights=w)
            means = (float(np.dot(w, x.ravel()) / w.sum()), float(np.dot(w, age.ravel()) / w.sum()))
        n = float(weight.sum())
        loglik = self._fit_loglik(ux, utx, uage)

        def neg_mean_ll(params: FloatArray) -> float:
            return -float(np.dot(weight, loglik(params))) / n

        x0 = self._initial(*means) if start is None else self._start(start)
        named = None
        if give_up is not None:
            check = give_up

            def named(p: FloatArray) -> str | None:
                return check(dict(zip(self.PARAM_NAMES, map(float, p), strict=True)))

        params, _ = fit_log_params(
            neg_mean_ll, np.log(x0), self.penalizer, self.max_evaluations, named
        )
        self.params_ = {k: float(v) for k, v in zip(self.PARAM_NAMES, params, strict=True)}
        self.loglik_ = -neg_mean_ll(params) * n
        self.n_customers_ = int(n)
        return self

    def _start(self, start: Mapping[str, float]) -> FloatArray:
        values = np.array([float(start[k]) for k in self.PARAM_NAMES], dtype="float64")
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise ValueError(f"start parameters must be finite and > 0, got {dict(start)}")
        return values

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
        """Per-customer log-likelihood of (x, t_x, T) under the fitted parameters."""
        params = self.fitted_params()
        return self._loglik_rows(params, *check_rfm(frequency, recency, T))

    def probability_of_no_purchase(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(no purchase in (T, T + t] | x, t_x, T): the churn probability for horizon t.

        Exact for both models: observing (x, t_x) over (0, T] and nothing in (T, T + t] is
        observing (x, t_x) over (0, T + t], so the probability is L(x, t_x, T + t) /
        L(x, t_x, T). It mixes P(dead) with P(alive) * P(silent for t | alive).
        """
        params = self.fitted_params()
        return self.no_purchase_array(params, t, *check_rfm(frequency, recency, T))

    def no_purchase_array(
        self,
        params: FloatArray,
        t: float | ArrayLike,
        x: FloatArray,
        tx: FloatArray,
        age: FloatArray,
    ) -> FloatArray:
        """:meth:`probability_of_no_purchase` on arrays ``check_rfm`` already checked."""
        horizon = np.asarray(t, dtype="float64")
        if horizon.ndim == 0:  # the scorer's one horizon: plain float checks
            valid = math.isfinite(h := float(horizon)) and h >= 0
        else:
            valid = not (horizon < 0).any() and bool(np.isfinite(horizon).all())
        if not valid:
            raise ValueError(f"t must be finite and >= 0, got {t!r}")
        later, now = self._loglik_later_and_now(params, x, tx, age, horizon)
        # np.clip(..., 0.0, 1.0): exp is never below +0.0, so only the upper bound acts
        return np.minimum(np.exp(later - now), 1.0)

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
        x, tx, age = check_rfm(frequency, recency, T)
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
        return np.asarray(np.trapezoid(surv, grid, axis=1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (hyper-parameters and learned parameters)."""
        self.fitted_params()
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


def _check_weights(weights: ArrayLike, n_rows: int) -> FloatArray:
    """Row weights (customer counts) as floats: one per row, finite, >= 0, not all zero."""
    w = np.asarray(weights, dtype="float64").ravel()
    if w.shape != (n_rows,):
        raise ValueError(f"weights has {w.size} values for {n_rows} rows")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all zero")
    return w
