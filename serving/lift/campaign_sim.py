"""A whole synthetic campaign in one call: log, scores, the offer policy's decisions, outcomes.

Why here and not in ``features``: the campaign runs through the offer policy
(``serving.offers``), which ``features`` must not import. The outcome model and the true
uplift live in :mod:`features.synthetic.campaigns`; this module only supplies what a campaign needs
before it: scores for every customer at ``as_of`` and the policy's decisions on them.

Scores come from the truth, not from a trained model (an *oracle*), so that hundreds of
campaigns can be drawn in seconds (benchmarks, tests): ``churn_probability`` is the
simulator's own probability of no purchase in ``horizon_days``, expected purchases and spend
follow the true rate and the customer's mean order value, and segments are the real ones
from the point-in-time features. To run a campaign on a trained model's scores instead, score
with ``retain score`` and pass its output to :func:`features.synthetic.campaigns.simulate_campaign_outcomes`
(``retain synth --campaign-scores``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.builders import build_features
from features.log.purchase_log import canonicalize
from features.retention.assignments import assignments_from_scores
from features.retention.segments import assign_segments
from features.synthetic.campaigns import (
    CampaignEffects,
    CampaignOutcome,
    baseline_purchase_probability,
    simulate_campaign_outcomes,
    window_purchase_rate,
)
from features.synthetic.synth import SyntheticLog, generate_purchase_log
from features.utc import to_utc_timestamp
from serving.offers.decide import apply_policy
from serving.offers.policy import OfferPolicy


@dataclass(frozen=True)
class SyntheticCampaign:
    """One simulated campaign.

    ``log``: the base log plus the outcome windows (source contract); ``scores``: oracle
    scores with the policy's offer columns and ``campaign`` (the table ``retain lift`` reads);
    ``truth``: per-customer truth of the base log; ``outcome_truth``: per assigned customer
    (see :class:`features.synthetic.campaigns.CampaignOutcome`), ``true_uplift`` included.
    """

    log: pd.DataFrame
    scores: pd.DataFrame
    truth: pd.DataFrame
    outcome_truth: pd.DataFrame


def oracle_scores(
    log: pd.DataFrame,
    truth: pd.DataFrame,
    as_of: object,
    *,
    horizon_days: int = 90,
    effects: CampaignEffects | None = None,
) -> pd.DataFrame:
    """Scores (the columns the offer policy reads) from the truth instead of a model.

    ``log`` is the source-contract frame of :func:`features.synthetic.synth.generate_purchase_log`.
    """
    as_of_ts = to_utc_timestamp(as_of)
    features = build_features(canonicalize(log).log, as_of_ts)
    segments = assign_segments(features)
    t = truth.set_index(truth["customer_id"].astype("str")).loc[features.index.astype("str")]
    effects = CampaignEffects() if effects is None else effects
    rate = window_purchase_rate(t, effects)
    alive = t["alive_at_end"].to_numpy(dtype=bool)
    positive = log.loc[log["amount"] > 0]
    value = (
        positive.groupby(positive["customer_id"].astype("str"))["amount"]
        .mean()
        .reindex(features.index.astype("str"))
        .to_numpy(dtype=np.float64)
    )
    per_year = np.where(alive, rate, 0.0) * value
    gap_days = np.where(alive & (rate > 0), 365.25 / np.maximum(rate, 1e-9), np.nan)
    recency = features["recency_days"].to_numpy(dtype=np.float64)
    last = as_of_ts - pd.to_timedelta(recency, unit="D")
    wait = np.maximum(gap_days - recency, 0.0)
    wait = np.where(wait <= 365.0, wait, np.nan)  # NaT: no purchase expected within a year
    next_purchase = as_of_ts + pd.to_timedelta(wait, unit="D")
    return pd.DataFrame(
        {
            "customer_id": pd.array(features.index.astype("str"), dtype="str"),
            "as_of": pd.DatetimeIndex([as_of_ts] * len(features)).as_unit("us"),
            "segment": pd.array(segments.astype("str").to_numpy(), dtype="str"),
            "churn_probability": 1.0 - baseline_purchase_probability(t, horizon_days, effects),
            "expected_next_purchase_date": pd.DatetimeIndex(next_purchase),
            "expected_spend_horizon": per_year * horizon_days / 365.25,
            "expected_spend_365d": per_year,
            "last_purchase_at": pd.DatetimeIndex(last),
        }
    )


def run_synthetic_campaign(
    n_customers: int,
    seed: int,
    *,
    as_of: str | pd.Timestamp = "2025-01-01",
    window_days: int = 90,
    horizon_days: int = 90,
    policy: OfferPolicy | None = None,
    campaign: str | None = None,
    effects: CampaignEffects | None = None,
    start: str | pd.Timestamp = "2022-01-01",
) -> SyntheticCampaign:
    """Draw a log up to ``as_of``, score it (oracle), run the policy, draw the outcomes.

    ``as_of`` is the campaign's scoring day; the base log ends the day before. ``campaign``
    (default the policy's) seeds the holdout draw. Same arguments, same frames.
    """
    as_of_ts = to_utc_timestamp(as_of).normalize()
    end = as_of_ts - pd.Timedelta(days=1)
    synthetic = generate_purchase_log(n_customers, seed=seed, start=start, end=end)
    policy = OfferPolicy.default() if policy is None else policy
    name = policy.campaign if campaign is None else campaign
    scores = oracle_scores(
        synthetic.log, synthetic.truth, as_of_ts, horizon_days=horizon_days, effects=effects
    )
    scored, outcome = send_campaign(
        synthetic,
        scores,
        policy,
        name,
        as_of=as_of_ts,
        window_days=window_days,
        seed=seed,
        effects=effects,
    )
    return SyntheticCampaign(
        log=outcome.log, scores=scored, truth=synthetic.truth, outcome_truth=outcome.truth
    )


def send_campaign(
    synthetic: SyntheticLog,
    scores: pd.DataFrame,
    policy: OfferPolicy,
    campaign: str,
    *,
    as_of: pd.Timestamp,
    window_days: int,
    seed: int,
    effects: CampaignEffects | None = None,
) -> tuple[pd.DataFrame, CampaignOutcome]:
    """The policy's decisions on ``scores`` and the outcomes they draw from ``as_of`` on.

    Returns the scores with the offer columns (the table ``retain lift`` reads) and the
    simulated outcome; one population's scores may be sent many campaigns (the benchmark).
    """
    offers = apply_policy(scores, policy, campaign)
    scored = pd.concat([scores, offers.drop(columns="customer_id")], axis=1)
    outcome = simulate_campaign_outcomes(
        synthetic.log,
        synthetic.truth,
        assignments_from_scores(scored, suppressed=True),
        log_end=as_of,
        window_days=window_days,
        seed=seed,
        effects=effects,
    )
    return scored, outcome
