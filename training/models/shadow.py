"""A shadow fit that forecasts the latest training window out of time, as the real model must.

The model fitted at ``as_of`` trains on cutoffs up to ``as_of - H`` and forecasts
``[as_of, as_of + H)``: a window none of its trees saw. Held-out *customers* of the training
cutoffs cannot show how that extrapolation errs (the trees learned those windows' level from
the other customers), so the combination with BG/NBD would always favour the model. The
shadow repeats the situation one horizon earlier: the same churn, count and spend boosters
trained only on the snapshots whose label windows end by the latest cutoff ``c = as_of - H``,
then scored on every customer of the snapshot at ``c``, whose window they never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from training.models.boosters import BoostConfig
from training.models.churn import ChurnModel
from training.models.combine import Combination, fit_combination, identity_combination
from training.models.spend import SpendModel

if TYPE_CHECKING:
    from training.models.bundle import RetainModels

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Shadow:
    """The shadow's predictions on the latest cutoff's customers, and what it trained on."""

    frame: pd.DataFrame  # the latest cutoff's rows: inputs and labels
    predictions: dict[str, FloatArray]  # churn (calibrated), count, spend
    trained_on: list[str]  # cutoffs (ISO) of the shadow's training snapshots
    scored_at: str


def shadow_fit(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    names: Sequence[str],
    latest: pd.Timestamp,
    horizon_days: int,
    make: Callable[[], dict[str, Any]],
) -> Shadow | None:
    """Fit ``make()``'s churn, count and spend models on cutoffs <= ``latest - H``, score ``latest``.

    ``train``/``valid`` are the stacked training and held-out rows (column ``cutoff``);
    ``make`` returns fresh, unfitted models configured like the real ones. None when no
    snapshot lies a horizon before ``latest`` (a short log: no out-of-time evidence).
    """
    end = latest - pd.Timedelta(days=horizon_days)
    t = train.loc[train["cutoff"] <= end]
    v = valid.loc[valid["cutoff"] <= end]
    if len(t) == 0 or len(v) == 0:
        return None
    if t["churn"].nunique() < 2 or v["churn"].nunique() < 2:
        return None
    frame = pd.concat([train.loc[train["cutoff"] == latest], valid.loc[valid["cutoff"] == latest]])
    if len(frame) == 0:
        return None
    models = make()
    shadow_last = v.loc[v["cutoff"] == v["cutoff"].max()]
    names = list(names)
    xt, xv, x = t[names], v[names], frame[names]
    churn = models["churn"].fit(
        xt,
        t["churn"].to_numpy(),
        xv,
        v["churn"].to_numpy(),
        shadow_last[names],
        shadow_last["churn"].to_numpy(),
    )
    count = models["count"].fit(
        xt, t["n_purchase_days_h"].to_numpy(), xv, v["n_purchase_days_h"].to_numpy()
    )
    spend = models["spend"].fit(xt, t["spend_h"].to_numpy(), xv, v["spend_h"].to_numpy())
    return Shadow(
        frame=frame,
        predictions={
            "churn": churn.predict_proba(x),
            "count": count.predict(x),
            "spend": spend.predict(x),
        },
        trained_on=[pd.Timestamp(c).isoformat() for c in sorted(pd.unique(t["cutoff"]))],
        scored_at=latest.isoformat(),
    )


def combination_for(
    models: RetainModels,
    config: BoostConfig,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    names: list[str],
    n: int,
) -> Combination:
    """A fitted ``RetainModels``' blend with BG/NBD, chosen out of time where the log allows.

    ``config`` is its boosters' configuration (the shadow's are configured alike),
    ``train``/``valid`` its stacked training and held-out rows, ``n`` its number of
    training cutoffs.
    """
    if not (models.combine_outputs and models.use_baselines):
        return identity_combination("combine_outputs off or no BG/NBD inputs")
    offset = models.baseline_offset
    weight, recal = models.total_tree_weight, models.recalibrate_totals

    def make() -> dict[str, Any]:
        return {
            "churn": ChurnModel(
                models.calibration,
                config,
                "bgnbd_logit" if offset else "none",
                models.monotone_churn,
            ),
            "count": SpendModel(
                "poisson",
                config,
                "bgnbd_log_count" if offset else "none",
                recalibrate=recal,
                tree_weight=weight,
            ),
            "spend": SpendModel(
                "tweedie",
                config,
                "bgnbd_log_spend" if offset else "none",
                recalibrate=recal,
                tree_weight=weight,
            ),
        }

    latest = valid["cutoff"].max()
    shadow = shadow_fit(train, valid, names, latest, models.horizon_days, make)
    x = valid[names]
    own = {
        "churn": models.churn_.predict_proba(x),
        "count": models.count_.predict(x),
        "spend": models.spend_.predict(x),
    }
    return fit_combination(valid, own, x, n, shadow, models.horizon_days)
