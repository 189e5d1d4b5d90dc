"""Start-up faults of ``retain serve`` and ``bentoml serve``, with real processes.

A bad setting, a missing file or a model that cannot load must stop ``retain serve`` with
one line and exit 2 before any worker starts; ``bentoml serve`` started directly must stay
up answering 503 with the reason, never respawn a failing worker forever. Relative paths
mean the caller's directory. Secrets never appear in what either prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.builders import build_features
from features.log.purchase_log import canonicalize
from features.synthetic.synth import generate_purchase_log
from serving.http.serve import absolute_tracking_uri, serve_command
from serving.scorer import ScoringModel, score_features
from tests.serving.conftest import free_port
from tests.serving.server_artifact import server_artifact

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXIT_SECONDS = 120.0  # a refusal takes seconds; the bound only stops a respawn loop
STARTUP_SECONDS = 180.0
SECRET = "pw-XYZZY-secret"
API_KEY = "key-XYZZY-secret"


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return generate_purchase_log(200, seed=5, start="2023-01-01", end="2024-06-30").log


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, raw_log: pd.DataFrame) -> Path:
    return server_artifact(tmp_path_factory.mktemp("artifact") / "retain-artifact", raw_log)


@pytest.fixture(scope="module")
def snapshot_frame(raw_log: pd.DataFrame, artifact_dir: Path) -> pd.DataFrame:
    config = ScoringModel.load(artifact_dir).artifact.feature_config
    features = build_features(canonicalize(raw_log).log, "2024-05-01", config)
    return features.reset_index().assign(as_of=pd.Timestamp("2024-05-01", tz="UTC"))


@pytest.fixture(scope="module")
def rehashed_broken_artifact(tmp_path_factory: pytest.TempPathFactory, artifact_dir: Path) -> Path:
    """The artifact with a malformed churn model text, every hash rewritten to match."""
    root = tmp_path_factory.mktemp("broken") / "artifact"
    shutil.copytree(artifact_dir, root)
    model = root / "models" / "churn.lgb.txt"
    text = model.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("num_leaves="))
    lines[first] = "num_leaves=999\n"  # more leaves than the tree's arrays hold
    model.write_text("".join(lines), encoding="utf-8")
    manifest_path = root / "retain_artifact.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for rel in manifest["files"]:
        manifest["files"][rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def base_env() -> dict[str, str]:
    """The caller's environment without any retain or MLflow setting of the test runner."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RETAIN_") and k != "MLFLOW_TRACKING_URI"
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["BENTOML_DO_NOT_TRACK"] = "true"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def retain_serve(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``retain serve`` expected to refuse: run to its exit (bounded; its group is killed)."""
    command = [sys.executable, "-m", "serving.cli", "serve", "--port", str(free_port()), *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        stop(process)  # SIGTERM: bentoml serve, if it got there, stops its workers too
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"retain serve still running after {EXIT_SECONDS:.0f}s: {stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_tracking_uri_paths_become_absolute_in_the_callers_directory(tmp_path: Path) -> None:
    assert absolute_tracking_uri("sqlite:///store/m.db", tmp_path) == (
        f"sqlite:///{tmp_path / 'store' / 'm.db'}"
    )
    assert absolute_tracking_uri("sqlite:///m.db?mode=ro", tmp_path) == (
        f"sqlite:///{tmp_path / 'm.db'}?mode=ro"
    )
    assert absolute_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert absolute_tracking_uri("mlruns", tmp_path) == str(tmp_path / "mlruns")
    assert absolute_tracking_uri("http://h:5000", tmp_path) == "http://h:5000"
    env = {"RETAIN_MODEL_URI": "art", "RETAIN_FEATURE_SNAPSHOT": "snap", "PATH": "/bin"}
    _, out = serve_command(
        None, "127.0.0.1", 3000, 1, tracking_uri="sqlite:///m.db", environ=env, cwd=tmp_path
    )
    assert out["RETAIN_MODEL_URI"] == str(tmp_path / "art")
    assert out["RETAIN_FEATURE_SNAPSHOT"] == str(tmp_path / "snap")
    assert out["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'm.db'}"


def test_missing_relative_paths_stop_retain_serve_naming_setting_and_path(
    tmp_path: Path, artifact_dir: Path
) -> None:
    env = base_env()
    done = retain_serve(["--model-uri", "no-such-artifact"], tmp_path, env)
    assert_one_line_refusal(done, "--model-uri", str(tmp_path / "no-such-artifact"))

    shutil.copytree(artifact_dir, tmp_path / "art")
    done = retain_serve(
        [], tmp_path, {**env, "RETAIN_MODEL_URI": "art", "RETAIN_FEATURE_SNAPSHOT": "gone.parquet"}
    )
    assert_one_line_refusal(done, "RETAIN_FEATURE_SNAPSHOT", str(tmp_path / "gone.parquet"))

    # the default model comes from ./mlflow.db: a missing store is named, not created empty
    done = retain_serve([], tmp_path, env)
    assert_one_line_refusal(done, "MLFLOW_TRACKING_URI", str(tmp_path / "mlflow.db"))
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETAIN_MAX_BODY_BYTES", "5MB"),
        ("RETAIN_MAX_CUSTOMERS", "0"),
        ("RETAIN_BATCH_WINDOW_MS", "soon"),
        ("RETAIN_BODY_TIMEOUT_SECONDS", "0"),
    ],
)
def test_bad_settings_stop_retain_serve(
    tmp_path: Path, artifact_dir: Path, name: str, value: str
) -> None:
    env = {**base_env(), "RETAIN_MODEL_URI": str(artifact_dir), name: value}
    line = assert_one_line_refusal(retain_serve([], tmp_path, env), name, repr(value))
    assert "model" not in line  # refused before loading anything


def test_malformed_rehashed_model_text_is_an_error_not_an_abort(
    tmp_path: Path, rehashed_broken_artifact: Path
) -> None:
    """LightGBM aborts (SIGABRT, exit 134) on this text; retain names the file instead."""
    done = retain_serve(["--model-uri", str(rehashed_broken_artifact)], tmp_path, base_env())
    assert_one_line_refusal(done, "churn.lgb.txt", "SIGABRT")
    load = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from training.artifact import load_artifact; load_artifact(sys.argv[1])",
            str(rehashed_broken_artifact),
        ],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=EXIT_SECONDS,
    )
    assert load.returncode == 1, load.stderr[-2000:]  # a Python exception, not a signal
    assert "ModelTextError: model file churn.lgb.txt" in load.stderr


def test_registry_failure_stops_retain_serve_without_printing_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    env = {
        **base_env(),
        "MLFLOW_TRACKING_URI": f"http://alice:{SECRET}@127.0.0.1:{port}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        "RETAIN_API_KEY": API_KEY,
    }
    done = retain_serve([], tmp_path, env)
    line = assert_one_line_refusal(done, "alice:***@127.0.0.1")
    assert SECRET not in done.stderr + done.stdout
    assert API_KEY not in done.stderr + done.stdout
    assert "model or snapshot not loaded" in line


def _wait_for_readyz(
    url: str, process: subprocess.Popen[bytes], log: Path, status: int
) -> httpx.Response:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        if response.status_code == status:
            return response
        time.sleep(0.5)
    pytest.fail(f"/readyz never answered {status}:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ({"RETAIN_MODEL_URI": "/no/such/artifact"}, "'/no/such/artifact' is neither"),
        ({"RETAIN_MAX_BODY_BYTES": "5MB"}, "RETAIN_MAX_BODY_BYTES='5MB' is not a whole number"),
    ],
)
def test_bentoml_serve_with_a_fault_answers_503_with_the_reason_and_never_respawns(
    tmp_path: Path, artifact_dir: Path, setting: dict[str, str], reason: str
) -> None:
    """Before: the worker died in __init__ and was respawned ~28 times a minute, every
    request hanging (or, for a bad setting, every request a 500 after loading the model)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command, env = serve_command(
        None, "127.0.0.1", port, 1, environ={**base_env(), "RETAIN_MODEL_URI": str(artifact_dir)}
    )
    env.update(setting)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = _wait_for_readyz(url, process, log, 503)
        assert ready.json() == {"status": "not ready", "reason": ready.json()["reason"]}
        assert reason in ready.json()["reason"]
        body = {"customers": [{"customer_id": "a"}]}
        refused = httpx.post(f"{url}/score", json=body, timeout=10)
        assert refused.status_code == 503
        assert reason in refused.json()["error"]
        time.sleep(5)  # a respawn loop restarts the worker every ~2 s
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 503
        text = log.read_text()
        assert text.count("retain service not ready") == 1, text[-3000:]
        assert "Traceback" not in text
        assert "Application startup failed" not in text
    finally:
        stop(process)


@pytest.fixture()
def served_from_tmp(
    tmp_path: Path, artifact_dir: Path, snapshot_frame: pd.DataFrame
) -> Iterator[tuple[str, Path, str]]:
    """``retain serve`` started in a temporary directory with relative paths in its env."""
    shutil.copytree(artifact_dir, tmp_path / "art")
    (tmp_path / "snapshot").mkdir()
    snapshot_frame.to_parquet(tmp_path / "snapshot" / "features.parquet")
    port = free_port()
    env = {
        **base_env(),
        "RETAIN_MODEL_URI": "art",
        "RETAIN_FEATURE_SNAPSHOT": "snapshot",
        "MLFLOW_TRACKING_URI": f"http://alice:{SECRET}@127.0.0.1:1",
        "SERVE_KEY": API_KEY,
    }
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port)]
    command += ["--workers", "1", "--api-key-env", "SERVE_KEY"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_readyz(url, process, log, 200)
        yield url, tmp_path, log.read_text()
    finally:
        stop(process)


def test_retain_serve_takes_relative_paths_in_the_callers_directory(
    served_from_tmp: tuple[str, Path, str], artifact_dir: Path, snapshot_frame: pd.DataFrame
) -> None:
    url, cwd, startup = served_from_tmp
    ready = httpx.get(f"{url}/readyz", timeout=10).json()
    assert ready["model"]["uri"] == str(cwd / "art")
    assert ready["snapshot_path"] == str(cwd / "snapshot")
    assert ready["snapshot_customers"] == len(snapshot_frame)
    assert f"from {cwd / 'art'}; snapshot {cwd / 'snapshot'}" in startup  # retain serve's line

    ids = list(snapshot_frame["customer_id"].iloc[:3])
    response = httpx.post(
        f"{url}/score/ids", json={"customer_ids": ids}, headers={"X-API-Key": API_KEY}, timeout=60
    )
    assert response.status_code == 200, response.text
    frame = snapshot_frame.set_index("customer_id")
    expected = score_features(
        ScoringModel.load(artifact_dir), frame.loc[ids].drop(columns=["as_of"]), "2024-05-01"
    ).set_index("customer_id")
    for got in response.json()["results"]:
        assert got["status"] == "scored"
        row = expected.loc[got["customer_id"]]
        assert got["churn_probability"] == pytest.approx(float(row["churn_probability"]))
        assert got["segment"] == row["segment"]
        assert got["offer"]["code"] == row["offer"]
    # what retain serve and the worker printed names files but never a secret
    log = (cwd / "serve.log").read_text()
    assert "alice:***@127.0.0.1" in startup
    assert SECRET not in log and API_KEY not in log
    assert f"loaded from {cwd / 'art'}" in log  # the worker's own start-up line


_REGISTER = """
import sys
import pandas as pd
from features.log.purchase_log import canonicalize
from serving.lifecycle_wiring import PYFUNC_CODE
from training.registry import versions as registry, tracking, tracking_store

tracking_store.configure_tracking("sqlite:///store.db")  # relative: this process runs in the tmp dir
run = tracking.log_training_run(
    experiment="retain",
    python_model=PYFUNC_CODE,
    artifact_dir=sys.argv[1],
    log=canonicalize(pd.read_parquet(sys.argv[2])).log,
    as_of=pd.Timestamp("2024-07-01", tz="UTC"),
    horizon_days=30,
    backtest={"model": {"churn_auc": 0.7}, "bgnbd": {"churn_auc": 0.6}},
)
print(registry.register_challenger(run.run_id, name="retain"))
"""


def test_retain_serve_opens_a_relative_sqlite_store_in_the_callers_directory(
    tmp_path: Path, artifact_dir: Path, raw_log: pd.DataFrame
) -> None:
    """Before: the workers opened sqlite:///store.db in the repository (an empty store)."""
    raw_log.to_parquet(tmp_path / "log.parquet")
    registered = subprocess.run(
        [sys.executable, "-c", _REGISTER, str(artifact_dir), "log.parquet"],
        cwd=tmp_path,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    version = registered.stdout.strip().splitlines()[-1]
    port = free_port()
    env = {**base_env(), "MLFLOW_TRACKING_URI": "sqlite:///store.db"}
    command = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port)]
    command += ["--workers", "1", "--model-uri", "models:/retain@challenger"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = _wait_for_readyz(url, process, log, 200).json()
        assert ready["model"] == {
            "name": "retain",
            "version": version,
            "uri": "models:/retain@challenger",
        }
        assert f"tracking sqlite:///{tmp_path / 'store.db'}" in log.read_text()
        cid = str(raw_log["customer_id"].iloc[0])
        response = httpx.post(f"{url}/score", json={"customers": [{"customer_id": cid}]})
        assert response.status_code == 200, response.text
        assert response.json()["model"]["version"] == version
    finally:
        stop(process)
    assert not (REPO_ROOT / "store.db").exists()
