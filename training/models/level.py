"""The count forecast's level (its total over the customers at the cutoff), chosen apart from its shape.

On a short horizon the classic models' total purchases err less from window to window than
the boosted model's, while the model ranks and spreads customers better (issue 25;
``benchmarks/quality_levels.py``: on Complete Journey, 30 days, the sd of past windows'
aggregate errors is 0.016-0.019 for BG/NBD and Pareto/NBD against 0.026-0.028 for the
model, whose count RMSE and deviance are better). So the level is chosen on the shadow's
out-of-time window (``training.models.shadow``): where the classic total was nearer that
window's actual total than the model's, the model's count forecasts are rescaled by one
factor to the classic total at the cutoff; each customer's share, the ranking, stays the
model's. Without a shadow (a log too short for one: thin evidence) the classic total is
used, falling back toward BTYD. A shadow window of another season than the forecast's keeps
the model's level, as it keeps the blend weights (``training.models.combine``).

Which classic total: BG/NBD's (the blend's weight-0 end), unless its fit at the cutoff
collapsed to no dropout (``training.baselines.degenerate``: P(alive) ~ 1, an NBD without
churn, whose total only grows with the customers' age) and Pareto/NBD's did not; then
Pareto/NBD's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training.baselines.bgnbd import BetaGeoNBD
from training.baselines.degenerate import degenerate_fit
from training.evaluation.baseline_predictions import fit_btyd, rfm_at

if TYPE_CHECKING:
    from training.models.bundle import RetainModels

WEEK_DAYS = 7.0


def choose_count_level(
    shadow_errors: tuple[float, float] | None, another_season: bool
) -> dict[str, Any]:
    """Whose total the count forecast takes: ``"model"`` or ``"btyd"``, and why.

    ``shadow_errors`` are the shadow window's aggregate errors (forecast total / actual - 1)
    of the model and of BG/NBD; None when there is no shadow.
    """
    if shadow_errors is None:
        return {"source": "btyd", "why": "no out-of-time window (thin evidence)"}
    model, btyd = (float(e) for e in shadow_errors)
    choice: dict[str, Any] = {"shadow_error_model": model, "shadow_error_btyd": btyd}
    if another_season:
        return {**choice, "source": "model", "why": "the shadow window is another season"}
    if abs(btyd) < abs(model):
        return {**choice, "source": "btyd", "why": "BG/NBD's total was nearer on the shadow"}
    return {**choice, "source": "model", "why": "the model's total was nearer on the shadow"}


def classic_count_total(
    rfm: pd.DataFrame, bgnbd: Any, horizon_days: int, penalizer: float
) -> dict[str, Any]:
    """The classic total of expected purchases at the cutoff, as the backtest forecasts it.

    ``rfm`` is the cutoff's RFM summary (``rfm_at``), ``bgnbd`` the classic BG/NBD fitted
    on it (the combination's weight-0 end). Pareto/NBD is fitted only when BG/NBD collapsed.
    """
    x, tx, age = (rfm[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T"))
    span = float(np.max(age)) if len(age) else 0.0
    chosen, name = bgnbd, "bgnbd"
    out: dict[str, Any] = {}
    if (why := degenerate_fit("bgnbd", bgnbd.params_, span)) is not None:
        out["bgnbd_collapsed"] = why
        try:
            pnbd = fit_btyd("paretonbd", rfm, penalizer)
        except (ValueError, RuntimeError, FloatingPointError):
            pnbd = None
        if pnbd is not None and degenerate_fit("paretonbd", pnbd.params_, span) is None:
            chosen, name = pnbd, "paretonbd"
    with np.errstate(all="ignore"):
        total = float(
            np.sum(chosen.conditional_expected_purchases(horizon_days / WEEK_DAYS, x, tx, age))
        )
    return {**out, "classic": name, "classic_total": total}


def level_factor(classic_total: float, model_total: float) -> float:
    """The factor that brings the model's total to the classic one (1 when undefined)."""
    if not (np.isfinite(classic_total) and np.isfinite(model_total)):
        return 1.0
    if classic_total <= 0 or model_total <= 0:
        return 1.0
    return float(classic_total / model_total)


def fit_count_level(models: RetainModels, log: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    """Set ``models.combination_.count_level`` where its recorded choice is the classic total.

    The factor is the classic total (:func:`classic_count_total`) over the model's total,
    both over every customer with an order before ``cutoff``; it and both totals are
    recorded beside the choice (``count_level_choice``).
    """
    combo = models.combination_
    choice = combo.details.get("count_level_choice")
    if combo.details.get("identity") or not choice or choice.get("source") != "btyd":
        return
    if combo.bgnbd_state is None:  # the classic fit failed: keep the model's level
        choice["why"] += "; no classic BG/NBD at the cutoff, the model's level kept"
        return
    bgnbd = BetaGeoNBD.from_dict(combo.bgnbd_state["bgnbd"])
    classic = classic_count_total(
        rfm_at(log, cutoff), bgnbd, models.horizon_days, models.baseline_penalizer
    )
    combo.count_level = 1.0
    model_total = float(models.predict(log, cutoff)["expected_purchases_horizon"].sum())
    combo.count_level = level_factor(classic["classic_total"], model_total)
    choice.update(classic, model_total=model_total, factor=combo.count_level)
