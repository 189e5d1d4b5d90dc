"""The recency rule: the rule of thumb marketers use (long silence = churned)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from training.baselines.summary import check_rfm

FloatArray = NDArray[np.float64]


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
        _, tx, age = check_rfm(frequency, recency, T)
        return age - tx

    def fit(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, churned: ArrayLike
    ) -> RecencyRule:
        """Learn the score -> P(churn) map from a labelled snapshot (churned: 0/1 per row)."""
        x, tx, age = check_rfm(frequency, recency, T)
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
        x, _, age = check_rfm(frequency, recency, T)
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
