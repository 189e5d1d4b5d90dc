"""The count and spend models: LightGBM regressions, optionally started from BG/NBD."""

from __future__ import annotations

from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from training.models.boosters import BoostConfig, Table, check_fitted, input_matrix, train_booster
from training.models.btyd_features import Offset, baseline_offset, offset_pair
from training.models.compiled import BoosterModel

FloatArray = NDArray[np.float64]


class SpendModel(BoosterModel):
    """A LightGBM regression (poisson for purchase days, tweedie for spend), optionally
    boosted from the BG/NBD expectation (``offset``) and optionally re-anchored on the
    latest fold (``recalibrate``: ``scale_ = sum(actual) / sum(predicted)``, else 1).

    Tweedie handles the mass at zero (no purchase) and the skewed positive spend in one
    model, so ``E[spend] = P(buy) x E[spend | buy]`` without a separate hurdle.
    ``offset_scale`` stretches the BG/NBD horizon expectation to the label's horizon.
    """

    def __init__(
        self,
        objective: Literal["poisson", "tweedie", "gamma", "regression"] = "tweedie",
        config: BoostConfig | None = None,
        offset: Offset = "none",
        offset_scale: float = 1.0,
        recalibrate: bool = False,
        tree_weight: float = 1.0,
    ) -> None:
        self.objective = objective
        self.config = config or BoostConfig({})
        self.offset = offset
        self.offset_scale = offset_scale
        self.recalibrate = recalibrate
        self.tree_weight = tree_weight

    def fit(
        self, X: pd.DataFrame, y: FloatArray, X_val: pd.DataFrame, y_val: FloatArray
    ) -> SpendModel:
        names = list(X.columns)
        xv = input_matrix(X_val, names, "SpendModel")
        yv = np.asarray(y_val, dtype=np.float64)
        extra: dict[str, Any] = (
            {"tweedie_variance_power": 1.5} if self.objective == "tweedie" else {}
        )
        self.booster_ = train_booster(
            self.config,
            self.objective,
            input_matrix(X, names, "SpendModel"),
            np.asarray(y, dtype=np.float64),
            names,
            (xv, yv),
            init_score=offset_pair(self.offset, X, X_val, self.offset_scale),
            **extra,
        )
        self.feature_names_in_ = names
        self.scale_ = 1.0
        if self.recalibrate:
            pred = float(self.predict(X_val).sum())
            self.scale_ = float(yv.sum() / pred) if pred > 0 else 1.0
        return self

    def predict(self, X: Table) -> FloatArray:
        check_fitted(self, "booster_")
        m = input_matrix(X, self.feature_names_in_, "SpendModel")
        raw = self.raw_scores(m)
        offset = baseline_offset(self.offset, X, self.offset_scale)
        if offset is not None:
            # tree_weight < 1 damps the trees' correction of the BG/NBD start (see RetainModels)
            raw = offset + self.tree_weight * raw if self.tree_weight != 1.0 else raw + offset
        # LightGBM's output transform of these objectives: log link, identity for regression
        return self.scale_ * (raw if self.objective == "regression" else np.exp(raw))

    def to_state(self) -> dict[str, Any]:
        """JSON-ready parameters and learned state besides the booster (LightGBM text)."""
        check_fitted(self, "booster_")
        return {
            "feature_names": list(self.feature_names_in_),
            "objective": self.objective,
            "scale": self.scale_,
            "offset": self.offset,
            "offset_scale": self.offset_scale,
            "recalibrate": self.recalibrate,
            "tree_weight": self.tree_weight,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], booster: lgb.Booster, config: BoostConfig | None = None
    ) -> SpendModel:
        """A fitted model from :meth:`to_state` output and its booster."""
        model = cls(
            state["objective"],
            config,
            state["offset"],
            float(state["offset_scale"]),
            bool(state["recalibrate"]),
            float(state.get("tree_weight", 1.0)),
        )
        model.booster_ = booster
        model.feature_names_in_ = state["feature_names"]
        model.scale_ = float(state["scale"])
        return model
