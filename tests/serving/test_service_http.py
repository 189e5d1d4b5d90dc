"""The BentoML scoring service over real HTTP: ``bentoml serve`` subprocesses on 127.0.0.1.

Scores must be exactly what :func:`serving.scorer.score` gives in-process on the same rows;
bad input must be refused with the right 4xx and never a 500.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from features.builders import FeatureConfig, build_features
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from serving.http.schemas import ScoreResponse
from serving.http.serve import serve_command
from serving.offers.policy import OfferPolicy
from serving.scorer import ScoringModel, score, score_features
from tests.serving.conftest import free_port
from training.artifact import save_artifact
from training.models.bundle import RetainModels

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
HORIZON = 30
FIT_AS_OF = "2024-07-01"
STARTUP_SECONDS = 180.0
API_KEY = "s3cret-test-key"
BODY_TIMEOUT_SECONDS = 2
SMALL_MODELS = {
    "horizon_days": HORIZON,
    "n_snapshots": 2,
    "num_boost_round": 8,
    "early_stopping_rounds": 4,
    "num_threads": 1,
    "use_baselines": False,
}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_service(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``bentoml serve`` as ``retain serve`` builds it, in its own process group.

    Returns once ``/readyz`` answers 200.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command, base_env = serve_command(None, "127.0.0.1", port, workers=1)
    full_env = {**base_env, **env}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_service(process)
            pytest.fail(f"bentoml serve did not get ready:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    return process, url


def stop_service(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_serve_command_translates_options_to_env(tmp_path: Path) -> None:
    argv, env = serve_command(
        str(tmp_path), "0.0.0.0", 8123, 3, registered_model="m", tracking_uri="http://x"
    )
    assert argv[1:] == [
        "-m",
        "serving.http.worker_sockets",
        "serve",
        "serving.http.service:RetainService",
        "--host",
        "0.0.0.0",
        "--port",
        "8123",
        "--working-dir",
        str(REPO_ROOT),
    ]
    assert env["RETAIN_MODEL_URI"] == str(tmp_path)
    assert env["RETAIN_WORKERS"] == "3"
    assert env["RETAIN_REGISTERED_MODEL"] == "m"
    assert env["MLFLOW_TRACKING_URI"] == "http://x"
    assert env["BENTOML_DO_NOT_TRACK"] == "true"
    _, env = serve_command("models:/retain@champion", "127.0.0.1", 3000, 2)
    assert env["RETAIN_MODEL_URI"] == "models:/retain@champion"


def test_serve_command_pins_the_default_store_to_the_callers_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the workers start in the repository (--working-dir); a relative sqlite URI would open
    # an empty store there instead of the one `retain train` wrote in the user's directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    _, env = serve_command(None, "127.0.0.1", 3000, 1)
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.absolute() / 'mlflow.db'}"


def serving(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """The URL of a service started with ``env`` for as long as the fixture lives."""
    process, url = start_service(env, log_path)
    try:
        yield url
    finally:
        stop_service(process)


@pytest.fixture(scope="session")
def raw_log() -> pd.DataFrame:
    return generate_purchase_log(300, seed=11, start="2023-01-01", end="2024-06-30").log


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, raw_log: pd.DataFrame) -> Path:
    log = canonicalize(raw_log).log
    models = RetainModels(**SMALL_MODELS).fit(log, FIT_AS_OF)
    return save_artifact(
        tmp_path_factory.mktemp("artifact") / "retain-artifact",
        models,
        feature_config=FeatureConfig(horizon_days=HORIZON),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.default().to_yaml(),
    )


@pytest.fixture(scope="session")
def scoring_model(artifact_dir: Path) -> ScoringModel:
    return ScoringModel.load(artifact_dir)


@pytest.fixture(scope="session")
def snapshot_path(
    tmp_path_factory: pytest.TempPathFactory, raw_log: pd.DataFrame, scoring_model: ScoringModel
) -> Path:
    """A feature snapshot like the batch job's: customer_id, features, as_of."""
    log = canonicalize(raw_log).log
    features = build_features(log, "2024-05-01", scoring_model.artifact.feature_config)
    frame = features.reset_index().assign(as_of=pd.Timestamp("2024-05-01", tz="UTC"))
    path = tmp_path_factory.mktemp("snapshot") / "features.parquet"
    frame.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def service_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the ``service`` fixture's server writes its log."""
    return tmp_path_factory.mktemp("svc") / "serve.log"


@pytest.fixture(scope="module")
def service(service_log: Path, artifact_dir: Path, snapshot_path: Path) -> Iterator[str]:
    env = {"RETAIN_MODEL_URI": str(artifact_dir), "RETAIN_FEATURE_SNAPSHOT": str(snapshot_path)}
    env_clear = {"RETAIN_API_KEY": "", "RETAIN_MAX_BODY_BYTES": "", "RETAIN_MAX_CUSTOMERS": ""}
    yield from serving(env_clear | env, service_log)


@pytest.fixture(scope="module")
def guarded_service(tmp_path_factory: pytest.TempPathFactory, artifact_dir: Path) -> Iterator[str]:
    """API key on, small limits: 3 customers and 4,000 bytes per request, 2 s per body."""
    env = {
        "RETAIN_MODEL_URI": str(artifact_dir),
        "RETAIN_API_KEY": API_KEY,
        "RETAIN_MAX_BODY_BYTES": "4000",
        "RETAIN_MAX_CUSTOMERS": "3",
        "RETAIN_FEATURE_SNAPSHOT": "",
        "RETAIN_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
    }
    yield from serving(env, tmp_path_factory.mktemp("guarded") / "serve.log")


BATCH_WINDOW_MS = 500


@pytest.fixture(scope="module")
def batching_service(tmp_path_factory: pytest.TempPathFactory, artifact_dir: Path) -> Iterator[str]:
    """A micro-batcher that waits 500 ms, so requests sent together are scored together."""
    env = {
        "RETAIN_MODEL_URI": str(artifact_dir),
        "RETAIN_API_KEY": "",
        "RETAIN_FEATURE_SNAPSHOT": "",
        "RETAIN_BATCH_WINDOW_MS": str(BATCH_WINDOW_MS),
    }
    yield from serving(env, tmp_path_factory.mktemp("batching") / "serve.log")


def history_of(raw: pd.DataFrame, customer_id: str) -> list[dict[str, Any]]:
    """A customer's raw rows as JSON objects (missing values left out)."""
    rows = raw[raw["customer_id"] == customer_id].drop(columns=["customer_id"])
    out = []
    for record in rows.to_dict(orient="records"):
        item: dict[str, Any] = {}
        for key, value in record.items():
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                continue
            if isinstance(value, pd.Timestamp):
                value = value.isoformat()
            elif hasattr(value, "item"):
                value = value.item()
            item[key] = value
        out.append(item)
    return out


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=60, **kwargs)


def expected_scores(
    model: ScoringModel, raw: pd.DataFrame, ids: list[str], as_of: str, campaign: str | None
) -> pd.DataFrame:
    log = canonicalize(raw[raw["customer_id"].isin(ids)].reset_index(drop=True)).log
    return score(model, log, as_of, campaign=campaign).set_index("customer_id")


def assert_matches(got: dict[str, Any], row: pd.Series) -> None:
    assert got["status"] == "scored"
    for name in (
        "churn_probability",
        "p_purchase_30d",
        "p_purchase_horizon",
        "expected_spend_horizon",
        "expected_spend_365d",
    ):
        assert got[name] == pytest.approx(float(row[name]), rel=1e-9), name
    assert got["risk_band"] == row["risk_band"]
    assert got["segment"] == row["segment"]
    assert got["expected_next_purchase_date"] == row["expected_next_purchase_date"].strftime(
        "%Y-%m-%d"
    )
    assert got["reasons"] == [row[f"reason_{i}"] for i in (1, 2, 3) if row[f"reason_{i}"]]
    offer = got["offer"]
    assert offer["code"] == row["offer"]
    assert offer["holdout"] == bool(row["holdout"])
    assert offer["suppressed"] == bool(row["suppressed"])
    assert offer["send_date"] == row["offer_send_date"].strftime("%Y-%m-%d")
    assert offer["expected_value"] == pytest.approx(float(row["offer_expected_value"]))


def test_readyz_reports_model_and_livez_metrics_docs(service: str, artifact_dir: Path) -> None:
    ready = httpx.get(f"{service}/readyz").json()
    assert ready["status"] == "ready"
    assert ready["model"] == {
        "name": artifact_dir.name,
        "version": "local",
        "uri": str(artifact_dir),
    }
    assert ready["horizon_days"] == HORIZON
    assert httpx.get(f"{service}/livez").status_code == 200
    metrics = httpx.get(f"{service}/metrics")
    assert metrics.status_code == 200
    assert "# TYPE bentoml_service_request_duration_seconds histogram" in metrics.text
    spec = httpx.get(f"{service}/docs.json").json()
    assert {"/score", "/score/ids", "/noop", "/admin/reload-snapshot"} <= set(spec["paths"])


def test_score_matches_scorer_in_process(
    service: str, raw_log: pd.DataFrame, scoring_model: ScoringModel
) -> None:
    ids = sorted(raw_log["customer_id"].unique())[:5]
    body = {
        "customers": [
            {
                "customer_id": cid,
                "as_of": "2024-06-01T00:00:00Z",
                "history": history_of(raw_log, cid),
            }
            for cid in ids
        ],
        "campaign": "summer",
    }
    response = post(f"{service}/score", body)
    assert response.status_code == 200, response.text
    payload = response.json()
    ScoreResponse.model_validate(payload)  # the documented response schema holds
    assert payload["model"]["version"] == "local"
    expected = expected_scores(scoring_model, raw_log, ids, "2024-06-01", "summer")
    assert [r["customer_id"] for r in payload["results"]] == ids
    for got in payload["results"]:
        if got["customer_id"] in expected.index:
            assert_matches(got, expected.loc[got["customer_id"]])
        else:  # first purchase on or after as_of
            assert got["status"] == "no_purchases_before_as_of"
    assert sum(r["status"] == "scored" for r in payload["results"]) == len(expected)


def test_naive_times_are_utc_and_offsets_are_converted(service: str, raw_log: pd.DataFrame) -> None:
    """The same instants sent as UTC, as naive times and with a +02:00 offset score alike."""
    cid = sorted(raw_log["customer_id"].unique())[1]
    rows = history_of(raw_log, cid)
    stamps = [pd.Timestamp(r["timestamp"]).tz_convert("UTC") for r in rows]
    naive = [
        {**r, "timestamp": t.tz_localize(None).isoformat()}
        for r, t in zip(rows, stamps, strict=True)
    ]
    shifted = [
        {**r, "timestamp": t.tz_convert("Etc/GMT-2").isoformat()}
        for r, t in zip(rows, stamps, strict=True)
    ]
    assert shifted[0]["timestamp"].endswith("+02:00")
    results = []
    for history in (rows, naive, shifted):
        body = {"customers": [{"customer_id": cid, "as_of": "2024-06-01", "history": history}]}
        response = post(f"{service}/score", body)
        assert response.status_code == 200, response.text
        results.append(response.json()["results"][0])
    assert results[0]["status"] == "scored"
    assert results[0] == results[1] == results[2]


def test_customers_grouped_by_as_of_and_no_purchase_status(
    service: str, raw_log: pd.DataFrame, scoring_model: ScoringModel
) -> None:
    cid = sorted(raw_log["customer_id"].unique())[0]
    history = history_of(raw_log, cid)
    first = min(pd.Timestamp(r["timestamp"]) for r in history)
    body = {
        "customers": [
            {"customer_id": cid, "as_of": "2024-03-01", "history": history},
            {"customer_id": cid, "as_of": "2024-06-01", "history": history},
            {"customer_id": cid, "as_of": first.isoformat(), "history": history},
            {"customer_id": "nobody", "history": []},
        ]
    }
    response = post(f"{service}/score", body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for got, as_of in zip(results[:2], ("2024-03-01", "2024-06-01"), strict=True):
        assert got["as_of"] == f"{as_of}T00:00:00+00:00"
        assert_matches(got, expected_scores(scoring_model, raw_log, [cid], as_of, None).loc[cid])
    # Only rows strictly before as_of count: at the first purchase there is no history yet.
    assert results[2]["status"] == "no_purchases_before_as_of"
    assert results[3] == {
        "customer_id": "nobody",
        "status": "no_purchases_before_as_of",
        "as_of": results[3]["as_of"],
        "reasons": [],
        "offer": None,
    }
    # Without as_of the server's clock is used: "now", after every synthetic purchase.
    assert pd.Timestamp(results[3]["as_of"]) > pd.Timestamp("2026-01-01", tz="UTC")


def test_concurrent_requests_with_the_same_customer_are_scored_separately(
    service: str, raw_log: pd.DataFrame, scoring_model: ScoringModel
) -> None:
    """The micro-batcher may gather these; a shared id must not mix two histories."""
    import concurrent.futures

    cid = sorted(raw_log["customer_id"].unique())[1]
    full = history_of(raw_log, cid)
    halves = [full, full[: max(1, len(full) // 2)]]
    bodies = [
        {"customers": [{"customer_id": cid, "as_of": "2024-06-01", "history": h}]} for h in halves
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: post(f"{service}/score", b), bodies * 4))
    for response, history in zip(responses, halves * 4, strict=True):
        assert response.status_code == 200
        raw = pd.DataFrame(history).assign(customer_id=cid)
        expected = score(scoring_model, canonicalize(raw).log, "2024-06-01").iloc[0]
        assert response.json()["results"][0]["churn_probability"] == pytest.approx(
            expected["churn_probability"], rel=1e-9
        )


def test_one_bad_request_in_a_batch_gets_the_400_and_the_others_their_scores(
    batching_service: str, raw_log: pd.DataFrame, scoring_model: ScoringModel
) -> None:
    """Six requests sent at once share one batch and one scorer call; one of them has a
    purchase in 1850 (valid JSON, refused by the log's rules). Only that one is refused,
    naming its customer and field; the five others are scored as if sent alone."""
    import concurrent.futures
    import threading

    ids = sorted(raw_log["customer_id"].unique())[:5]
    bad_history = [{"timestamp": "1850-01-01T00:00:00", "amount": 5.0}]
    bodies = [
        {
            "customers": [
                {"customer_id": cid, "as_of": "2024-06-01", "history": history_of(raw_log, cid)}
            ]
        }
        for cid in ids
    ]
    bad = {
        "customers": [
            {"customer_id": ids[0], "as_of": "2024-06-01", "history": history_of(raw_log, ids[0])},
            {"customer_id": "broken", "as_of": "2024-06-01", "history": bad_history},
        ]
    }
    bodies.insert(2, bad)
    start = threading.Barrier(len(bodies))

    def send(body: dict[str, Any]) -> httpx.Response:
        start.wait()
        return post(f"{batching_service}/score", body)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(send, bodies))
    refused = responses.pop(2)
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"][0]["loc"] == ["customers", 1, "history"]
    assert "customers[1] (customer_id 'broken')" in refused.json()["error"]
    expected = expected_scores(scoring_model, raw_log, ids, "2024-06-01", None)
    for cid, response in zip(ids, responses, strict=True):
        assert response.status_code == 200, response.text
        (got,) = response.json()["results"]
        assert got["customer_id"] == cid
        assert_matches(got, expected.loc[cid])


def test_score_ids_from_snapshot(
    service: str, snapshot_path: Path, scoring_model: ScoringModel
) -> None:
    frame = pd.read_parquet(snapshot_path).set_index("customer_id")
    known = list(frame.index[:3])
    response = post(f"{service}/score/ids", {"customer_ids": [*known, "ghost"]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = score_features(
        scoring_model, frame.loc[known].drop(columns=["as_of"]), "2024-05-01"
    ).set_index("customer_id")
    for got in results[:3]:
        assert_matches(got, expected.loc[got["customer_id"]])
    assert results[3]["customer_id"] == "ghost"
    assert results[3]["status"] == "unknown_customer_id"

    reload = post(f"{service}/admin/reload-snapshot", {})
    assert reload.status_code == 200
    assert reload.json()["customers"] == len(frame)
    assert reload.json()["as_of_max"].startswith("2024-05-01")


def test_score_ids_scores_each_customer_at_its_own_snapshot_as_of(
    tmp_path: Path, snapshot_path: Path, scoring_model: ScoringModel
) -> None:
    """Rows from two snapshot dates, a repeated id and an unknown one, without HTTP."""
    from serving.http.snapshot import FeatureSnapshot, score_ids

    frame = pd.read_parquet(snapshot_path)
    older = frame.iloc[:2].assign(
        customer_id=frame["customer_id"].iloc[:2] + "_old",
        as_of=pd.Timestamp("2024-03-01", tz="UTC"),
    )
    directory = tmp_path / "snapshot"
    directory.mkdir()
    frame.to_parquet(directory / "a.parquet")
    older.to_parquet(directory / "b.parquet")
    snapshot = FeatureSnapshot.load(directory)
    assert len(snapshot.features) == len(frame) + 2

    first = str(frame["customer_id"].iloc[0])
    asked = [first, f"{first}_old", "ghost", first]
    results = score_ids(scoring_model, snapshot, asked, None)
    assert [r["customer_id"] for r in results] == asked
    assert results[0] == results[3]
    assert results[2]["status"] == "unknown_customer_id"
    features = frame.set_index("customer_id").loc[[first]].drop(columns=["as_of"])
    for got, as_of in ((results[0], "2024-05-01"), (results[1], "2024-03-01")):
        expected = score_features(scoring_model, features, as_of).iloc[0]
        assert got["as_of"].startswith(as_of)
        assert_matches(got, expected)


def _assert_no_echo(response: httpx.Response, secret: str) -> None:
    assert secret not in response.text


@pytest.mark.parametrize(
    ("customer", "loc"),
    [
        (
            {"customer_id": "x", "history": [{"timestamp": "not-a-time-XYZZY", "amount": 1}]},
            ["customers", 0, "history", 0, "timestamp"],
        ),
        (
            {"customer_id": "x", "history": [{"timestamp": "2024-01-01", "amount": "XYZZY"}]},
            ["customers", 0, "history", 0, "amount"],
        ),
        (
            {"customer_id": "x", "history": [{"timestamp": "2024-01-01", "amount": "NaN"}]},
            ["customers", 0, "history", 0, "amount"],
        ),
        (
            {"customer_id": "x", "history": [{"timestamp": "1850-01-01T00:00:00", "amount": 1}]},
            ["customers", 0, "history"],
        ),
        ({"customer_id": "", "history": []}, ["customers", 0, "customer_id"]),
        ({"customer_id": "x", "as_of": "XYZZY", "history": []}, ["customers", 0, "as_of"]),
    ],
)
def test_bad_input_is_400_naming_the_field(
    service: str, customer: dict[str, Any], loc: list[Any]
) -> None:
    response = post(f"{service}/score", {"customers": [customer]})
    assert response.status_code == 400, response.text
    locs = [d["loc"] for d in response.json()["detail"]]
    assert loc in locs
    _assert_no_echo(response, "XYZZY")


def test_malformed_json_and_unknown_fields_are_400(service: str) -> None:
    bad = httpx.post(
        f"{service}/score",
        content=b'{"customers": [XYZZY',
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400
    _assert_no_echo(bad, "XYZZY")
    extra = post(f"{service}/score", {"customers": [{"customer_id": "a", "XYZZY": 1}]})
    assert extra.status_code == 400
    assert post(f"{service}/score", {"customers": []}).status_code == 400
    assert post(f"{service}/score", [1, 2]).status_code == 400
    duplicate = post(
        f"{service}/score", {"customers": [{"customer_id": "a"}, {"customer_id": "a"}]}
    )
    assert duplicate.status_code == 400
    assert "customers[1]" in duplicate.json()["error"]


def test_limits_and_content_types(service: str) -> None:
    many = {"customers": [{"customer_id": f"c{i}"} for i in range(1001)]}
    too_many = post(f"{service}/score", many)
    assert too_many.status_code == 413
    assert "1001 > limit 1000" in too_many.json()["error"]

    big = b'{"customers": [' + b" " * (5 * 1024 * 1024) + b"]}"
    response = httpx.post(
        f"{service}/score", content=big, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"customers": ['
        for _ in range(6):
            yield b" " * (1024 * 1024)
        yield b"]}"

    streamed = httpx.post(
        f"{service}/score",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert streamed.status_code == 413  # no Content-Length: counted while streaming

    payload = b"\x80\x05}\x94."  # pickle protocol 5 of an empty dict, written by hand
    for media in ("application/python-pickle", "application/vnd.bentoml+pickle"):
        response = httpx.post(f"{service}/score", content=payload, headers={"content-type": media})
        assert response.status_code == 415, media
    octet = httpx.post(
        f"{service}/score", content=payload, headers={"content-type": "application/octet-stream"}
    )
    assert octet.status_code == 415
    disguised = httpx.post(
        f"{service}/score", content=payload, headers={"content-type": "application/json"}
    )
    assert disguised.status_code == 415
    text = httpx.post(f"{service}/score", content=b"{}", headers={"content-type": "text/plain"})
    assert text.status_code == 415


def test_api_key_and_configured_limits(guarded_service: str) -> None:
    url = f"{guarded_service}/score"
    body = {"customers": [{"customer_id": "a"}]}
    missing = post(url, body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert post(url, body, headers={"X-API-Key": "wrong"}).status_code == 403
    assert post(url, body, headers={"Authorization": "Bearer wrong"}).status_code == 403
    ok = post(url, body, headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200
    assert ok.json()["results"][0]["status"] == "no_purchases_before_as_of"
    assert post(url, body, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    # health, metrics and docs stay open
    assert httpx.get(f"{guarded_service}/readyz").status_code == 200
    assert httpx.get(f"{guarded_service}/livez").status_code == 200
    assert httpx.get(f"{guarded_service}/metrics").status_code == 200

    key = {"X-API-Key": API_KEY}
    four = {"customers": [{"customer_id": f"c{i}"} for i in range(4)]}
    response = post(url, four, headers=key)
    assert response.status_code == 413
    assert "4 > limit 3" in response.json()["error"]
    big = {
        "customers": [
            {"customer_id": "a", "history": [{"timestamp": "2024-01-01", "amount": 1}] * 200}
        ]
    }
    assert len(json.dumps(big)) > 4000
    assert post(url, big, headers=key).status_code == 413
    # no snapshot configured: reload is a clear 409, ids are all unknown
    assert post(f"{guarded_service}/admin/reload-snapshot", {}, headers=key).status_code == 409
    ids = post(f"{guarded_service}/score/ids", {"customer_ids": ["a"]}, headers=key)
    assert ids.json()["results"][0]["status"] == "unknown_customer_id"


def server_errors(metrics_text: str) -> dict[str, float]:
    """Non-zero 5xx request counters by endpoint (BentoML pre-creates them at 0)."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("bentoml_service_request_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        code = labels.split('http_response_code="')[1].split('"')[0]
        if code.startswith("5") and float(value) > 0:
            endpoint = labels.split('endpoint="')[1].split('"')[0]
            out[f"{endpoint} {code}"] = float(value)
    return out


def test_no_500_in_metrics(service: str) -> None:
    """Every request above was answered without a server error."""
    text = httpx.get(f"{service}/metrics").text
    assert 'bentoml_service_request_total{endpoint="/score",http_response_code="200"' in text
    assert server_errors(text) == {}


@pytest.fixture(scope="module")
def registry_model(mlflow_server: str, artifact_dir: Path, raw_log: pd.DataFrame) -> str:
    """Log the session's artifact to the real MLflow server, register it, make it champion.

    The backtest figures are placeholders: this test is about loading, not the gate.
    """
    from serving.lifecycle_wiring import PYFUNC_CODE, SERVING_PARTS
    from training.lifecycle import promote_challenger
    from training.registry import tracking, tracking_store
    from training.registry import versions as registry

    tracking_store.configure_tracking(mlflow_server)
    run = tracking.log_training_run(
        experiment="retain-http",
        python_model=PYFUNC_CODE,
        artifact_dir=artifact_dir,
        log=canonicalize(raw_log).log,
        as_of=pd.Timestamp(FIT_AS_OF, tz="UTC"),
        horizon_days=HORIZON,
        backtest={"model": {"churn_auc": 0.7}, "bgnbd": {"churn_auc": 0.6}},
    )
    version = registry.register_challenger(run.run_id, name="retain-http")
    decision = promote_challenger(
        serving=SERVING_PARTS, name="retain-http", tracking_uri=mlflow_server
    )
    assert decision.promoted, decision.reasons
    return version


def test_service_loads_registry_champion(
    mlflow_server: str,
    registry_model: str,
    artifact_dir: Path,
    raw_log: pd.DataFrame,
    tmp_path: Path,
) -> None:
    version = registry_model
    env = {
        "RETAIN_MODEL_URI": "",  # default: models:/<RETAIN_REGISTERED_MODEL>@champion
        "RETAIN_REGISTERED_MODEL": "retain-http",
        "MLFLOW_TRACKING_URI": mlflow_server,
        "RETAIN_API_KEY": "",
        "RETAIN_FEATURE_SNAPSHOT": "",
    }
    process, url = start_service(env, tmp_path / "serve.log")
    try:
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["model"] == {
            "name": "retain-http",
            "version": version,
            "uri": "models:/retain-http@champion",
        }
        cid = sorted(raw_log["customer_id"].unique())[2]
        body = {
            "customers": [
                {"customer_id": cid, "as_of": "2024-06-01", "history": history_of(raw_log, cid)}
            ]
        }
        response = post(f"{url}/score", body)
        assert response.status_code == 200, response.text
        assert response.json()["model"]["version"] == version
        expected = expected_scores(
            ScoringModel.load(artifact_dir), raw_log, [cid], "2024-06-01", None
        )
        assert_matches(response.json()["results"][0], expected.loc[cid])
    finally:
        stop_service(process)


def test_history_times_convert_to_utc_microseconds_exactly() -> None:
    """The request path's conversion (Arrow's, of datetime objects) equals pandas' exact one, to the us."""
    from datetime import UTC, datetime, timedelta, timezone

    import numpy as np

    from features.log.schema import PurchaseLogError
    from serving.http.score_request import utc_micros

    rng = np.random.default_rng(3)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    stamps: list[datetime] = [
        datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
        datetime(2199, 12, 31, 23, 59, 59, 999_999),
        datetime(1900, 1, 1),
    ]
    for us, kind, hours in zip(
        rng.integers(-2_200_000_000_000_000, 7_200_000_000_000_000, 5000),
        rng.integers(0, 3, 5000),
        rng.integers(-12, 14, 5000),
        strict=True,
    ):
        t = epoch + timedelta(microseconds=int(us))
        if kind == 0:
            stamps.append(t.replace(tzinfo=None))
        elif kind == 1:
            stamps.append(t.astimezone(timezone(timedelta(hours=int(hours), minutes=30))))
        else:
            stamps.append(t)
    expected = np.array(
        [
            (pd.Timestamp(t).tz_localize("UTC") if t.tzinfo is None else pd.Timestamp(t)).value
            // 1000
            for t in stamps
        ]
    )
    assert (utc_micros(stamps) == expected).all()
    with pytest.raises(PurchaseLogError, match=r"history\[1\]\.timestamp"):
        utc_micros([datetime(2000, 1, 1), datetime(1899, 12, 31, 23, 59, 59)])
    with pytest.raises(PurchaseLogError, match="2200-01-01"):
        utc_micros([datetime(2200, 1, 1, tzinfo=UTC)])


def test_look_alike_ids_from_concurrent_clients_never_share_rows(
    service: str, raw_log: pd.DataFrame, scoring_model: ScoringModel
) -> None:
    """ "victim", " victim" and "victim " are one canonical id (the loader strips ids).

    24 clients send them at once, each with another customer's history; the micro-batcher
    gathers them. Every answer must be the in-process score of the request's own history,
    under the canonical id (before the fix, answers used another request's rows).
    """
    import concurrent.futures

    variants = ["victim", " victim", "victim "]

    def key(row: Any) -> tuple[Any, ...]:  # response dict or in-process row
        offer = row["offer"]["code"] if isinstance(row.get("offer"), dict) else row["offer"]
        return row["segment"], offer, round(float(row["p_purchase_30d"]), 9)

    histories: list[list[dict[str, Any]]] = []
    expected: list[pd.Series] = []
    for donor in sorted(raw_log["customer_id"].unique()):
        history = history_of(raw_log, donor)
        raw = pd.DataFrame(history).assign(customer_id="victim")
        scored = score(scoring_model, canonicalize(raw).log, "2024-06-01")
        if len(scored) and key(scored.iloc[0]) not in {key(e) for e in expected}:
            histories.append(history)
            expected.append(scored.iloc[0])
        if len(expected) == 3:
            break
    assert len(expected) == 3  # three histories that score differently
    jobs = [(k, variants[k], histories[k]) for _ in range(80) for k in range(3)]

    def send(job: tuple[int, str, list[dict[str, Any]]]) -> tuple[int, httpx.Response]:
        k, cid, history = job
        body = {"customers": [{"customer_id": cid, "as_of": "2024-06-01", "history": history}]}
        return k, post(f"{service}/score", body)

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(send, jobs))
    wrong = []
    for k, response in answers:
        assert response.status_code == 200, response.text
        got = response.json()["results"][0]
        if got["status"] != "scored" or key(got) != key(expected[k]):
            wrong.append((variants[k], got["customer_id"], got["status"]))
            continue
        assert_matches(got, expected[k])
    assert wrong == [], f"{len(wrong)} of {len(answers)} answers used other rows: {wrong[:3]}"


def test_look_alike_ids_in_one_request(
    service: str, raw_log: pd.DataFrame, scoring_model: ScoringModel
) -> None:
    """A stripped-away space changes nothing: " c1" is c1; "c1" next to " c1 " is a repeat."""
    cid = sorted(raw_log["customer_id"].unique())[1]
    history = history_of(raw_log, cid)
    padded = post(
        f"{service}/score",
        {"customers": [{"customer_id": f" {cid}", "as_of": "2024-06-01", "history": history}]},
    )
    assert padded.status_code == 200, padded.text
    got = padded.json()["results"][0]
    assert got["customer_id"] == cid
    assert_matches(got, expected_scores(scoring_model, raw_log, [cid], "2024-06-01", None).loc[cid])
    twice = post(
        f"{service}/score",
        {
            "customers": [
                {"customer_id": cid, "as_of": "2024-06-01", "history": history},
                {"customer_id": f" {cid} ", "as_of": "2024-06-01", "history": history[:1]},
            ]
        },
    )
    assert twice.status_code == 400, twice.text
    assert "customers[1]" in twice.json()["error"]
    ids = post(f"{service}/score/ids", {"customer_ids": ["  ghost", "\tghost\n"]})
    assert [r["customer_id"] for r in ids.json()["results"]] == ["ghost", "ghost"]


def test_refused_requests_are_logged_in_one_line_without_body_contents(
    service: str, service_log: Path
) -> None:
    """Before: each 400 was an ERROR with a ~30-line traceback quoting the body."""
    bad_bodies = [
        b'{"customers": [XYZZY-0',
        b'{"customers": [{"customer_id": "a", "XYZZY-1": 1}]}',
        b'{"customers": [{"customer_id": "a", "history": [{"timestamp": "XYZZY-2", "amount": 1}]}]}',
        b'{"customers": [{"customer_id": "a", "as_of": "XYZZY-3"}]}',
        b'{"customer_ids": "XYZZY-4"}',
    ]
    before = service_log.read_text().count("refused /score")
    for body in bad_bodies:
        response = httpx.post(
            f"{service}/score", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
    time.sleep(1)  # the worker's log handler writes each line as it is logged
    text = service_log.read_text()
    refused = [line for line in text.splitlines() if "refused /score [POST]" in line]
    assert len(refused) - before == len(bad_bodies)
    assert all("[WARNING]" in line for line in refused)
    assert "XYZZY" not in text
    assert "Traceback" not in text


def _raw_request(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and everything the server sent until it closed the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_a_stalled_body_gets_408_and_a_closed_connection(guarded_service: str) -> None:
    """Headers, a few bytes, then silence (slowloris): before, the server waited forever."""
    head = (
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {API_KEY}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"customers"'
    )
    with _raw_request(guarded_service, head) as sock:
        status, data = _read_response(sock)  # the socket times out after 30 s
    assert status == 408, data
    assert f"within {BODY_TIMEOUT_SECONDS} s".encode() in data


def test_an_endless_chunked_body_is_refused_without_being_read(guarded_service: str) -> None:
    """No Content-Length: the guard counts while reading and closes at the limit (4,000
    bytes). The client never gets to send its 256 MB: the server stopped reading."""
    head = (
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    total = 256 * 1024 * 1024
    sent = 0
    with _raw_request(guarded_service, head) as sock:
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, data = _read_response(sock)
    assert status == 413, data
    assert sent < total
