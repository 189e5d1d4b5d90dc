"""Gamma-Gamma spend per transaction: Fader, Hardie & Lee (2005), "RFM and CLV: using
iso-value curves for customer base analysis", J. Marketing Research 42(4)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln
from sklearn.exceptions import NotFittedError

from training.baselines.likelihood import fit_log_params, group_rows

FloatArray = NDArray[np.float64]


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
        (ux, um), weight = group_rows(x, m)
        n = float(weight.sum())

        def neg_mean_ll(params: FloatArray) -> float:
            return -float(np.dot(weight, self._loglik_rows(params, ux, um))) / n

        mean_m = float(m.mean())
        params, _ = fit_log_params(
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
