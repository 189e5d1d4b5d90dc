"""``retain lift``: campaign effects against the holdout, bad input, and the policy update."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from features.log.purchase_log import canonicalize
from features.retention.assignments import AssignmentError
from serving.cli import app
from serving.lift.assignments import read_assignments
from serving.lift.campaign_sim import SyntheticCampaign, run_synthetic_campaign
from serving.lift.measure import measure_lift, window_outcomes
from serving.lift.policy_update import rule_updates, shrink, updated_policy_text
from serving.lift.statistics import estimate
from serving.offers.decide import apply_policy
from serving.offers.policy import OfferPolicy
from tests.features.conftest import make_log

runner = CliRunner()
FAR = pd.Timestamp("2030-01-01", tz="UTC")


@pytest.fixture(scope="module")
def campaign() -> SyntheticCampaign:
    return run_synthetic_campaign(12_000, seed=21, campaign="spring")


@pytest.fixture(scope="module")
def canonical(campaign: SyntheticCampaign) -> pd.DataFrame:
    return canonicalize(campaign.log).log


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, campaign: SyntheticCampaign) -> Path:
    root = tmp_path_factory.mktemp("lift")
    campaign.log.to_parquet(root / "log.parquet")
    campaign.scores.to_parquet(root / "scores.parquet")
    return root


# ---- statistics -------------------------------------------------------------------------


def test_welch_estimate_matches_scipy_on_a_hand_example() -> None:
    y = np.array([1, 0, 1, 1, 1, 0, 0, 0, 1, 0], dtype=float)
    treated = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    x = np.zeros(10)  # no covariate variance: no CUPED
    e = estimate(y, x, treated)
    assert e.lift == pytest.approx(0.8 - 0.2)
    # s_t^2 = 0.2, s_c^2 = 0.2 (ddof 1): se = sqrt(0.2/5 + 0.2/5) = sqrt(0.08)
    assert e.se == pytest.approx(math.sqrt(0.08))
    assert e.df == pytest.approx(8.0)
    ref = stats.ttest_ind(y[treated], y[~treated], equal_var=False)
    from serving.lift.statistics import p_value

    assert p_value(e.lift, e.se, e.df) == pytest.approx(ref.pvalue)
    assert math.isnan(e.lift_cuped) and not e.use_cuped


def test_a_holdout_where_nobody_bought_is_not_taken_as_exact() -> None:
    y = np.array([1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    treated = np.array([True] * 6 + [False] * 6)
    x = np.zeros(12)
    plain = estimate(y, x, treated)
    floored = estimate(y, x, treated, binary=True)
    # holdout all zero: sample variance 0; floored at p(1-p) with p = 1/8
    assert plain.se == pytest.approx(math.sqrt(0.3 / 6))
    assert floored.se == pytest.approx(math.sqrt(0.3 / 6 + (1 / 8) * (7 / 8) / 6))
    assert floored.lift == plain.lift == pytest.approx(0.5)


def test_cuped_narrows_the_interval_when_the_pre_period_predicts() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.gamma(2.0, 1.0, n)
    treated = rng.random(n) < 0.5
    y = x + rng.normal(0, 0.5, n) + 0.2 * treated
    e = estimate(y, x, treated)
    assert e.use_cuped and e.se_cuped < 0.5 * e.se
    assert abs(e.lift_cuped - 0.2) < 3 * e.se_cuped
    assert e.theta == pytest.approx(1.0, abs=0.05)


def test_window_outcomes_count_orders_spend_and_the_pre_period() -> None:
    rows = [
        # a: pre-period order (2 lines), window order of 2 lines, a return in the window,
        # an order exactly at the window's end (outside)
        {"customer_id": "a", "timestamp": "2024-12-25T10:00Z", "amount": 5.0, "order_id": "o1"},
        {"customer_id": "a", "timestamp": "2024-12-25T10:00Z", "amount": 7.0, "order_id": "o1"},
        {"customer_id": "a", "timestamp": "2025-01-03T10:00Z", "amount": 10.0, "order_id": "o2"},
        {"customer_id": "a", "timestamp": "2025-01-03T10:00Z", "amount": 2.5, "order_id": "o2"},
        {
            "customer_id": "a",
            "timestamp": "2025-01-05T10:00Z",
            "amount": 10.0,
            "order_id": "Co2",
            "is_return": True,
        },
        {"customer_id": "a", "timestamp": "2025-01-11T00:00Z", "amount": 99.0, "order_id": "o3"},
        # b: the send day itself is inside; not assigned: c
        {"customer_id": "b", "timestamp": "2025-01-02T00:00Z", "amount": 4.0, "order_id": "o4"},
        {"customer_id": "c", "timestamp": "2025-01-03T00:00Z", "amount": 8.0, "order_id": "o5"},
    ]
    log = make_log(rows)
    send = pd.Series(pd.to_datetime(["2025-01-01", "2025-01-02"], utc=True))
    out = window_outcomes(log, np.array(["a", "b"]), send, window_days=10)
    np.testing.assert_array_equal(out["orders"], [1, 1])
    np.testing.assert_array_equal(out["bought"], [1, 1])
    np.testing.assert_allclose(out["spend"], [12.5, 4.0])
    np.testing.assert_array_equal(out["pre_orders"], [1, 0])
    np.testing.assert_allclose(out["pre_spend"], [12.0, 0.0])


# ---- end to end on a synthetic campaign -------------------------------------------------


def test_scores_carry_the_campaign(campaign: SyntheticCampaign) -> None:
    assert (campaign.scores["campaign"] == "spring").all()
    policy = OfferPolicy.default()
    scores = campaign.scores.drop(columns=[c for c in campaign.scores if c.startswith("offer")])
    assert (apply_policy(scores, policy, "autumn")["campaign"] == "autumn").all()


def test_measured_lift_covers_the_true_lift(campaign: SyntheticCampaign, canonical) -> None:
    exp = read_assignments(campaign.scores)
    result = measure_lift(canonical, exp, window_days=90, log_end=FAR)
    offers = result.offers().set_index("rule")
    truth = campaign.outcome_truth.merge(exp.frame[["customer_id", "rule"]], on="customer_id")
    true = truth.groupby("rule")["true_uplift"].mean()
    big = offers.index[offers["holdout"] >= 100]
    assert len(big) >= 2
    for rule in big:
        row = offers.loc[rule]
        assert row["bought_lift_low"] <= true[rule] <= row["bought_lift_high"], rule
    # counts: every eligible customer is in exactly one arm of one rule
    assert offers["treated"].sum() + offers["holdout"].sum() == len(exp.frame)
    assert exp.excluded["negative expected value (never sent)"] == int(
        (campaign.scores["offer_expected_value"] < 0).sum()
    )
    # reactivation brings lapsed customers back: significant and positive here
    lapsed = offers.loc["lapsed_reactivation"]
    assert lapsed["verdict"] == "significant" and lapsed["bought_lift_low"] > 0
    assert lapsed["incremental_orders_low"] <= lapsed["incremental_orders"]
    assert lapsed["incremental_revenue"] == pytest.approx(lapsed["treated"] * lapsed["spend_lift"])
    # relative lift is the ratio of the headline rates
    assert lapsed["relative_lift"] == pytest.approx(
        (lapsed["bought_holdout"] + lapsed["bought_lift"]) / lapsed["bought_holdout"] - 1
    )
    # segments split the rule's customers
    next_rows = result.table[result.table["rule"] == "next_purchase_reminder"]
    segs = next_rows[next_rows["segment"] != "all"]
    assert segs["treated"].sum() == offers.loc["next_purchase_reminder", "treated"]


def test_too_small_to_tell_where_the_interval_is_wider_than_what_matters(
    campaign: SyntheticCampaign, canonical
) -> None:
    exp = read_assignments(campaign.scores)
    strict = measure_lift(canonical, exp, window_days=90, log_end=FAR, min_effect=0.001)
    lenient = measure_lift(canonical, exp, window_days=90, log_end=FAR, min_effect=1.0)
    s, ln = strict.offers().set_index("rule"), lenient.offers().set_index("rule")
    not_sig = s["verdict"] != "significant"
    assert not_sig.any()
    assert (s.loc[not_sig, "verdict"] == "too small to tell").all()
    assert (ln.loc[not_sig, "verdict"] == "no effect detected").all()
    # MDE at 80% power is (t + z_0.8) / t of the half-width: wider than the interval's half
    half = (s["bought_lift_high"] - s["bought_lift_low"]) / 2
    assert (s["mde"] > half).all()


# ---- bad input --------------------------------------------------------------------------


def _table(campaign: SyntheticCampaign) -> pd.DataFrame:
    exp = read_assignments(campaign.scores).frame
    return pd.DataFrame(
        {
            "customer_id": exp["customer_id"],
            "campaign": exp["campaign"],
            "offer": exp["offer"],
            "rule": exp["rule"],
            "holdout": exp["holdout"],
            "send_date": exp["send_day"],
            "as_of": pd.Timestamp("2025-01-01", tz="UTC"),
        }
    )


def test_bad_input_each_names_the_rows(campaign: SyntheticCampaign, canonical) -> None:
    table = _table(campaign)

    def measure(frame: pd.DataFrame, **kw: object) -> object:
        return measure_lift(canonical, read_assignments(frame), window_days=90, **kw)

    with pytest.raises(AssignmentError, match="no holdout column"):
        measure(table.drop(columns="holdout"), log_end=FAR)
    with pytest.raises(AssignmentError, match=r"campaign\(s\) \['spring'\] have no held-out"):
        measure(table.assign(holdout=False), log_end=FAR)
    twice = pd.concat([table, table.iloc[[4]]], ignore_index=True)
    with pytest.raises(AssignmentError, match=rf"2 rows assign.*rows 5, {len(table) + 1}"):
        measure(twice, log_end=FAR)
    early = table.copy()
    early.loc[7, "send_date"] = pd.Timestamp("2024-12-30", tz="UTC")
    with pytest.raises(AssignmentError, match=r"1 send date\(s\) fall before.*rows 8 "):
        measure(early, log_end=FAR)
    bad_flag = table.astype({"holdout": "object"})
    bad_flag.loc[2, "holdout"] = "maybe"
    with pytest.raises(AssignmentError, match=r"holdout must be true/false.*rows \[3\]"):
        measure(bad_flag, log_end=FAR)


def test_window_past_the_log_end_is_refused_or_counted(
    campaign: SyntheticCampaign, canonical
) -> None:
    exp = read_assignments(campaign.scores)
    end = pd.Timestamp("2025-04-01", tz="UTC")  # 90 days after 2025-01-01 (day 1 inside)
    late = int((exp.frame["send_day"] + pd.Timedelta(days=90) > end).sum())
    assert 0 < late < len(exp.frame)
    with pytest.raises(AssignmentError, match=rf"^{late} of {len(exp.frame)} assigned customers"):
        measure_lift(canonical, exp, window_days=90, log_end=end)
    result = measure_lift(canonical, exp, window_days=90, log_end=end, exclude_unobserved=True)
    assert result.excluded["window not observed to its end"] == late
    offers = result.offers()
    assert offers["treated"].sum() + offers["holdout"].sum() == len(exp.frame) - late
    # default log end: the day after the last row
    result = measure_lift(canonical, exp, window_days=90, exclude_unobserved=True)
    assert result.log_end == pd.Timestamp(canonical["timestamp"].max()).floor("D") + pd.Timedelta(
        days=1
    )


def test_scores_without_holdout_column_or_campaign(campaign: SyntheticCampaign) -> None:
    with pytest.raises(AssignmentError, match="no holdout column"):
        read_assignments(campaign.scores.drop(columns="holdout"))
    with pytest.raises(AssignmentError, match="no campaign column"):
        read_assignments(campaign.scores.drop(columns="campaign"))


# ---- CLI, MLflow, policy update ----------------------------------------------------------


@pytest.mark.slow
def test_cli_json_mlflow_and_policy_update(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    policy = files / "policy.yaml"
    policy.write_bytes(OfferPolicy_default_bytes())
    before = policy.read_bytes()
    new = files / "new_policy.yaml"
    args = [
        "lift",
        "-a",
        str(files / "scores.parquet"),
        "-d",
        str(files / "log.parquet"),
        "--window",
        "90",
        "--exclude-unobserved",
        "--json",
        "--update-policy",
        str(policy),
        "--out",
        str(new),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["window_days"] == 90 and payload["results"]
    assert {"bought_lift", "bought_lift_cuped", "bought_lift_raw", "mde", "verdict"} <= set(
        payload["results"][0]
    )
    # the old policy is untouched, byte for byte; the new one loads and carries the notes
    assert policy.read_bytes() == before
    updated = OfferPolicy.from_yaml(new)
    old = OfferPolicy.from_yaml(policy)
    text = new.read_text(encoding="utf-8")
    measured = {r["rule"]: r for r in payload["results"] if r["segment"] == "all"}
    for o, n in zip(old.rules, updated.rules, strict=True):
        row = measured[o.name]
        mean, _, weight = shrink(row["policy_lift"], row["policy_lift_se"], o.lift, 0.05)
        assert n.lift == pytest.approx(min(max(mean, 0.0), 1.0), abs=1e-4)
        assert f"{row['treated']} treated, {row['holdout']} held out" in text
        assert 0 < weight < 1
    assert "# Lifts measured by `retain lift`" in text
    assert "at_risk_winback" in text and "Valuable customer at risk" in text  # old text kept
    # an MLflow run with the figures in ./mlflow.db
    with sqlite3.connect(files / "mlflow.db") as db:
        keys = {k for (k,) in db.execute("select key from metrics")}
    assert "spring.lapsed_reactivation.bought_lift" in keys
    # --out onto the policy itself is refused, nothing written
    again = runner.invoke(app, [*args[:-1], str(policy)])
    assert again.exit_code == 2 and "never overwritten" in again.output
    assert policy.read_bytes() == before


def OfferPolicy_default_bytes() -> bytes:
    from importlib import resources

    return resources.files("serving").joinpath("offer_policy.yaml").read_bytes()


def test_cli_bad_input_exits_2_with_one_line(files: Path, campaign: SyntheticCampaign) -> None:
    table = _table(campaign)
    bad = files / "twice.csv"
    pd.concat([table, table.iloc[[0]]]).rename(columns={"offer": "arm_name"}).to_csv(
        bad, index=False
    )
    base = ["lift", "-d", str(files / "log.parquet"), "--window", "90", "--no-mlflow"]
    result = runner.invoke(app, [*base, "-a", str(bad), "--assignments-map", "offer=arm_name"])
    assert result.exit_code == 2
    assert result.output.startswith("error: 2 rows assign a customer more than once")
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, [*base, "-a", str(files / "scores.parquet")])
    assert result.exit_code == 2 and "cannot be observed for the whole 90-day window" in (
        result.output
    )
    result = runner.invoke(
        app,
        ["lift", "-d", str(files / "log.parquet"), "-a", str(bad), "--assignments-map", "offer=x"],
    )
    assert result.exit_code == 2 and "unknown" not in result.output
    result = runner.invoke(
        app, ["lift", "-d", str(files / "log.parquet"), "-a", str(files / "scores.parquet")]
    )
    assert result.exit_code == 2 and "give --window" in result.output


def test_policy_text_keeps_layout_and_validates() -> None:
    policy = OfferPolicy.default()
    offers = pd.DataFrame(
        [
            {
                "campaign": "c",
                "rule": "lapsed_reactivation",
                "offer": "reactivation",
                "segment": "all",
                "treated": 900,
                "holdout": 100,
                "policy_lift": 0.2,
                "policy_lift_se": 0.05,
                "policy_lift_low": 0.1,
                "policy_lift_high": 0.3,
            }
        ]
    )
    updates = rule_updates(policy, offers, window_days=60, prior_sd=0.05)
    by = {u.rule: u for u in updates}
    # equal precision: halfway between 0.02 and 0.2
    assert by["lapsed_reactivation"].new == pytest.approx(0.11)
    assert by["loyal_reward"].new == 0.03 and by["loyal_reward"].note == "not measured"
    old_text = OfferPolicy_default_bytes().decode("utf-8")
    text = updated_policy_text(old_text, policy, updates)
    assert OfferPolicy.from_yaml(text).rules[5].lift == pytest.approx(0.11)
    assert "# How a customer's offer is decided" in text  # the old comments stay


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    from tests.serving.test_batch import small_raw_log

    return small_raw_log(300, seed=6)


@pytest.mark.slow
def test_cli_on_a_retain_score_directory(
    tmp_path: Path, log: pd.DataFrame, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What users run: `retain score` output in, the window defaulting to the model's horizon."""
    from serving.batch.commands import score_command
    from tests.serving.test_batch import HORIZON, make_artifact

    artifact = make_artifact(tmp_path / "retain", log)
    scores = tmp_path / "scores"
    score_command(
        data_path, "2024-05-25", scores, model_uri=str(artifact), campaign="may", progress=False
    )
    monkeypatch.chdir(tmp_path)
    args = ["lift", "-a", str(scores), "-d", str(data_path), "--json", "--no-mlflow"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert f"whole {HORIZON}-day window" in refused.output
    result = runner.invoke(app, [*args, "--exclude-unobserved"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["window_days"] == HORIZON
    assert {r["campaign"] for r in payload["results"]} == {"may"}
    assert not (tmp_path / "mlflow.db").exists()
    nobody = runner.invoke(app, [*args, "--exclude-unobserved", "--window", "60"])
    assert nobody.exit_code == 2
    assert "none of the" in nobody.output and "whole 60-day window" in nobody.output
