"""Done-when of uplift targeting: on a seeded synthetic campaign with heterogeneous true
effects, the uplift model's Qini coefficient on held-out customers beats churn targeting and
random (the ordering is asserted, the figures are whatever the seeded run gives).

Churn targeting uses the campaign's churn probability: the simulator scores customers from
the truth (an oracle, the best churn targeting there is). ``benchmarks/uplift.py`` also
compares retain's own churn model, over several seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from features.log.purchase_log import canonicalize
from features.retention.assignments import assignments_from_scores
from serving.lift.campaign_sim import run_synthetic_campaign
from serving.offers.policy import OfferPolicy
from training.dataset.uplift_data import uplift_training_set
from training.models.uplift import UpliftModel, evaluate_on_held_out, held_out_customers

pytestmark = [pytest.mark.slow]
WINDOW = 90
AS_OF = "2025-01-01"


def test_uplift_beats_churn_and_random_on_held_out_customers() -> None:
    policy = OfferPolicy.default().model_copy(update={"holdout_share": 0.5})
    campaign = run_synthetic_campaign(
        20_000, 0, as_of=AS_OF, window_days=WINDOW, horizon_days=WINDOW, policy=policy
    )
    log = canonicalize(campaign.log).log
    assignments = assignments_from_scores(campaign.scores)
    data = uplift_training_set(
        log, assignments, WINDOW, observed_until=campaign.outcome_truth["window_end"].max()
    )
    ids = assignments["customer_id"].to_numpy()
    churn = campaign.scores.set_index("customer_id")["churn_probability"].loc[ids].to_numpy()
    truth = campaign.outcome_truth.set_index("customer_id")["true_uplift"].loc[ids].to_numpy()
    held_out = held_out_customers(ids, 0.3, 0)
    assert 2_500 < held_out.sum() < 3_500
    table = evaluate_on_held_out(
        data,
        held_out,
        {"uplift": UpliftModel(seed=0)},
        {"churn": churn, "true uplift": truth},
        seed=0,
    )
    qini = table["qini"]
    assert qini["uplift"] > qini["churn"]
    assert qini["uplift"] > qini["random"]
    # the ceiling: the true uplift orders customers better than any model
    assert qini["true uplift"] > qini["uplift"]
    assert np.isfinite(table.to_numpy()).all()
