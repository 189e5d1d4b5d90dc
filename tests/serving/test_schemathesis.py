"""Property-based fuzzing of the live service from its own OpenAPI document (/docs.json).

Schemathesis generates valid and invalid bodies for every operation; whatever it sends, the
service must never answer with a 5xx.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from features.builders import FeatureConfig
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from serving.offers.policy import OfferPolicy
from tests.serving.conftest import free_port
from training.artifact import save_artifact
from training.models.bundle import RetainModels

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny model served by ``bentoml serve`` on 127.0.0.1 (own process group)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = generate_purchase_log(200, seed=21, start="2023-06-01", end="2024-06-30").log
    models = RetainModels(
        horizon_days=30, n_snapshots=2, num_boost_round=5, num_threads=1, use_baselines=False
    ).fit(canonicalize(raw).log, "2024-07-01")
    artifact = save_artifact(
        tmp / "artifact",
        models,
        feature_config=FeatureConfig(horizon_days=30),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.default().to_yaml(),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "RETAIN_MODEL_URI": str(artifact),
        "RETAIN_API_KEY": "",
        "RETAIN_FEATURE_SNAPSHOT": "",
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(REPO_ROOT),
    }
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.http.service:RetainService",
             "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(REPO_ROOT)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"service did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_no_server_errors_on_generated_requests(live_service: str, tmp_path: Path) -> None:
    spec = httpx.get(f"{live_service}/docs.json").json()
    assert {"/score", "/score/ids", "/noop"} <= set(spec["paths"])
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live_service}/docs.json",
        "--url",
        live_service,
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "1",
        "--workers",
        "1",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # The run really exercised the operations: the JUnit report lists them, none failed.
    import xml.etree.ElementTree as ET

    (report,) = tmp_path.glob("junit*.xml")
    cases = ET.parse(report).getroot().findall(".//testcase")
    assert len(cases) >= 3
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    # The server itself counted no 5xx while being fuzzed.
    errors = [
        line
        for line in httpx.get(f"{live_service}/metrics").text.splitlines()
        if line.startswith("bentoml_service_request_total{")
        and 'http_response_code="5' in line
        and float(line.rsplit(" ", 1)[1]) > 0
    ]
    assert errors == []
