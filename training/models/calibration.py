"""Probability calibration stored as plain arrays (JSON-ready), never as pickled estimators."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

FloatArray = NDArray[np.float64]
LOGIT_EPS = 1e-6


def logit(p: FloatArray) -> FloatArray:
    """log(p / (1 - p)) with p kept within ``LOGIT_EPS`` of 0 and 1 (so 0 and 1 stay finite)."""
    # np.clip without its Python wrapper: the same values for bounds that are not zero
    q = np.minimum(np.maximum(p, LOGIT_EPS), 1 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


class ProbabilityCalibrator:
    """Maps raw model probabilities to calibrated ones, fitted on a held-out (later) fold.

    ``platt`` (logistic regression on the raw logit) is strictly monotone, so it keeps the
    model's ranking (AUC) intact while fixing the level; ``isotonic`` is more flexible but
    creates ties; ``none`` is the identity (for folds known to be unrepresentative, e.g. a
    holiday quarter). All persist as a handful of floats via ``to_dict``.
    """

    def __init__(self, method: Literal["platt", "isotonic", "none"] = "platt") -> None:
        if method not in ("platt", "isotonic", "none"):
            raise ValueError(
                f"calibration method must be 'platt', 'isotonic' or 'none', got {method!r}"
            )
        self.method = method

    def fit(self, raw: FloatArray, y: FloatArray) -> ProbabilityCalibrator:
        raw = np.asarray(raw, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.fitted_ = True
        if self.method == "none":
            return self
        if len(np.unique(y)) < 2:
            raise ValueError("calibration fold holds a single class; use more or later cutoffs")
        if self.method == "platt":
            lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
            lr.fit(logit(raw)[:, None], y)
            self.coef_ = np.array([float(lr.coef_[0, 0]), float(lr.intercept_[0])])
        else:
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
            self.x_thresholds_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def transform(self, raw: FloatArray) -> FloatArray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "none":
            return raw
        if self.method == "platt":
            a, b = self.coef_
            return 1.0 / (1.0 + np.exp(-(a * logit(raw) + b)))
        return np.interp(raw, self.x_thresholds_, self.y_thresholds_)

    def to_dict(self) -> dict[str, Any]:
        if self.method == "none":
            return {"method": "none"}
        if self.method == "platt":
            return {"method": "platt", "coef": self.coef_.tolist()}
        return {
            "method": "isotonic",
            "x_thresholds": self.x_thresholds_.tolist(),
            "y_thresholds": self.y_thresholds_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ProbabilityCalibrator:
        cal = cls(state["method"])
        cal.fitted_ = True
        if cal.method == "none":
            return cal
        if cal.method == "platt":
            cal.coef_ = np.asarray(state["coef"], dtype=np.float64)
        else:
            cal.x_thresholds_ = np.asarray(state["x_thresholds"], dtype=np.float64)
            cal.y_thresholds_ = np.asarray(state["y_thresholds"], dtype=np.float64)
        return cal
