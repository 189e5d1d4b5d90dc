"""From a scored campaign to served uplift, with the commands users run.

``retain synth`` -> an artifact -> ``retain score`` (the campaign, half held out) ->
``retain synth --campaign-scores`` (its outcome window, true uplift in the truth) ->
``retain uplift-train`` (a new artifact) -> ``retain score`` and ``retain serve`` with it:
an ``uplift`` column in the batch output and field over HTTP, null for an artifact without
an uplift model; the policy's expected value becomes ``spend x uplift - cost``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from features.builders import FeatureConfig, build_features
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from serving.cli import app
from serving.http.responses import score_records
from serving.http.schemas import ScoreResponse
from serving.offers.policy import OfferPolicy, OfferPolicyError
from serving.scorer import ScoringModel, score, score_log
from tests.serving.test_service_http import history_of, post, start_service, stop_service
from training.artifact import add_uplift, load_artifact, save_artifact
from training.models.bundle import RetainModels

pytestmark = [pytest.mark.slow]

END = "2024-06-30"
SCORE_AT = "2024-07-01"
WINDOW = 30
SMALL_MODELS = {
    "horizon_days": WINDOW,
    "n_snapshots": 2,
    "num_boost_round": 8,
    "early_stopping_rounds": 4,
    "num_threads": 1,
    "use_baselines": False,
}
runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uplift-cycle")


@pytest.fixture(scope="module")
def base_log(work: Path) -> Path:
    path = work / "base.parquet"
    invoke(
        "synth", "--customers", "1500", "--seed", "3", "--start", "2023-01-01", "--end", END,
        "--out", str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def artifact(work: Path, base_log: Path) -> Path:
    log = canonicalize(pd.read_parquet(base_log)).log
    models = RetainModels(**SMALL_MODELS).fit(log, "2024-05-01")
    policy = OfferPolicy.default().model_copy(update={"holdout_share": 0.5})
    return save_artifact(
        work / "artifact",
        models,
        feature_config=FeatureConfig(horizon_days=WINDOW),
        segment_config=SegmentConfig(),
        policy_yaml=policy.to_yaml(),
    )


@pytest.fixture(scope="module")
def campaign(work: Path, base_log: Path, artifact: Path) -> tuple[Path, Path, pd.Timestamp]:
    """(campaign scores dir, log with the outcome window, end of the observed window)."""
    scores = work / "scores"
    invoke(
        "score", "--data", str(base_log), "--as-of", SCORE_AT, "--out", str(scores),
        "--model-uri", str(artifact), "--campaign", "summer",
    )  # fmt: skip
    log, truth = work / "campaign.parquet", work / "truth.parquet"
    invoke(
        "synth", "--customers", "1500", "--seed", "3", "--start", "2023-01-01", "--end", END,
        "--campaign-scores", str(scores), "--window", str(WINDOW), "--out", str(log),
        "--truth", str(truth),
    )  # fmt: skip
    observed = pd.read_parquet(truth)["window_end"].max()
    return scores, log, observed


@pytest.fixture(scope="module")
def uplift_artifact(
    work: Path, artifact: Path, campaign: tuple[Path, Path, pd.Timestamp]
) -> tuple[Path, dict]:
    scores, log, observed = campaign
    before = digests(artifact)
    out = invoke(
        "uplift-train", "--artifact", str(artifact), "--assignments", str(scores),
        "--data", str(log), "--out", str(work / "artifact-uplift"), "--window", str(WINDOW),
        "--observed-until", str(observed.date()),
    )  # fmt: skip
    assert digests(artifact) == before  # the old artifact is untouched
    return work / "artifact-uplift", json.loads(out.strip().splitlines()[-1])


def test_uplift_train_reports_held_out_figures(uplift_artifact: tuple[Path, dict]) -> None:
    path, summary = uplift_artifact
    assert summary["artifact"] == str(path)
    assert summary["window_days"] == WINDOW
    assert summary["sent"] > 0 and summary["held_out"] > 0
    targeting = summary["evaluation"]["targeting"]
    assert set(targeting) == {"uplift", "churn_probability", "random"}
    for row in targeting.values():
        assert set(row) == {"qini", "uplift_top_10", "uplift_top_30"}
    manifest = json.loads((path / "retain_artifact.json").read_text())
    assert manifest["uplift"] == {k: v for k, v in summary.items() if k != "artifact"}


def test_scores_carry_uplift_and_the_policy_uses_it(
    work: Path,
    base_log: Path,
    artifact: Path,
    uplift_artifact: tuple[Path, dict],
) -> None:
    path, _ = uplift_artifact
    log = canonicalize(pd.read_parquet(base_log)).log
    with_uplift = ScoringModel.load(path)
    frame = score(with_uplift, log, SCORE_AT, campaign="next")
    features = build_features(log, SCORE_AT, FeatureConfig(horizon_days=WINDOW))
    expected = load_artifact(path).uplift.predict(features)  # uncompiled LightGBM
    np.testing.assert_allclose(frame["uplift"].to_numpy(), expected, atol=1e-12)
    assert np.ptp(expected) > 0.01  # one per customer, not a constant
    policy = with_uplift.policy
    matched = frame["offer_rule"] != ""
    rules = {r.name: r for r in policy.rules}
    spend = np.where(
        [rules[r].spend_at_stake == "horizon" for r in frame.loc[matched, "offer_rule"]],
        frame.loc[matched, "expected_spend_horizon"],
        frame.loc[matched, "expected_spend_365d"],
    )
    cost = np.array([rules[r].cost for r in frame.loc[matched, "offer_rule"]])
    np.testing.assert_allclose(
        frame.loc[matched, "offer_expected_value"],
        spend * frame.loc[matched, "uplift"] - cost,
        rtol=1e-12,
    )
    plain = score(ScoringModel.load(artifact), log, SCORE_AT, campaign="next")
    assert plain["uplift"].isna().all()
    # batch: the column is there, null without an uplift model
    for model, name in ((path, "with"), (artifact, "without")):
        invoke(
            "score", "--data", str(base_log), "--as-of", SCORE_AT, "--out",
            str(work / f"batch-{name}"), "--model-uri", str(model), "--campaign", "next",
        )  # fmt: skip
    batch_with = pd.read_parquet(work / "batch-with").set_index("customer_id")
    batch_without = pd.read_parquet(work / "batch-without")
    np.testing.assert_allclose(
        batch_with.loc[frame["customer_id"], "uplift"], frame["uplift"], atol=1e-12
    )
    assert batch_without["uplift"].isna().all()
    part = sorted((work / "batch-without").glob("part-*.parquet"))[0]
    assert pq.read_table(part).column("uplift").null_count == len(batch_without)
    # HTTP's record builder gives null, and the response schema accepts it
    records = score_records(score_log(ScoringModel.load(artifact), log, SCORE_AT))
    assert {r["uplift"] for r in records.values()} == {None}
    ScoreResponse.model_validate(
        {"model": {"name": "a", "version": "1", "uri": "u"}, "horizon_days": WINDOW,
         "results": list(records.values())[:3]}
    )  # fmt: skip


def test_policy_on_min_uplift_needs_an_uplift_model(
    work: Path, artifact: Path, uplift_artifact: tuple[Path, dict]
) -> None:
    data = yaml.safe_load(load_artifact(artifact).policy_yaml)
    data["rules"][0]["match"]["min_uplift"] = 0.02
    text = yaml.safe_dump(data)
    loaded = load_artifact(artifact)
    plain = save_artifact(
        work / "min-uplift-plain",
        loaded.models,
        feature_config=loaded.feature_config,
        segment_config=loaded.segment_config,
        policy_yaml=text,
    )
    with pytest.raises(OfferPolicyError, match=r"rules\[0\]\.match\.min_uplift.*no uplift model"):
        ScoringModel.load(plain)
    result = runner.invoke(
        app,
        ["score", "--data", "x.parquet", "--as-of", SCORE_AT, "--out", str(work / "nope"),
         "--model-uri", str(plain)],
    )  # fmt: skip
    assert result.exit_code == 2
    # with an uplift model the same policy loads
    upl = add_uplift(plain, load_artifact(uplift_artifact[0]).uplift, work / "min-uplift")
    assert ScoringModel.load(upl).policy.rules[0].match.min_uplift == 0.02


@pytest.fixture(scope="module")
def service(work: Path, uplift_artifact: tuple[Path, dict]) -> Iterator[str]:
    env = {
        "RETAIN_MODEL_URI": str(uplift_artifact[0]),
        "RETAIN_FEATURE_SNAPSHOT": "",
        "RETAIN_API_KEY": "",
        "RETAIN_MAX_BODY_BYTES": "",
        "RETAIN_MAX_CUSTOMERS": "",
    }
    process, url = start_service(env, work / "serve.log")
    try:
        yield url
    finally:
        stop_service(process)


@pytest.mark.server
def test_http_serves_the_uplift(
    service: str, base_log: Path, uplift_artifact: tuple[Path, dict]
) -> None:
    raw = pd.read_parquet(base_log)
    ids = sorted(raw["customer_id"].unique())[:6]
    body = {
        "customers": [
            {"customer_id": c, "as_of": f"{SCORE_AT}T00:00:00Z", "history": history_of(raw, c)}
            for c in ids
        ],
        "campaign": "next",
    }
    response = post(f"{service}/score", body)
    assert response.status_code == 200, response.text
    payload = response.json()
    ScoreResponse.model_validate(payload)
    log = canonicalize(raw[raw["customer_id"].isin(ids)].reset_index(drop=True)).log
    expected = score(ScoringModel.load(uplift_artifact[0]), log, SCORE_AT, campaign="next")
    expected = expected.set_index("customer_id")
    scored = [r for r in payload["results"] if r["status"] == "scored"]
    assert len(scored) == len(expected) > 0
    for got in scored:
        row = expected.loc[got["customer_id"]]
        assert got["uplift"] == pytest.approx(float(row["uplift"]), rel=1e-9, abs=1e-12)
        assert got["offer"]["expected_value"] == pytest.approx(float(row["offer_expected_value"]))


def test_uplift_train_bad_input_is_one_line_and_exit_2(
    work: Path, artifact: Path, campaign: tuple[Path, Path, pd.Timestamp]
) -> None:
    scores, log, _ = campaign
    common = ["uplift-train", "--artifact", str(artifact), "--data", str(log)]
    # the log holds 30 days after each send day: 60-day windows cannot be observed whole
    result = runner.invoke(
        app, [*common, "--assignments", str(scores), "--out", str(work / "x1"), "--window", "60"]
    )
    assert result.exit_code == 2
    assert "cannot be observed for the whole 60-day window" in result.output
    assert "Traceback" not in result.output
    # a plain assignments table assigning a customer twice
    table = pd.DataFrame(
        {"customer_id": ["a", "a"], "send_date": [SCORE_AT] * 2, "treated": [1, 0]}
    )
    table.to_csv(work / "twice.csv", index=False)
    result = runner.invoke(
        app, [*common, "--assignments", str(work / "twice.csv"), "--out", str(work / "x2")]
    )
    assert result.exit_code == 2
    assert "2 row(s) assign a customer twice, e.g. customer_id a, a" in result.output
    assert not (work / "x1").exists() and not (work / "x2").exists()
