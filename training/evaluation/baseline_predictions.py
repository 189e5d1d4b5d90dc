"""The baselines' backtest predictions: BG/NBD, Pareto/NBD and the recency rule at a cutoff.

Fitted on the history before the cutoff in weekly units (the literature's convention); a
baseline's spend is its expected purchases times the Gamma-Gamma spend per purchase. Each
frame has the backtest's prediction columns, on the RFM summary's customer index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.log.schema import PurchaseLogError
from training.baselines.bgnbd import BetaGeoNBD
from training.baselines.gammagamma import GammaGamma
from training.baselines.paretonbd import ParetoNBD
from training.baselines.recency import RecencyRule
from training.baselines.summary import rfm_summary
from training.dataset.labels import build_labels
from training.models.btyd_features import classic_bgnbd_state

# Optional: a churn score whose order the ranking metrics (AUC, PR-AUC, lift) read instead of
# the probability's. The recency rule's isotonic map ties customers its raw score ranks apart
# (up to 0.015 AUC lost); a baseline is shown at its best, so it is ranked on the raw score.
RANKING_COLUMN = "churn_score"
WEEK_DAYS = 7.0


def rfm_at(log: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    out = rfm_summary(log, as_of, time_unit_days=WEEK_DAYS)
    out.index = pd.Index(out.index.astype(str), name="customer_id", dtype="str")
    return out


def fit_btyd(method: str, rfm: pd.DataFrame, penalizer: float) -> BetaGeoNBD | ParetoNBD:
    """The backtest's BG/NBD or Pareto/NBD on an RFM summary (:func:`rfm_at`), every customer.

    Also the classic end of the model's combination (``RetainModels.fit``), so weight 0 is
    this very fit.
    """
    model = (BetaGeoNBD if method == "bgnbd" else ParetoNBD)(penalizer=penalizer)
    return model.fit(rfm["frequency"], rfm["recency"], rfm["T"])


def classic_bgnbd(
    log: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int, penalizer: float
) -> dict[str, Any] | None:
    """The backtest's BG/NBD at ``as_of`` (:func:`fit_btyd` on :func:`rfm_at`) as JSON state.

    The classic end of the model's combination (``training.models.combine``); None when the fit
    fails, and the combination then uses the boosters' own BG/NBD columns.
    """
    try:
        bg = fit_btyd("bgnbd", rfm_at(log, as_of), penalizer)
    except (ValueError, RuntimeError, FloatingPointError):
        return None
    assert isinstance(bg, BetaGeoNBD)
    return classic_bgnbd_state(bg, horizon_days, as_of)


def btyd_predictions(
    model: BetaGeoNBD | ParetoNBD,
    rfm: pd.DataFrame,
    spend_per_purchase: np.ndarray,
    horizon_weeks: float,
) -> pd.DataFrame:
    x, tx, age = (rfm[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T"))
    purchases = model.conditional_expected_purchases(horizon_weeks, x, tx, age)
    silent = model.probability_of_no_purchase(horizon_weeks, x, tx, age)
    # E[T | T < H] = (E[min(T, H)] - H * S(H)) / (1 - S(H)), from the survival curve
    restricted = model.restricted_mean_time_to_purchase(horizon_weeks, x, tx, age)
    returning = 1.0 - silent
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = np.where(
            returning > 1e-9, (restricted - horizon_weeks * silent) / returning, horizon_weeks
        )
    return pd.DataFrame(
        {
            "churn_probability": silent,
            "expected_days_to_next": WEEK_DAYS * np.clip(conditional, 0.0, horizon_weeks),
            "expected_purchases_horizon": purchases,
            "expected_spend_horizon": purchases * spend_per_purchase,
        },
        index=rfm.index,
    )


def recency_predictions(
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    horizon_days: int,
    rfm: pd.DataFrame,
    spend_per_purchase: np.ndarray,
) -> pd.DataFrame:
    """Recency rule calibrated on the snapshot ``as_of - H`` (its labels end at ``as_of``)."""
    past = as_of - pd.Timedelta(days=horizon_days)
    past_rfm = rfm_at(log, past)
    if len(past_rfm) == 0:
        raise PurchaseLogError(
            f"the recency rule needs customers before {past.date()} (as_of - horizon) to "
            "calibrate on; the log starts later"
        )
    past_labels = build_labels(log, past, horizon_days).reindex(past_rfm.index)
    rule = RecencyRule().fit(
        past_rfm["frequency"],
        past_rfm["recency"],
        past_rfm["T"],
        past_labels["churn"].to_numpy(dtype=np.int64),
    )
    x, tx, age = (rfm[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T"))
    purchases = rule.conditional_expected_purchases(horizon_days / WEEK_DAYS, x, tx, age)
    return pd.DataFrame(
        {
            "churn_probability": rule.predict_churn_probability(x, tx, age),
            RANKING_COLUMN: rule.score(x, tx, age),
            "expected_days_to_next": np.nan,
            "expected_purchases_horizon": purchases,
            "expected_spend_horizon": purchases * spend_per_purchase,
        },
        index=rfm.index,
    )


def spend_per_purchase(rfm: pd.DataFrame) -> tuple[np.ndarray, dict[str, float]]:
    """Gamma-Gamma expected spend per purchase day, fitted on repeat buyers with spend > 0."""
    x = rfm["frequency"].to_numpy(dtype=np.float64)
    m = rfm["monetary_value"].to_numpy(dtype=np.float64)
    use = (x > 0) & (m > 0)
    if not use.any():  # a log of one-time buyers: a user's data, not a bug
        raise PurchaseLogError(
            f"none of the {len(x):,} customers before the cutoff bought on two different days "
            "with spend > 0: the spend model (Gamma-Gamma) needs repeat buyers; use a later "
            "--as-of or a log with repeat purchases"
        )
    gg = GammaGamma().fit(x[use], m[use])
    if gg.params_["q"] <= 1.0:
        # the population mean p*v/(q-1) does not exist: fall back to the sample mean for x = 0
        per = np.where(
            x > 0, gg.conditional_expected_average_profit(np.maximum(x, 1), m), m[use].mean()
        )
    else:
        per = gg.conditional_expected_average_profit(x, m)
    return np.maximum(per, 0.0), dict(gg.params_)
