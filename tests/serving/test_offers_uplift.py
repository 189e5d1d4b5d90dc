"""The policy with an uplift per customer: ``min_uplift`` and the measured expected value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.offers.decide import apply_policy, decide_offers
from serving.offers.inputs import OfferInputs, ScoresError
from serving.offers.policy import OfferPolicy, OfferPolicyError
from tests.serving.test_offers import scores_frame as base_frame

POLICY_YAML = """
version: 1
holdout_share: 0.0
rules:
  - name: persuadable
    reason: Responds to offers
    match: {min_uplift: 0.05}
    offer: winback
    channel: email
    send: now
    lift: 0.1
    cost: 2.0
  - name: everyone
    reason: Everyone else
    offer: reminder
    channel: push
    send: now
    lift: 0.5
    cost: 1.0
    spend_at_stake: horizon
"""


def scores_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    return base_frame([{"segment": "regular", **row} for row in rows])


@pytest.fixture(scope="module")
def policy() -> OfferPolicy:
    return OfferPolicy.from_yaml(POLICY_YAML)


def test_expected_value_without_uplift_is_churn_times_lift(policy: OfferPolicy) -> None:
    plain = OfferPolicy.from_yaml(POLICY_YAML.replace("match: {min_uplift: 0.05}", "match: {}"))
    scores = scores_frame(
        [{"customer_id": "a", "churn_probability": 0.4, "expected_spend_365d": 100.0}]
    )
    out = apply_policy(scores, plain)
    # 100 * 0.4 * 0.1 - 2 = 2
    assert out["offer_expected_value"].tolist() == pytest.approx([2.0])


def test_expected_value_with_uplift_is_spend_times_uplift(policy: OfferPolicy) -> None:
    scores = scores_frame(
        [
            {"customer_id": "a", "uplift": 0.08, "expected_spend_365d": 100.0},
            {"customer_id": "b", "uplift": 0.01, "expected_spend_horizon": 30.0},
            {"customer_id": "c", "uplift": -0.2, "expected_spend_horizon": 30.0},
            {"customer_id": "d", "uplift": 0.05, "expected_spend_365d": 10.0},
        ]
    )
    out = apply_policy(scores, policy).set_index("customer_id")
    # a: uplift 0.08 >= 0.05 -> rule 1, 100 * 0.08 - 2 = 6; b: rule 2 on the horizon spend,
    # 30 * 0.01 - 1 = -0.7 (suppressed); c: put off, 30 * -0.2 - 1 = -7; d: exactly at the
    # bar, 10 * 0.05 - 2 = -1.5 (the churn probability, 0.5, plays no part any more)
    assert out["offer_rule"].tolist() == ["persuadable", "everyone", "everyone", "persuadable"]
    assert out["offer_expected_value"].tolist() == pytest.approx([6.0, -0.7, -7.0, -1.5])
    assert out["offer"].tolist() == ["winback", "none", "none", "none"]
    assert out["suppressed_reason"].tolist()[1:] == ["negative_expected_value"] * 3


def test_array_path_equals_frame_path_with_uplift(policy: OfferPolicy) -> None:
    rng = np.random.default_rng(0)
    n = 500
    scores = scores_frame(
        [
            {
                "customer_id": f"c{i}",
                "uplift": float(u),
                "churn_probability": float(p),
                "expected_spend_365d": float(s),
            }
            for i, (u, p, s) in enumerate(
                zip(rng.uniform(-0.3, 0.4, n), rng.random(n), rng.gamma(2, 40, n), strict=True)
            )
        ]
    )
    frame = apply_policy(scores, policy)
    decisions = decide_offers(OfferInputs.from_scores(scores, policy), policy)
    np.testing.assert_array_equal(decisions.expected_value, frame["offer_expected_value"])
    np.testing.assert_array_equal(decisions.texts("offer"), frame["offer"].to_numpy())
    # the by-rule path (taken when a rule matches on value_bands) decides the same
    banded = OfferPolicy.from_yaml(
        POLICY_YAML.replace("lift: 0.5", "lift: 0.5\n    match: {value_bands: [x, y]}")
    )
    scores["value_band"] = "x"
    by_rule = apply_policy(scores, banded)
    pd.testing.assert_series_equal(by_rule["offer"], frame["offer"])


def test_min_uplift_without_uplift_scores_is_refused(policy: OfferPolicy) -> None:
    scores = scores_frame([{"customer_id": "a"}])
    with pytest.raises(ScoresError, match=r"rules\[0\]\.match\.min_uplift needs an uplift"):
        apply_policy(scores, policy)
    scores["uplift"] = np.nan  # the batch output of an artifact without an uplift model
    with pytest.raises(ScoresError, match="min_uplift needs an uplift"):
        apply_policy(scores, policy)


def test_uplift_outside_minus_one_to_one_names_the_customer(policy: OfferPolicy) -> None:
    scores = scores_frame([{"customer_id": "a", "uplift": 0.1}, {"customer_id": "b"}])
    scores.loc[1, "uplift"] = 1.5
    with pytest.raises(ScoresError, match=r"uplift must lie in \[-1, 1\].*customer_id \['b'\]"):
        apply_policy(scores, policy)


def test_min_uplift_is_validated_on_load() -> None:
    with pytest.raises(OfferPolicyError, match=r"rules\[0\]\.match\.min_uplift"):
        OfferPolicy.from_yaml(POLICY_YAML.replace("min_uplift: 0.05", "min_uplift: 2"))


@pytest.mark.parametrize("seed", range(40))
def test_a_few_rows_are_checked_like_many(seed: int) -> None:
    """``OfferInputs`` checks a few rows value by value and many by array calls: on random
    rows with NaN, infinities and values out of range both refuse exactly the bad ones."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 17))
    pool = np.array([0.0, 0.5, 1.0, -0.25, 1.5, np.nan, np.inf, -np.inf, -1.0])

    def column(p_bad: float) -> np.ndarray:
        good = rng.choice(pool[:3], n)
        return np.where(rng.random(n) < p_bad, rng.choice(pool, n), good)

    churn, spend, uplift = column(0.1), column(0.05), column(0.1)
    day = np.full(n, np.datetime64("2024-07-01", "D"))

    def build(times: int) -> OfferInputs:
        return OfferInputs(
            np.array([f"c{i}" for i in range(n * times)], dtype=object),
            segment_codes=np.zeros(n * times, dtype=np.int8),
            churn=np.tile(churn, times),
            spend_365d=np.tile(spend, times),
            spend_horizon=np.tile(spend, times),
            as_of_day=np.tile(day, times),
            last_day=np.tile(day, times),
            next_day=np.tile(day, times),
            uplift=np.tile(uplift, times),
        )

    bad = (
        not np.isfinite(churn).all()
        or not np.isfinite(spend).all()
        or ((churn < 0) | (churn > 1)).any()
        or not ((uplift >= -1) & (uplift <= 1)).all()
    )
    for times in (1, 17):  # n <= 16 rows, then more than 16
        if bad:
            with pytest.raises(ScoresError):
                build(times)
        else:
            build(times)
