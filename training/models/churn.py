"""The churn model: P(no purchase within the horizon), calibrated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from training.models.boosters import (
    BoostConfig,
    Table,
    check_fitted,
    input_matrix,
    predict_booster,
    train_booster,
)
from training.models.btyd_features import Offset, baseline_offset, offset_pair
from training.models.calibration import ProbabilityCalibrator
from training.models.compiled import BoosterModel
from training.models.paths import LeafPaths

FloatArray = NDArray[np.float64]

# Directions the churn probability may move in (``monotone_churn``): up with time since
# the last purchase, down with the amount of past buying. Other columns are unconstrained.
CHURN_INCREASING: tuple[str, ...] = ("recency_days", "recency_gap_ratio")
CHURN_DECREASING: tuple[str, ...] = (
    "n_purchase_days",
    "n_repeat_days",
    "n_orders",
    "orders_30d",
    "orders_90d",
    "orders_180d",
    "orders_365d",
    "purchase_rate_30d",
)


class ChurnModel(BoosterModel):
    """P(no purchase within the horizon): LightGBM binary, calibrated on the latest fold.

    With ``offset="bgnbd_logit"`` the booster starts from the BG/NBD churn log-odds.
    """

    _paths: LeafPaths | None = None  # built from the booster on first use

    def compile(self) -> None:
        """Compile the booster and, for the reasons, its leaf lookup (see ``LeafPaths``)."""
        super().compile()
        if self._paths is None:
            self._paths = LeafPaths(self.booster_)
        self._paths.compile(self.booster_)

    def drop_compiled(self) -> None:
        super().drop_compiled()
        if self._paths is not None:
            self._paths.drop_compiled()

    @property
    def compiled(self) -> bool:
        leaves = self._paths is not None and self._paths.compiled
        return super().compiled or leaves

    def raw_scores(self, m: FloatArray) -> FloatArray:
        """The compiled forest's raw scores, for a few rows from the leaves the reasons use
        (``LeafPaths.raw_scores``: the same bits, one walk of the trees for both)."""
        if self._forest is not None and self._paths is not None:
            shared = self._paths.raw_scores(m)
            if shared is not None:
                return shared
        return super().raw_scores(m)

    def __init__(
        self,
        calibration: Literal["platt", "isotonic", "none"] = "platt",
        config: BoostConfig | None = None,
        offset: Offset = "none",
        monotone: bool = False,
    ) -> None:
        self.calibration = calibration
        self.config = config or BoostConfig({})
        self.offset = offset
        self.monotone = monotone

    def fit(
        self,
        X: pd.DataFrame,
        churn: FloatArray,
        X_val: pd.DataFrame,
        churn_val: FloatArray,
        X_cal: pd.DataFrame | None = None,
        churn_cal: FloatArray | None = None,
    ) -> ChurnModel:
        """Early stopping on ``X_val``; calibration on ``X_cal`` (default: ``X_val``)."""
        names = list(X.columns)
        xv = input_matrix(X_val, names, "ChurnModel")
        yv = np.asarray(churn_val, dtype=np.float64)
        init = offset_pair(self.offset, X, X_val)
        extra: dict[str, Any] = {}
        if self.monotone:
            extra["monotone_constraints"] = churn_monotone_constraints(names)
        self.booster_ = train_booster(
            self.config,
            "binary",
            input_matrix(X, names, "ChurnModel"),
            np.asarray(churn, dtype=np.float64),
            names,
            (xv, yv),
            init_score=init,
            **extra,
        )
        self.feature_names_in_ = names
        if X_cal is None or churn_cal is None:
            X_cal, churn_cal = X_val, yv
        self.calibrator_ = ProbabilityCalibrator(self.calibration).fit(
            self.predict_raw(X_cal), np.asarray(churn_cal, dtype=np.float64)
        )
        return self

    def predict_log_odds(self, X: Table) -> FloatArray:
        """Uncalibrated churn log-odds (trees plus the baseline offset)."""
        check_fitted(self, "booster_")
        raw = self.raw_scores(input_matrix(X, self.feature_names_in_, "ChurnModel"))
        offset = baseline_offset(self.offset, X)
        return raw if offset is None else raw + offset

    def predict_raw(self, X: Table) -> FloatArray:
        """Uncalibrated churn probability."""
        return 1.0 / (1.0 + np.exp(-self.predict_log_odds(X)))

    def predict_proba(self, X: Table) -> FloatArray:
        """Calibrated churn probability per row."""
        check_fitted(self, "booster_")
        return self.calibrator_.transform(self.predict_raw(X))

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """SHAP-style contributions to the uncalibrated churn log-odds.

        Columns: one per feature, ``baseline_offset`` (the BG/NBD starting point, 0 without
        offset) and ``bias``; each row sums to :meth:`predict_log_odds`.
        """
        check_fitted(self, "booster_")
        contrib = predict_booster(
            self.booster_, input_matrix(X, self.feature_names_in_, "ChurnModel"), pred_contrib=True
        )
        out = pd.DataFrame(contrib[:, :-1], index=X.index, columns=list(self.feature_names_in_))
        offset = baseline_offset(self.offset, X)
        out["baseline_offset"] = 0.0 if offset is None else offset
        out["bias"] = contrib[:, -1]
        return out

    def path_contributions(self, X: Table) -> tuple[FloatArray, float]:
        """Per-feature contributions along each tree's decision path, and the bias.

        The Saabas decomposition (what ``treeinterpreter`` and XGBoost's approximate
        contributions compute): each split on a customer's path credits its feature with the
        change in the node's value. Rows sum exactly to the trees' log-odds minus the bias
        (the offset is not included). It needs one leaf lookup per tree instead of TreeSHAP's
        walk over every path, so reasons cost about as much as a prediction (TreeSHAP took
        as long as all five boosters together in ``benchmarks/batch.py``). It ranks features
        like TreeSHAP for the top reasons; ``contributions`` stays the exact SHAP values.
        """
        check_fitted(self, "booster_")
        if self._paths is None:
            self._paths = LeafPaths(self.booster_)
        m = input_matrix(X, self.feature_names_in_, "ChurnModel")
        return self._paths.contributions(self.booster_, m), self._paths.bias

    def to_state(self) -> dict[str, Any]:
        """JSON-ready learned state besides the booster (which is saved as LightGBM text)."""
        check_fitted(self, "booster_")
        return {
            "feature_names": list(self.feature_names_in_),
            "calibration": self.calibrator_.to_dict(),
            "offset": self.offset,
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        booster: lgb.Booster,
        **params: Any,  # saved JSON values
    ) -> ChurnModel:
        """A fitted model from :meth:`to_state` output, its booster and the other parameters."""
        model = cls(offset=state["offset"], **params)
        model.booster_ = booster
        model.feature_names_in_ = state["feature_names"]
        model.calibrator_ = ProbabilityCalibrator.from_dict(state["calibration"])
        return model


def churn_monotone_constraints(names: Sequence[str]) -> list[int]:
    """LightGBM ``monotone_constraints`` for the churn booster (+1 / -1 / 0 per column)."""
    return [1 if n in CHURN_INCREASING else -1 if n in CHURN_DECREASING else 0 for n in names]
