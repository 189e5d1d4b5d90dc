"""Synthetic campaigns: outcomes drawn through the policy's assignments, with known uplift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.retention.assignments import assignments_from_scores
from features.synthetic.campaigns import (
    CampaignEffects,
    CampaignInputError,
    simulate_campaign_outcomes,
)
from features.synthetic.synth import generate_purchase_log
from serving.cli import app
from serving.lift.campaign_sim import run_synthetic_campaign

LOG_END = pd.Timestamp("2025-01-01", tz="UTC")


@pytest.fixture(scope="module")
def base():
    return generate_purchase_log(4_000, seed=3, end="2024-12-31")


def _assign(truth: pd.DataFrame, seed: int = 0, send: str = "2025-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": truth["customer_id"],
            "arm": "reminder",
            "treated": rng.random(len(truth)) < 0.5,
            "send_date": pd.Timestamp(send, tz="UTC"),
        }
    )


def test_same_inputs_same_frames_and_seed_matters(base) -> None:
    a = _assign(base.truth)
    one = simulate_campaign_outcomes(
        base.log, base.truth, a, log_end=LOG_END, window_days=60, seed=1
    )
    two = simulate_campaign_outcomes(
        base.log, base.truth, a, log_end=LOG_END, window_days=60, seed=1
    )
    pd.testing.assert_frame_equal(one.log, two.log)
    pd.testing.assert_frame_equal(one.truth, two.truth)
    other = simulate_campaign_outcomes(
        base.log, base.truth, a, log_end=LOG_END, window_days=60, seed=2
    )
    assert not one.truth["bought"].equals(other.truth["bought"])


def test_effects_are_heterogeneous_by_response_class(base) -> None:
    out = simulate_campaign_outcomes(
        base.log, base.truth, _assign(base.truth), log_end=LOG_END, window_days=90, seed=0
    )
    t = out.truth
    by = t.groupby("response_class")["true_uplift"]
    assert set(t["response_class"]) == {"persuadable", "sure_thing", "sleeping_dog", "lost_cause"}
    assert (by.min()["persuadable"] > 0) and (by.max()["sleeping_dog"] < 0)
    assert by.max()["sure_thing"] == 0 == by.min()["sure_thing"]
    lost = t["response_class"] == "lost_cause"
    assert (t.loc[lost, "p_buy_control"] == 0).all()
    np.testing.assert_allclose(t["true_uplift"], t["p_buy_treated"] - t["p_buy_control"])
    # the potential outcome that happened is the arm's, the other is kept for the truth
    assert (
        t["bought"] == np.where(t["treated"], t["bought_if_treated"], t["bought_if_control"])
    ).all()


def test_observed_difference_matches_the_true_uplift(base) -> None:
    """Treated minus control buy rate estimates the mean true uplift (a 4-sigma band)."""
    rates = []
    for seed in range(3):
        out = simulate_campaign_outcomes(
            base.log,
            base.truth,
            _assign(base.truth, seed),
            log_end=LOG_END,
            window_days=90,
            seed=seed,
        )
        t = out.truth
        treated, control = t.loc[t["treated"], "bought"], t.loc[~t["treated"], "bought"]
        diff = treated.mean() - control.mean()
        se = np.sqrt(treated.var() / len(treated) + control.var() / len(control))
        rates.append((diff, se, t["true_uplift"].mean()))
    for diff, se, true in rates:
        assert abs(diff - true) < 4 * se
    assert min(true for _, _, true in rates) > 0.02  # the default campaign does something


def test_outcome_rows_lie_in_each_window_and_match_the_truth(base) -> None:
    a = _assign(base.truth)
    a["send_date"] = LOG_END + pd.to_timedelta(np.arange(len(a)) % 30, unit="D")
    out = simulate_campaign_outcomes(
        base.log, base.truth, a, log_end=LOG_END, window_days=30, seed=4
    )
    rows = out.outcomes.merge(
        out.truth[["customer_id", "send_date", "window_end"]], on="customer_id"
    )
    assert (rows["timestamp"] >= rows["send_date"]).all()
    assert (rows["timestamp"] < rows["window_end"]).all()
    counts = out.outcomes.groupby("customer_id").size()
    t = out.truth.set_index("customer_id")
    assert (t.loc[counts.index, "orders_in_window"] == counts).all()
    assert t.loc[~t.index.isin(counts.index), "orders_in_window"].eq(0).all()
    assert t["bought"].sum() == len(counts)
    assert len(out.log) == len(base.log) + len(out.outcomes)
    assert list(out.outcomes.columns) == list(base.log.columns)


def test_no_effect_campaign_changes_nothing(base) -> None:
    out = simulate_campaign_outcomes(
        base.log,
        base.truth,
        _assign(base.truth),
        log_end=LOG_END,
        window_days=90,
        seed=0,
        effects=CampaignEffects(scale=0.0),
    )
    assert (out.truth["true_uplift"] == 0).all()
    assert (out.truth["bought_if_treated"] == out.truth["bought_if_control"]).all()


def test_bad_assignments_name_the_rows(base) -> None:
    a = _assign(base.truth).head(10)
    twice = pd.concat([a, a.head(2)])
    with pytest.raises(CampaignInputError, match=r"4 assignment row\(s\) repeat.*cust000000"):
        simulate_campaign_outcomes(
            base.log, base.truth, twice, log_end=LOG_END, window_days=9, seed=0
        )
    early = a.copy()
    early.loc[3, "send_date"] = pd.Timestamp("2024-12-30", tz="UTC")
    with pytest.raises(CampaignInputError, match=r"1 assignment row\(s\).*cust000003"):
        simulate_campaign_outcomes(
            base.log, base.truth, early, log_end=LOG_END, window_days=9, seed=0
        )
    stranger = a.copy()
    stranger.loc[0, "customer_id"] = "nobody"
    with pytest.raises(CampaignInputError, match=r"not in the truth.*nobody"):
        simulate_campaign_outcomes(
            base.log, base.truth, stranger, log_end=LOG_END, window_days=9, seed=0
        )


def test_campaign_runs_through_the_offer_policy() -> None:
    camp = run_synthetic_campaign(3_000, seed=5, campaign="spring")
    scores = camp.scores
    assert (scores["campaign"] == "spring").all()
    share = scores["holdout"].mean()
    assert 0.07 < share < 0.13  # the policy's holdout_share is 0.1
    assert set(camp.outcome_truth["arm"]) <= set(scores["offer_rule"])
    held = camp.outcome_truth.merge(scores[["customer_id", "holdout"]], on="customer_id")
    assert not held.loc[held["holdout"], "treated"].any()
    # a later window's purchases are in the log, none of them before the scoring day
    assert (camp.log["timestamp"] >= pd.Timestamp("2025-01-01", tz="UTC")).sum() > 0
    again = run_synthetic_campaign(3_000, seed=5, campaign="spring")
    pd.testing.assert_frame_equal(camp.outcome_truth, again.outcome_truth)


def test_synth_cli_appends_the_campaign_window(tmp_path: Path) -> None:
    runner = CliRunner()
    plain, truth0 = tmp_path / "plain.parquet", tmp_path / "truth0.parquet"
    args = ["synth", "-n", "400", "--seed", "8", "--out", str(plain), "--truth", str(truth0)]
    assert runner.invoke(app, args).exit_code == 0
    camp = run_synthetic_campaign(400, seed=8)
    scores = tmp_path / "scores.parquet"
    camp.scores.to_parquet(scores)
    out, truth = tmp_path / "log.parquet", tmp_path / "truth.parquet"
    result = runner.invoke(
        app,
        [*args[:5], "--out", str(out), "--truth", str(truth), "--campaign-scores", str(scores)],
    )
    assert result.exit_code == 0, result.output
    log, base = pd.read_parquet(out), pd.read_parquet(plain)
    pd.testing.assert_frame_equal(log.iloc[: len(base)], base)  # same log, then the window
    assert (log.iloc[len(base) :]["timestamp"] >= pd.Timestamp("2025-01-01", tz="UTC")).all()
    t = pd.read_parquet(truth)
    assert len(t) == 400 and t["true_uplift"].notna().sum() == len(
        assignments_from_scores(camp.scores, suppressed=True)
    )
    bad = camp.scores.copy()
    bad.loc[0, "offer_send_date"] = pd.Timestamp("2024-06-01", tz="UTC")
    bad.to_parquet(scores)
    result = runner.invoke(app, [*args[:5], "--out", str(out), "--campaign-scores", str(scores)])
    assert result.exit_code == 2
    assert "cust000000" in result.output and "2025-01-01" in result.output
