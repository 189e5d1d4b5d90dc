"""What a campaign did to each customer of the synthetic log: outcomes with known true uplift.

The offer policy (``serving/offers/``) decides who is sent what, when, and who is held out;
this module takes those decisions as an input table (it does not import ``serving``) and draws
every assigned customer's purchases in the ``window_days`` after their send day, with and
without the offer, so a measured lift can be checked against the truth.

The outcome model, per customer (``truth`` from :func:`features.synthetic.synth.generate_purchase_log`):

- **without the offer** the customer buys in the window with probability
  ``p0 = alive * (1 - exp(-rate * window_days / 365.25))``: a Poisson process at the personal
  base rate (no seasonality or campaign calendar; gift and sale-only buyers at
  ``off_calendar_rate_share`` of it, since the window mostly falls outside their season);
  customers who dropped out before the log's end (``alive_at_end`` false) do not buy;
- **with the offer** the probability becomes ``p1``, by response class (the heterogeneity an
  uplift model has to find; every class is a function of truth columns the features reflect):

  ``lost_cause``    dropped out: ``p1 = lost_cause_conversion``;
  ``sleeping_dog``  alive heavy buyers (``rate >= sleeping_dog_min_rate``), put off by one
                    more message: ``p1 = p0 * (1 - sleeping_dog_loss)``;
  ``sure_thing``    alive rhythm buyers (``regular_buyer``) buy anyway: ``p1 = p0``;
  ``persuadable``   every other alive customer: ``p1 = p0 + conversion * (1 - p0)``, with
                    ``sale_only_conversion`` for sale-only buyers, ``persuadable_conversion``
                    otherwise;

  every effect is multiplied by ``scale * offer_scale.get(arm, 1)`` (``scale=0``: a campaign
  with no effect anywhere).
- ``true_uplift = p1 - p0``, the customer's expected incremental probability of buying in the
  window, is written for every assigned customer, treated or held out (what the offer would
  have done); both potential outcomes are drawn from one uniform number per customer
  (``bought_if_control = u < p0``, ``bought_if_treated = u < p1``), and the log gets the
  one that happened (``treated`` says which).
- a buyer places ``1 + Poisson(rate * window_days / 365.25)`` orders at uniform times in the
  window, each of the customer's mean order value in the log times a LogNormal(0, 0.25)
  draw, so ``true_incremental_orders = true_uplift * (1 + rate * window_days / 365.25)``.

Outcome rows are appended after the base log, whose last day must come before every send day
(``log_end`` is the first day the base log does not cover).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import InputError
from features.log.schema import LATEST_TIME
from features.utc import as_utc

RESPONSE_CLASSES: tuple[str, ...] = ("persuadable", "sure_thing", "sleeping_dog", "lost_cause")
ASSIGNMENT_COLUMNS: tuple[str, ...] = ("customer_id", "arm", "treated", "send_date")


class CampaignInputError(InputError):
    """The assignments or dates handed to the simulator break its contract (names the rows)."""


@dataclass(frozen=True)
class CampaignEffects:
    """True effects of an offer by response class (see the module docstring)."""

    persuadable_conversion: float = 0.2
    sale_only_conversion: float = 0.35
    sleeping_dog_loss: float = 0.3
    sleeping_dog_min_rate: float = 10.0
    lost_cause_conversion: float = 0.01
    off_calendar_rate_share: float = 0.25
    scale: float = 1.0
    offer_scale: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "persuadable_conversion",
            "sale_only_conversion",
            "sleeping_dog_loss",
            "lost_cause_conversion",
            "off_calendar_rate_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.scale < 0 or any(v < 0 for v in self.offer_scale.values()):
            raise ValueError("scale and offer_scale values must be >= 0")


@dataclass(frozen=True)
class CampaignOutcome:
    """The base log with the outcome rows appended, the outcome rows alone, and the truth.

    ``truth`` has one row per assigned customer: customer_id, arm, treated, send_date,
    window_end (exclusive), response_class, p_buy_control, p_buy_treated, true_uplift,
    true_incremental_orders, true_incremental_spend, bought_if_control, bought_if_treated,
    bought, orders_in_window, spend_in_window.
    """

    log: pd.DataFrame
    outcomes: pd.DataFrame
    truth: pd.DataFrame


def window_purchase_rate(truth: pd.DataFrame, effects: CampaignEffects) -> np.ndarray:
    """Purchases per year outside the customer's season, without the offer (the window's rate)."""
    off_calendar = truth["sale_only"].to_numpy(dtype=bool) | truth["gift_buyer"].to_numpy(
        dtype=bool
    )
    rate = truth["purchase_rate_per_year"].to_numpy(dtype=np.float64)
    return rate * np.where(off_calendar, effects.off_calendar_rate_share, 1.0)


def baseline_purchase_probability(
    truth: pd.DataFrame, days: int, effects: CampaignEffects | None = None
) -> np.ndarray:
    """P(at least one purchase in ``days`` without an offer), the simulator's ``p0``."""
    effects = CampaignEffects() if effects is None else effects
    expected = window_purchase_rate(truth, effects) * days / 365.25
    return np.where(truth["alive_at_end"].to_numpy(dtype=bool), -np.expm1(-expected), 0.0)


def _day(value: str | pd.Timestamp) -> pd.Timestamp:
    return as_utc(pd.Timestamp(value)).normalize()


def _check_assignments(assignments: pd.DataFrame, log_end: pd.Timestamp) -> pd.DataFrame:
    missing = [c for c in ASSIGNMENT_COLUMNS if c not in assignments.columns]
    if missing:
        raise CampaignInputError(f"assignments lack column(s) {missing}")
    frame = assignments[list(ASSIGNMENT_COLUMNS)].reset_index(drop=True).copy()
    frame["customer_id"] = frame["customer_id"].astype("str")
    frame["send_date"] = pd.to_datetime(frame["send_date"], utc=True).dt.floor("D")
    repeated = frame["customer_id"].duplicated(keep=False)
    if repeated.any():
        ids = frame.loc[repeated, "customer_id"].unique()[:5].tolist()
        raise CampaignInputError(
            f"{int(repeated.sum())} assignment row(s) repeat a customer, e.g. customer_id {ids}"
        )
    late = frame["send_date"].isna() | (frame["send_date"] < log_end)
    if late.any():
        ids = frame.loc[late, "customer_id"].head(5).tolist()
        raise CampaignInputError(
            f"{int(late.sum())} assignment row(s) have no send_date or one before the base "
            f"log ends ({log_end.date()}), e.g. customer_id {ids}"
        )
    return frame


def _check_window_end(frame: pd.DataFrame, window_days: int) -> None:
    """Every outcome window ends before ``LATEST_TIME``, the last instant the loader reads."""
    latest = pd.Timestamp(LATEST_TIME) - pd.Timedelta(days=window_days)
    late = frame["send_date"] > latest
    if late.any():
        ids = frame.loc[late, "customer_id"].head(5).tolist()
        raise CampaignInputError(
            f"{int(late.sum())} assignment row(s) have a send_date whose {window_days}-day "
            f"window ends past {LATEST_TIME.date()} (the last day a purchase log may hold), "
            f"e.g. customer_id {ids}"
        )


def simulate_campaign_outcomes(
    log: pd.DataFrame,
    truth: pd.DataFrame,
    assignments: pd.DataFrame,
    *,
    log_end: str | pd.Timestamp,
    window_days: int,
    seed: int,
    effects: CampaignEffects | None = None,
) -> CampaignOutcome:
    """Draw each assigned customer's window after the send day, with known true uplift.

    ``assignments`` has ``ASSIGNMENT_COLUMNS`` (see
    :func:`features.retention.assignments.assignments_from_scores`);
    ``log_end`` is the first UTC day the base ``log`` does not cover. Same inputs, same seed:
    same frames.
    """
    if window_days < 1:
        raise CampaignInputError(f"window_days must be >= 1, got {window_days}")
    effects = CampaignEffects() if effects is None else effects
    end = _day(log_end)
    frame = _check_assignments(assignments, end)
    _check_window_end(frame, window_days)
    by_id = truth.set_index(truth["customer_id"].astype("str"))
    unknown = ~frame["customer_id"].isin(by_id.index)
    if unknown.any():
        raise CampaignInputError(
            f"{int(unknown.sum())} assigned customer(s) are not in the truth, "
            f"e.g. customer_id {frame.loc[unknown, 'customer_id'].head(5).tolist()}"
        )
    t = by_id.loc[frame["customer_id"]]
    n = len(frame)
    rng = np.random.default_rng([seed, 17])

    alive = t["alive_at_end"].to_numpy(dtype=bool)
    base_rate = t["purchase_rate_per_year"].to_numpy(dtype=np.float64)
    expected = window_purchase_rate(t, effects) * window_days / 365.25
    p0 = np.where(alive, -np.expm1(-expected), 0.0)

    sleeping = alive & (base_rate >= effects.sleeping_dog_min_rate)
    sure = alive & ~sleeping & t["regular_buyer"].to_numpy(dtype=bool)
    persuadable = alive & ~sleeping & ~sure
    klass = np.where(~alive, 3, np.where(sleeping, 2, np.where(sure, 1, 0)))
    arm = frame["arm"].astype("str").to_numpy()
    strength = effects.scale * np.array([effects.offer_scale.get(a, 1.0) for a in arm])
    conversion = np.where(
        t["sale_only"].to_numpy(dtype=bool),
        effects.sale_only_conversion,
        effects.persuadable_conversion,
    )
    p1 = np.select(
        [persuadable, sure, sleeping],
        [
            p0 + conversion * strength * (1.0 - p0),
            p0,
            p0 * (1.0 - effects.sleeping_dog_loss * strength),
        ],
        default=effects.lost_cause_conversion * strength,
    )
    p1 = np.clip(p1, 0.0, 1.0)

    u = rng.random(n)
    bought0 = u < p0
    bought1 = u < p1
    treated = frame["treated"].to_numpy(dtype=bool)
    bought = np.where(treated, bought1, bought0)
    n_orders = np.where(bought, 1 + rng.poisson(expected), 0)

    positive = log.loc[log["amount"] > 0]
    order_value = positive.groupby(positive["customer_id"].astype("str"), sort=False)[
        "amount"
    ].mean()
    last_row = log.groupby(log["customer_id"].astype("str"), sort=False).tail(1)
    last_row = last_row.set_index(last_row["customer_id"].astype("str"))
    value = order_value.reindex(frame["customer_id"]).to_numpy(dtype=np.float64)
    value = np.where(np.isfinite(value), value, 30.0)

    owner = np.repeat(np.arange(n), n_orders)
    send_us = (
        frame["send_date"].dt.tz_convert(None).to_numpy().astype("datetime64[us]").view(np.int64)
    )
    offset = np.floor(rng.random(len(owner)) * window_days * 86_400.0).astype(np.int64)
    stamp_us = send_us[owner] + offset * 1_000_000
    amount = np.maximum(np.round(value[owner] * rng.lognormal(0.0, 0.25, len(owner)), 2), 0.01)
    spend = np.bincount(owner, weights=amount, minlength=n)
    order = np.lexsort((owner, stamp_us))
    owner, stamp_us, amount = owner[order], stamp_us[order], amount[order]
    template = last_row.reindex(frame["customer_id"].to_numpy()[owner])
    outcomes = pd.DataFrame(
        {
            "customer_id": pd.Series(frame["customer_id"].to_numpy()[owner], dtype="str"),
            "timestamp": pd.to_datetime(stamp_us, unit="us", utc=True),
            "amount": amount,
            "order_id": pd.Series([f"w{seed}-{i:08d}" for i in range(len(owner))], dtype="str"),
            "quantity": np.ones(len(owner)),
            "product_id": pd.Series(template["product_id"].to_numpy(), dtype="str"),
            "category": pd.Series(template["category"].to_numpy(), dtype="str"),
            "discount": np.zeros(len(owner), dtype=bool),
            "channel": pd.Series(template["channel"].to_numpy(), dtype="str"),
        }
    )
    combined = pd.concat([log, outcomes], ignore_index=True)

    uplift = p1 - p0
    truth_out = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype("str"),
            "arm": pd.Series(arm, dtype="str"),
            "treated": treated,
            "send_date": frame["send_date"].dt.as_unit("us"),
            "window_end": (frame["send_date"] + pd.Timedelta(days=window_days)).dt.as_unit("us"),
            "response_class": pd.Series(np.array(RESPONSE_CLASSES)[klass], dtype="str"),
            "p_buy_control": p0,
            "p_buy_treated": p1,
            "true_uplift": uplift,
            "true_incremental_orders": uplift * (1.0 + expected),
            "true_incremental_spend": uplift * (1.0 + expected) * value,
            "bought_if_control": bought0,
            "bought_if_treated": bought1,
            "bought": bought,
            "orders_in_window": n_orders.astype(np.int64),
            "spend_in_window": spend,
        }
    )
    return CampaignOutcome(log=combined, outcomes=outcomes, truth=truth_out)
