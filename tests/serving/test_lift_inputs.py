"""``retain lift`` on tables that measure nothing unless read right (issue 22, items 1, 7, 8).

Each case starts from the correct assignments table of a synthetic campaign (12,000
customers, campaign "spring") and breaks it the way real tables come broken: ids with spaces,
ids not in the log, integer or too-early send dates, empty cells, a shared control group.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.log.purchase_log import canonicalize
from features.retention.assignments import AssignmentError, read_assignments
from serving.cli import app
from serving.lift.campaign_sim import SyntheticCampaign, run_synthetic_campaign
from serving.lift.measure import measure_lift
from serving.lift.policy_update import PolicyUpdateError, rule_updates
from serving.offers.decide import apply_policy
from serving.offers.policy import OfferPolicy

pytestmark = [pytest.mark.slow]  # retain lift processes on a simulated campaign

runner = CliRunner()
FAR = pd.Timestamp("2030-01-01", tz="UTC")


@pytest.fixture(scope="module")
def campaign() -> SyntheticCampaign:
    return run_synthetic_campaign(12_000, seed=21, campaign="spring")


@pytest.fixture(scope="module")
def canonical(campaign: SyntheticCampaign) -> pd.DataFrame:
    return canonicalize(campaign.log).log


@pytest.fixture(scope="module")
def table(campaign: SyntheticCampaign) -> pd.DataFrame:
    """The correct assignments table: what a user would export from the scores."""
    exp = read_assignments(campaign.scores).frame
    return pd.DataFrame(
        {
            "customer_id": exp["customer_id"],
            "campaign": exp["campaign"],
            "offer": exp["offer"],
            "rule": exp["rule"],
            "holdout": exp["holdout"],
            "send_date": exp["send_day"].dt.strftime("%Y-%m-%d"),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, campaign: SyntheticCampaign) -> Path:
    root = tmp_path_factory.mktemp("lift-inputs")
    campaign.log.to_parquet(root / "log.parquet")
    from importlib import resources

    policy = resources.files("serving").joinpath("offer_policy.yaml").read_bytes()
    (root / "policy.yaml").write_bytes(policy)
    return root


def _lift(files: Path, frame: pd.DataFrame, name: str, *extra: str) -> tuple[int, str, Path]:
    """Run ``retain lift --update-policy`` on ``frame``; (exit code, output, new policy)."""
    path = files / f"{name}.csv"
    frame.to_csv(path, index=False)
    out = files / f"policy-{name}.yaml"
    args = [
        "lift",
        "-a",
        str(path),
        "-d",
        str(files / "log.parquet"),
        "--window",
        "90",
        "--exclude-unobserved",
        "--no-mlflow",
        "--update-policy",
        str(files / "policy.yaml"),
        "--out",
        str(out),
        *extra,
    ]
    result = runner.invoke(app, args)
    return result.exit_code, result.output, out


def _lifts(path: Path) -> dict[str, float]:
    return {r.name: r.lift for r in OfferPolicy.from_yaml(path).rules}


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_ids_with_spaces_are_the_log_s_ids(files: Path, table: pd.DataFrame) -> None:
    code, _, good = _lift(files, table, "good")
    assert code == 0
    spaced = table.assign(customer_id=" " + table["customer_id"] + " ")
    code, output, out = _lift(files, spaced, "spaced")
    assert code == 0, output
    # before: every customer read as a non-buyer, next_purchase_reminder 0.03 -> 0.0002
    assert _lifts(out) == _lifts(good)
    assert _lifts(good)["next_purchase_reminder"] > 0.03
    # " c1" held out and "c1" treated is one customer assigned twice
    twice = pd.concat(
        [table, table.iloc[[0]].assign(customer_id=" " + table["customer_id"].iloc[0])]
    )
    code, output, _ = _lift(files, twice, "twice")
    assert code == 2
    assert "2 rows assign a customer more than once" in _error_line(output)


def test_integer_or_early_send_dates_are_refused(files: Path, table: pd.DataFrame) -> None:
    number = table.assign(send_date=table["send_date"].str.replace("-", "").astype(int))
    code, output, out = _lift(files, number, "intdate")
    assert code == 2 and not out.exists()
    line = _error_line(output)
    assert "send_date must hold dates" in line and "20250311" in line and "rows [1, 2" in line
    early = table.assign(send_date="2019-06-01")
    code, output, out = _lift(files, early, "early")
    assert code == 2 and not out.exists()
    line = _error_line(output)
    assert f"{len(table):,} send date(s) fall before the purchase log's first day" in line


def test_ids_not_in_the_log_never_update_the_policy(
    files: Path, table: pd.DataFrame, campaign: SyntheticCampaign, canonical: pd.DataFrame
) -> None:
    strangers = table.assign(customer_id="x" + table["customer_id"])
    code, output, out = _lift(files, strangers, "strangers")
    assert code == 2 and not out.exists()
    line = _error_line(output)
    assert "only 0 of" in line and "customer ids are in the purchase log" in line
    # some ids unknown: measured, with a warning naming the rows
    some = table.copy()
    some.loc[[2, 5], "customer_id"] = ["nobody-a", "nobody-b"]
    result = measure_lift(canonical, read_assignments(some), window_days=90, log_end=FAR)
    assert result.in_log == len(table) - 2
    assert any("2 of" in w and "rows 3, 6" in w for w in result.warnings)
    # the policy update refuses a row measured on no id of the log
    row = result.offers().iloc[[0]].assign(treated_in_log=0)
    with pytest.raises(PolicyUpdateError, match=r"none of its .* treated customer ids"):
        rule_updates(OfferPolicy.default(), row, window_days=90)


def test_empty_cells_are_counted_and_named(
    files: Path, table: pd.DataFrame, canonical: pd.DataFrame
) -> None:
    holes = table.copy()
    holes.loc[::10, "campaign"] = ""
    holes.loc[5::20, "rule"] = None
    exp = read_assignments(holes)
    empty_campaign, empty_rule = len(holes.loc[::10]), len(holes.loc[5::20])
    assert exp.excluded == {"empty campaign": empty_campaign, "empty rule": empty_rule}
    result = measure_lift(canonical, exp, window_days=90, log_end=FAR)
    offers = result.offers()
    # every row is measured or counted: none vanishes
    assert offers["treated"].sum() + offers["holdout"].sum() + sum(exp.excluded.values()) == len(
        holes
    )
    assert any("empty campaign: rows 1, 11, 21" in w for w in result.warnings)
    # a column empty everywhere: one line, never a KeyError traceback
    code, output, out = _lift(files, table.assign(rule=""), "norule")
    assert code == 2 and not out.exists()
    assert "column 'rule' is empty in every one of the" in _error_line(output)


def test_shared_control_is_compared_with_every_arm(
    files: Path, table: pd.DataFrame, canonical: pd.DataFrame
) -> None:
    shared = table.copy()
    held = shared["holdout"].to_numpy()
    shared.loc[held, "offer"] = "control"
    shared.loc[held, "rule"] = ""
    result = measure_lift(canonical, read_assignments(shared), window_days=90, log_end=FAR)
    offers = result.offers().set_index("rule")
    assert (offers["holdout"] == int(held.sum())).all()
    assert result.assigned == len(table)  # the shared control counted once
    # each arm against the whole control group: the control's rate is one number
    control_ids = shared.loc[held, "customer_id"].to_numpy()
    send = pd.to_datetime(shared.loc[held, "send_date"], utc=True).dt.as_unit("us")
    from serving.lift.measure import window_outcomes

    bought = window_outcomes(canonical, control_ids, send.reset_index(drop=True), 90)["bought"]
    assert offers["bought_holdout"].to_numpy() == pytest.approx(np.full(len(offers), bought.mean()))
    # empty offers on held-out rows are the same control
    empty = shared.assign(offer=np.where(held, "", shared["offer"]))
    again = measure_lift(canonical, read_assignments(empty), window_days=90, log_end=FAR)
    pd.testing.assert_frame_equal(again.table, result.table)
    # an undeclared control (another offer name) gets a hint naming it
    other = shared.assign(offer=np.where(held, "No E-Mail", shared["offer"]))
    other.loc[held, "rule"] = "No E-Mail"
    hinted = measure_lift(canonical, read_assignments(other), window_days=90, log_end=FAR)
    assert any("['No E-Mail'] that no treated row has" in w for w in hinted.warnings)


def test_out_through_a_missing_directory_onto_the_policy_is_refused(
    files: Path, table: pd.DataFrame
) -> None:
    policy = files / "policy.yaml"
    before = policy.read_bytes()
    sneaky = files / "missing-sub" / ".." / "policy.yaml"
    path = files / "sneaky.csv"
    table.to_csv(path, index=False)
    result = runner.invoke(
        app,
        [
            "lift",
            "-a",
            str(path),
            "-d",
            str(files / "log.parquet"),
            "--window",
            "90",
            "--exclude-unobserved",
            "--no-mlflow",
            "--update-policy",
            str(policy),
            "--out",
            str(sneaky),
        ],
    )
    assert result.exit_code == 2 and "never overwritten" in _error_line(result.output)
    assert policy.read_bytes() == before


def test_campaign_names_are_stripped(campaign: SyntheticCampaign, table: pd.DataFrame) -> None:
    scores = campaign.scores.drop(
        columns=[c for c in campaign.scores if c.startswith("offer")] + ["campaign", "holdout"]
    )
    policy = OfferPolicy.default()
    plain = apply_policy(scores, policy, "spring")
    padded = apply_policy(scores, policy, " spring ")
    np.testing.assert_array_equal(plain["holdout"], padded["holdout"])
    assert (padded["campaign"] == "spring").all()
    exp = read_assignments(table.assign(campaign=" spring "))
    assert set(exp.frame["campaign"]) == {"spring"}


def test_flags_other_than_true_false_are_refused(table: pd.DataFrame) -> None:
    for value in ("maybe", "10.0"):
        bad = table.astype({"holdout": "object"})
        bad.loc[3, "holdout"] = value
        with pytest.raises(AssignmentError, match=rf"holdout must be true/false.*\['{value}'\]"):
            read_assignments(bad)
    both = table.assign(treated=~table["holdout"])
    assert read_assignments(both).frame["holdout"].tolist() == table["holdout"].tolist()
    with pytest.raises(AssignmentError, match="holdout and treated must be opposites"):
        read_assignments(both.assign(treated=table["holdout"]))


def test_report_refuses_json_that_is_not_a_lift(files: Path, tmp_path: Path) -> None:
    for i, payload in enumerate(({"name": "config", "value": 3}, [1, 2], {"results": "x"})):
        other = tmp_path / f"other{i}.json"
        other.write_text(json.dumps(payload), encoding="utf-8")
        result = runner.invoke(
            app,
            [
                "report",
                "-d",
                str(files / "log.parquet"),
                "--lift",
                str(other),
                "--out",
                str(tmp_path / "r.html"),
            ],
        )
        assert result.exit_code == 2, result.output
        assert "not the JSON of `retain lift --json`" in _error_line(result.output)
    assert not (tmp_path / "r.html").exists()


def test_the_log_end_is_stated_with_its_option(files: Path, table: pd.DataFrame) -> None:
    path = files / "late.csv"
    table.to_csv(path, index=False)
    result = runner.invoke(
        app,
        ["lift", "-a", str(path), "-d", str(files / "log.parquet"), "--window", "90"],
    )
    assert result.exit_code == 2
    line = _error_line(result.output)
    assert "the log is observed through " in line and "--log-end DAY" in line
