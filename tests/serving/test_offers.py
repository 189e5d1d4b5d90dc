"""The offer policy on hand-made customers whose offers, dates and values are worked out by hand."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.retention.segments import SEGMENTS
from serving.offers.decide import OFFER_COLUMNS, apply_policy
from serving.offers.inputs import ScoresError
from serving.offers.policy import OfferPolicy, OfferPolicyError

AS_OF = pd.Timestamp("2024-06-10 12:00", tz="UTC")
AS_OF_DAY = pd.Timestamp("2024-06-10", tz="UTC")


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def scores_frame(rows: list[dict[str, object]], as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    """Score rows in the input contract; unspecified fields get neutral values."""
    base: dict[str, object] = {
        "as_of": as_of,
        "churn_probability": 0.5,
        "expected_next_purchase_date": pd.NaT,
        "expected_spend_horizon": 30.0,
        "expected_spend_365d": 100.0,
        "last_purchase_at": day("2024-05-01 10:00"),
    }
    frame = pd.DataFrame([{**base, **row} for row in rows])
    for column in ("as_of", "expected_next_purchase_date", "last_purchase_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


@pytest.fixture(scope="module")
def no_holdout() -> OfferPolicy:
    return OfferPolicy.default().model_copy(update={"holdout_share": 0.0})


# --------------------------------------------------------------------- loading and validation


def test_default_policy_loads_and_round_trips() -> None:
    policy = OfferPolicy.default()
    assert [rule.name for rule in policy.rules] == [
        "first_time_followup",
        "second_time_nurture",
        "sale_only_notice",
        "loyal_reward",
        "at_risk_winback",
        "lapsed_reactivation",
        "next_purchase_reminder",
    ]
    assert policy.holdout_share == 0.1
    assert policy.campaign == "default"
    assert OfferPolicy.from_yaml(policy.to_yaml()) == policy


def test_from_yaml_reads_a_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(OfferPolicy.default().to_yaml(), encoding="utf-8")
    assert OfferPolicy.from_yaml(path) == OfferPolicy.default()
    assert OfferPolicy.from_yaml(str(path)) == OfferPolicy.default()
    with pytest.raises(OfferPolicyError, match="not found"):
        OfferPolicy.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(OfferPolicyError, match="no such file"):
        OfferPolicy.from_yaml(str(tmp_path / "missing.yaml"))


def test_from_yaml_rejects_broken_yaml() -> None:
    with pytest.raises(OfferPolicyError, match="not valid YAML"):
        OfferPolicy.from_yaml("rules: [\n  {name: x")


def _default_data() -> dict:
    return yaml.safe_load(OfferPolicy.default().to_yaml())


def _mutate_top(d: dict) -> None:
    d["bogus"] = 1


def _mutate_send_delay(d: dict) -> None:
    d["rules"][2]["send"] = {"days_after_last_purchase": -1}


def _mutate_lift(d: dict) -> None:
    d["rules"][0]["lift"] = 1.5


def _mutate_lift_type(d: dict) -> None:
    d["rules"][0]["lift"] = "high"


def _mutate_cost(d: dict) -> None:
    d["rules"][1]["cost"] = -1.0


def _mutate_holdout(d: dict) -> None:
    d["holdout_share"] = 1.2


def _mutate_segment(d: dict) -> None:
    d["rules"][0]["match"]["segments"] = ["first_time", "vip"]


def _mutate_rule_key(d: dict) -> None:
    d["rules"][3]["discount"] = 0.2


def _mutate_two_send_forms(d: dict) -> None:
    d["rules"][0]["send"] = {"now": True, "days_after_last_purchase": 3}


def _mutate_churn_range(d: dict) -> None:
    d["rules"][4]["match"]["churn_probability"] = {"min": 0.8, "max": 0.2}


def _mutate_channel(d: dict) -> None:
    d["rules"][5]["channel"] = "pigeon"


def _mutate_duplicate_name(d: dict) -> None:
    d["rules"][1]["name"] = d["rules"][0]["name"]


def _mutate_none_offer(d: dict) -> None:
    d["rules"][6]["offer"] = "none"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (_mutate_top, "bogus"),
        (_mutate_send_delay, "rules[2].send.days_after_last_purchase"),
        (_mutate_lift, "rules[0].lift"),
        (_mutate_lift_type, "rules[0].lift"),
        (_mutate_cost, "rules[1].cost"),
        (_mutate_holdout, "holdout_share"),
        (_mutate_segment, "rules[0].match.segments[1]"),
        (_mutate_rule_key, "rules[3].discount"),
        (_mutate_two_send_forms, "rules[0].send"),
        (_mutate_churn_range, "rules[4].match.churn_probability"),
        (_mutate_channel, "rules[5].channel"),
        (_mutate_duplicate_name, "rules"),
        (_mutate_none_offer, "rules[6].offer"),
    ],
)
def test_validation_error_names_the_field_path(mutate, path: str) -> None:
    data = _default_data()
    mutate(data)
    with pytest.raises(OfferPolicyError) as info:
        OfferPolicy.from_yaml(yaml.safe_dump(data))
    lines = str(info.value).splitlines()
    assert any(line.strip().startswith(f"{path}:") for line in lines), str(info.value)


def test_send_now_shorthand_and_empty_match() -> None:
    policy = OfferPolicy.from_yaml(
        "rules:\n"
        "  - {name: all, reason: everyone, offer: hello, channel: sms, send: now,"
        " lift: 0.1, cost: 0}\n"
    )
    assert policy.rules[0].send.now is True
    assert policy.rules[0].match.segments is None


# --------------------------------------------------------------------- the default rules


def test_every_default_rule_fires_with_hand_computed_offer(no_holdout: OfferPolicy) -> None:
    rows = [
        # 0: first purchase 2 days before as_of -> purchase day + 3 = 06-11
        {
            "customer_id": "ft_recent",
            "segment": "first_time",
            "last_purchase_at": day("2024-06-08 15:00"),
            "churn_probability": 0.6,
            "expected_spend_365d": 100.0,
        },
        # 1: first purchase 5 days ago -> 06-08 is past, so the as_of day 06-10
        {
            "customer_id": "ft_late",
            "segment": "first_time",
            "last_purchase_at": day("2024-06-05 09:00"),
            "churn_probability": 0.6,
            "expected_spend_365d": 100.0,
        },
        # 2: first purchase 21 days ago -> no welcome; reminder, next purchase 06-20 - 3
        {
            "customer_id": "ft_stale",
            "segment": "first_time",
            "last_purchase_at": day("2024-05-20 09:00"),
            "expected_next_purchase_date": day("2024-06-20 08:00"),
            "churn_probability": 0.5,
            "expected_spend_horizon": 20.0,
            "expected_spend_365d": 100.0,
        },
        # 3: second purchase, next expected 07-01 -> 06-24
        {
            "customer_id": "second",
            "segment": "second_time",
            "expected_next_purchase_date": day("2024-07-01 18:00"),
            "churn_probability": 0.4,
            "expected_spend_365d": 200.0,
        },
        # 4: sale only -> now
        {
            "customer_id": "sale",
            "segment": "sale_only",
            "churn_probability": 0.5,
            "expected_spend_365d": 80.0,
        },
        # 5: loyal, next expected 06-30 -> 06-23
        {
            "customer_id": "loyal",
            "segment": "loyal",
            "expected_next_purchase_date": day("2024-06-30 00:00"),
            "churn_probability": 0.1,
            "expected_spend_365d": 1000.0,
        },
        # 6: at risk, valuable (500 >= median 100), churn 0.7 -> win-back now
        {
            "customer_id": "risk_valuable",
            "segment": "at_risk",
            "churn_probability": 0.7,
            "expected_spend_365d": 500.0,
        },
        # 7: at risk but low value (10 < median) -> reminder; no estimate -> as_of day
        {
            "customer_id": "risk_cheap",
            "segment": "at_risk",
            "churn_probability": 0.7,
            "expected_spend_horizon": 5.0,
            "expected_spend_365d": 10.0,
        },
        # 8: at risk, valuable, but churn 0.2 < 0.3 -> reminder
        {
            "customer_id": "risk_unlikely",
            "segment": "at_risk",
            "churn_probability": 0.2,
            "expected_next_purchase_date": day("2024-08-01 00:00"),
            "expected_spend_horizon": 50.0,
            "expected_spend_365d": 500.0,
        },
        # 9: lapsed -> reactivation now
        {
            "customer_id": "lapsed",
            "segment": "lapsed",
            "churn_probability": 0.95,
            "expected_spend_365d": 20.0,
        },
        # 10: regular, next expected 06-20 -> 06-17
        {
            "customer_id": "regular",
            "segment": "regular",
            "churn_probability": 0.3,
            "expected_next_purchase_date": day("2024-06-20 23:00"),
            "expected_spend_horizon": 40.0,
            "expected_spend_365d": 50.0,
        },
        # 11: regular, no expected next purchase -> as_of day
        {
            "customer_id": "regular_nat",
            "segment": "regular",
            "churn_probability": 0.3,
            "expected_spend_horizon": 40.0,
            "expected_spend_365d": 50.0,
        },
        # 12: regular whose expected purchase (06-11) is too close: 06-08 -> as_of day
        {
            "customer_id": "regular_soon",
            "segment": "regular",
            "churn_probability": 0.3,
            "expected_next_purchase_date": day("2024-06-11 10:00"),
            "expected_spend_horizon": 40.0,
            "expected_spend_365d": 100.0,
        },
    ]
    # expected_spend_365d sorted: 10 20 50 50 80 100 100 100 100 200 500 500 1000 -> median 100
    out = apply_policy(scores_frame(rows), no_holdout)

    expected = [
        # offer, channel, rule, send day, expected value
        ("welcome_followup", "email", "first_time_followup", "2024-06-11", 100 * 0.6 * 0.05 - 0.01),
        ("welcome_followup", "email", "first_time_followup", "2024-06-10", 100 * 0.6 * 0.05 - 0.01),
        (
            "next_purchase_reminder",
            "push",
            "next_purchase_reminder",
            "2024-06-17",
            20 * 0.5 * 0.03 - 0.005,
        ),
        (
            "nurture_third_purchase",
            "email",
            "second_time_nurture",
            "2024-06-24",
            200 * 0.4 * 0.05 - 0.01,
        ),
        ("next_sale_notice", "email", "sale_only_notice", "2024-06-10", 80 * 0.5 * 0.08 - 0.01),
        ("loyalty_reward", "email", "loyal_reward", "2024-06-23", 1000 * 0.1 * 0.03 - 0.01),
        ("winback_incentive", "email", "at_risk_winback", "2024-06-10", 500 * 0.7 * 0.1 - 5.0),
        (
            "next_purchase_reminder",
            "push",
            "next_purchase_reminder",
            "2024-06-10",
            5 * 0.7 * 0.03 - 0.005,
        ),
        (
            "next_purchase_reminder",
            "push",
            "next_purchase_reminder",
            "2024-07-29",
            50 * 0.2 * 0.03 - 0.005,
        ),
        ("reactivation", "email", "lapsed_reactivation", "2024-06-10", 20 * 0.95 * 0.02 - 0.01),
        (
            "next_purchase_reminder",
            "push",
            "next_purchase_reminder",
            "2024-06-17",
            40 * 0.3 * 0.03 - 0.005,
        ),
        (
            "next_purchase_reminder",
            "push",
            "next_purchase_reminder",
            "2024-06-10",
            40 * 0.3 * 0.03 - 0.005,
        ),
        (
            "next_purchase_reminder",
            "push",
            "next_purchase_reminder",
            "2024-06-10",
            40 * 0.3 * 0.03 - 0.005,
        ),
    ]
    assert list(out.columns) == list(OFFER_COLUMNS)
    assert out["customer_id"].tolist() == [row["customer_id"] for row in rows]
    assert out["offer"].tolist() == [e[0] for e in expected]
    assert out["offer_channel"].tolist() == [e[1] for e in expected]
    assert out["offer_rule"].tolist() == [e[2] for e in expected]
    assert out["offer_send_date"].tolist() == [day(e[3]) for e in expected]
    np.testing.assert_allclose(out["offer_expected_value"], [e[4] for e in expected], atol=1e-12)
    assert not out["holdout"].any()
    assert not out["suppressed"].any()
    assert (out["suppressed_reason"] == "").all()
    assert set(out["offer_rule"]) == {rule.name for rule in no_holdout.rules}
    assert out.loc[6, "offer_reason"] == no_holdout.rules[4].reason


def test_send_date_never_before_as_of_and_welcome_within_a_week(no_holdout: OfferPolicy) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    as_of = AS_OF + pd.to_timedelta(rng.integers(0, 5, n), unit="D")
    last = as_of - pd.to_timedelta(rng.integers(0, 30 * 24 * 3600, n), unit="s")
    upcoming = as_of + pd.to_timedelta(rng.integers(-20 * 24, 40 * 24, n), unit="h")
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "as_of": as_of,
            "segment": rng.choice(list(SEGMENTS), n),
            "churn_probability": rng.random(n),
            "expected_next_purchase_date": pd.Series(upcoming).where(rng.random(n) > 0.2),
            "expected_spend_horizon": rng.gamma(2.0, 10.0, n),
            "expected_spend_365d": rng.gamma(2.0, 50.0, n),
            "last_purchase_at": last,
        }
    )
    out = apply_policy(frame, no_holdout)
    as_of_day = frame["as_of"].dt.floor("D")
    assert out["offer_send_date"].notna().all()
    assert (out["offer_send_date"] >= as_of_day).all()
    welcome = out["offer_rule"] == "first_time_followup"
    assert welcome.sum() > 50
    after_purchase = (out["offer_send_date"] - frame["last_purchase_at"].dt.floor("D")).dt.days
    assert after_purchase[welcome].between(3, 7).all()
    # First-time buyers past the week never get the welcome.
    stale = (frame["segment"] == "first_time") & (
        (as_of_day - frame["last_purchase_at"].dt.floor("D")).dt.days > 7
    )
    assert stale.sum() > 50
    assert not welcome[stale].any()


# --------------------------------------------------------------------- value and suppression

SMALL_POLICY = """
campaign: spring
holdout_share: 0.0
rules:
  - name: winback
    reason: paid win-back
    match: {segments: [at_risk]}
    offer: winback_incentive
    channel: email
    send: now
    lift: 0.1
    cost: 5.0
  - name: reminder
    reason: reminder on the horizon spend
    match: {segments: [regular]}
    offer: next_purchase_reminder
    channel: push
    send: {days_before_expected_next_purchase: 2}
    lift: 0.2
    cost: 1.0
    spend_at_stake: horizon
"""


def test_negative_expected_value_is_suppressed_and_kept_for_audit() -> None:
    policy = OfferPolicy.from_yaml(SMALL_POLICY)
    frame = scores_frame(
        [
            # 150 * 0.3 * 0.1 - 5 = -0.5 -> suppressed
            {"customer_id": "a", "segment": "at_risk", "churn_probability": 0.3,
             "expected_spend_365d": 150.0},
            # 200 * 0.3 * 0.1 - 5 = +1.0 -> sent
            {"customer_id": "b", "segment": "at_risk", "churn_probability": 0.3,
             "expected_spend_365d": 200.0},
            # horizon: 40 * 0.5 * 0.2 - 1 = 3.0 (the 365d value 1.0 would give -0.9)
            {"customer_id": "c", "segment": "regular", "churn_probability": 0.5,
             "expected_spend_horizon": 40.0, "expected_spend_365d": 1.0},
            # no rule for loyal
            {"customer_id": "d", "segment": "loyal"},
        ]
    )  # fmt: skip
    out = apply_policy(frame, policy)
    np.testing.assert_allclose(out["offer_expected_value"], [-0.5, 1.0, 3.0, 0.0], atol=1e-12)
    assert out["offer"].tolist() == ["none", "winback_incentive", "next_purchase_reminder", "none"]
    assert out["suppressed"].tolist() == [True, False, False, False]
    assert out["suppressed_reason"].tolist() == ["negative_expected_value", "", "", ""]
    assert out["offer_rule"].tolist() == ["winback", "winback", "reminder", ""]
    assert out["offer_channel"].tolist() == ["email", "email", "push", ""]
    assert out["offer_reason"].tolist()[3] == "no rule matched"
    assert out["offer_send_date"].iloc[0] == AS_OF_DAY
    assert pd.isna(out["offer_send_date"].iloc[3])


def test_a_copy_with_other_rules_decides_by_its_own_rules() -> None:
    """The rules' arrays are built once per policy; a copy with other rules must not reuse
    them (a copy carries the original's private state)."""
    policy = OfferPolicy.from_yaml(SMALL_POLICY)
    frame = scores_frame(
        [{"customer_id": "b", "segment": "at_risk", "churn_probability": 0.3,
          "expected_spend_365d": 200.0}]
    )  # fmt: skip
    first = apply_policy(frame, policy)
    assert first["offer_rule"].tolist() == ["winback"]
    assert first["offer_expected_value"].tolist() == pytest.approx([1.0])  # 200*0.3*0.1 - 5
    cheaper = [r.model_copy(update={"cost": 0.0}) for r in policy.rules]
    copy = policy.model_copy(update={"rules": cheaper})
    np.testing.assert_allclose(apply_policy(frame, copy)["offer_expected_value"], [6.0])
    pd.testing.assert_frame_equal(apply_policy(frame, policy), first)  # the original unchanged


# --------------------------------------------------------------------- holdout


def _many(n: int) -> pd.DataFrame:
    return scores_frame(
        [{"customer_id": f"cust-{i:05d}", "segment": "sale_only"} for i in range(n)]
    )


def test_holdout_share_deterministic_and_campaign_dependent() -> None:
    policy = OfferPolicy.from_yaml(SMALL_POLICY.replace("holdout_share: 0.0", "holdout_share: 0.2"))
    frame = _many(10_000)
    first = apply_policy(frame, policy)
    again = apply_policy(frame, policy)
    other = apply_policy(frame, policy, campaign="summer")
    assert abs(first["holdout"].mean() - 0.2) < 0.015
    assert abs(other["holdout"].mean() - 0.2) < 0.015
    pd.testing.assert_series_equal(first["holdout"], again["holdout"])
    # An independent draw per campaign: overlap near 0.2 * 0.2, far from identical.
    overlap = (first["holdout"] & other["holdout"]).mean()
    assert abs(overlap - 0.04) < 0.01
    held = first["holdout"]
    assert (first.loc[held, "offer"] == "none").all()
    assert (first.loc[held, "suppressed_reason"] == "holdout").all()
    assert first.loc[held, "suppressed"].all()
    # sale_only has no rule in this policy: holdout is drawn for everyone all the same.
    assert (first.loc[held, "offer_rule"] == "").all()


def test_holdout_is_the_documented_blake2b_draw() -> None:
    """Pins the algorithm, so a control group is the same on every machine and release."""
    policy = OfferPolicy.default().model_copy(update={"holdout_share": 0.3})
    frame = _many(300)
    out = apply_policy(frame, policy, campaign="spring-2024")
    expected = [
        (
            int.from_bytes(hashlib.blake2b(f"spring-2024:{cid}".encode(), digest_size=8).digest())
            >> 11
        )
        / 2**53
        < 0.3
        for cid in frame["customer_id"]
    ]
    assert out["holdout"].tolist() == expected
    # The policy's campaign is the default; categorical ids draw the same.
    by_policy = apply_policy(frame, policy.model_copy(update={"campaign": "spring-2024"}))
    categorical = frame.assign(customer_id=frame["customer_id"].astype("category"))
    assert by_policy["holdout"].tolist() == expected
    assert apply_policy(categorical, policy, campaign="spring-2024")["holdout"].tolist() == expected


def test_holdout_takes_precedence_over_negative_value() -> None:
    policy = OfferPolicy.from_yaml(SMALL_POLICY.replace("holdout_share: 0.0", "holdout_share: 1.0"))
    frame = scores_frame(
        [{"customer_id": "a", "segment": "at_risk", "churn_probability": 0.3,
          "expected_spend_365d": 150.0}]
    )  # fmt: skip
    out = apply_policy(frame, policy)
    assert out["suppressed_reason"].tolist() == ["holdout"]
    assert out["offer_expected_value"].iloc[0] == pytest.approx(-0.5)


# --------------------------------------------------------------------- input contract


def test_missing_columns_are_named(no_holdout: OfferPolicy) -> None:
    frame = _many(3).drop(columns=["churn_probability", "last_purchase_at"])
    with pytest.raises(ScoresError, match=r"\['churn_probability', 'last_purchase_at'\]"):
        apply_policy(frame, no_holdout)


def test_bad_values_are_named(no_holdout: OfferPolicy) -> None:
    frame = _many(3)
    with pytest.raises(ScoresError, match=r"segment.*'vip'.*cust-00001"):
        apply_policy(frame.assign(segment=["loyal", "vip", "loyal"]), no_holdout)
    with pytest.raises(ScoresError, match=r"churn_probability.*cust-00002"):
        apply_policy(frame.assign(churn_probability=[0.1, 0.2, 1.5]), no_holdout)
    with pytest.raises(ScoresError, match=r"expected_spend_365d.*cust-00000"):
        apply_policy(frame.assign(expected_spend_365d=[np.nan, 1.0, 2.0]), no_holdout)
    with pytest.raises(ScoresError, match=r"last_purchase_at.*cust-00001"):
        last = frame["last_purchase_at"].where(frame.index != 1)
        apply_policy(frame.assign(last_purchase_at=last), no_holdout)
    with pytest.raises(ScoresError, match="value_band"):
        banded = OfferPolicy.from_yaml(
            SMALL_POLICY.replace("match: {segments: [at_risk]}", "match: {value_bands: [high]}")
        )
        apply_policy(frame, banded)


def test_index_kept_naive_timestamps_read_as_utc(no_holdout: OfferPolicy) -> None:
    frame = scores_frame(
        [{"customer_id": "x", "segment": "loyal",
          "expected_next_purchase_date": day("2024-06-30 00:00")}]
    )  # fmt: skip
    frame.index = pd.Index([42], name="row")
    naive = frame.assign(
        as_of=frame["as_of"].dt.tz_localize(None),
        expected_next_purchase_date=frame["expected_next_purchase_date"].dt.tz_localize(None),
    )
    out = apply_policy(naive, no_holdout)
    assert out.index.equals(frame.index)
    assert out.loc[42, "offer_send_date"] == day("2024-06-23")
    assert str(out["offer_send_date"].dtype) == "datetime64[us, UTC]"


def test_value_quantile_and_bands() -> None:
    policy = OfferPolicy.from_yaml(
        """
holdout_share: 0
rules:
  - {name: top, reason: top quarter, match: {min_value_quantile: 0.75}, offer: vip,
     channel: email, send: now, lift: 0.1, cost: 0}
  - {name: banded, reason: gold band, match: {value_bands: [gold]}, offer: gold,
     channel: sms, send: now, lift: 0.1, cost: 0}
"""
    )
    # 365d spend 10, 20, 30, 40, 50: the 0.75 quantile is 40 (linear interpolation).
    frame = scores_frame(
        [
            {"customer_id": f"c{i}", "segment": "regular", "expected_spend_365d": v}
            for i, v in enumerate([10.0, 20.0, 30.0, 40.0, 50.0])
        ]
    ).assign(value_band=["gold", "tin", "gold", "tin", "tin"])
    out = apply_policy(frame, policy)
    assert out["offer"].tolist() == ["gold", "none", "gold", "vip", "vip"]


def test_empty_scores(no_holdout: OfferPolicy) -> None:
    out = apply_policy(_many(3).iloc[:0], no_holdout)
    assert list(out.columns) == list(OFFER_COLUMNS)
    assert len(out) == 0
