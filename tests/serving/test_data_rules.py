"""The data rules travel with the model, on the configuration users get.

A model is trained with ``retain train --config`` (a cancellation prefix ``X`` and
``duplicates: keep``) and the default ``RetainModels`` (BTYD features and offsets on, full
boosting): the defaults a user gets, run once end to end here, while the other serving tests
use small models without BTYD for speed. HTTP (``retain serve``'s ``bentoml serve`` on
127.0.0.1), the MLflow pyfunc and ``retain score`` then score a history whose result
differs under the default rules, and each must give what the trained rules give.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.log.fingerprint import log_fingerprint
from features.log.purchase_log import canonicalize
from features.log.schema import LogConfig
from features.synthetic.synth import generate_purchase_log
from serving.batch.publish import read_scores
from serving.reasons import RISK_PHRASES
from serving.scorer import ScoringModel, score
from tests.retain_cli import retain as run_retain
from tests.serving.test_service_http import (
    assert_matches,
    history_of,
    post,
    start_service,
    stop_service,
)
from training.artifact import load_artifact
from training.registry import tracking, tracking_store

pytestmark = [pytest.mark.server, pytest.mark.slow]

AS_OF = "2024-07-01"
RULES = LogConfig(cancel_prefix="X", duplicates="keep")
N_CUSTOMERS = 6


def retain(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``retain`` command as a user runs it, with MLflow's default store in ``cwd``."""
    return run_retain(*args, cwd=cwd, env={"MLFLOW_TRACKING_URI": None})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's directory after ``retain train --config rules.yaml`` with default models.

    The source log writes cancellations as ``X<order>`` (the synthetic log's ``C`` prefix
    renamed), so the rules file is what reads it right.
    """
    root = tmp_path_factory.mktemp("data-rules")
    raw = generate_purchase_log(300, seed=11, start="2023-01-01", end="2024-06-30").log
    raw["order_id"] = raw["order_id"].str.replace("^C", "X", regex=True)
    raw.to_parquet(root / "purchases.parquet")
    (root / "rules.yaml").write_text("log:\n  cancel_prefix: X\n  duplicates: keep\n")
    done = retain(
        "train",
        "--data",
        "purchases.parquet",
        "--as-of",
        "2024-03-01",
        "--config",
        "rules.yaml",
        "--artifact-out",
        "artifact",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def history(workdir: Path) -> pd.DataFrame:
    """Raw rows of a few customers that the two rule sets count differently.

    Each customer gets an exact copy of their last row (kept under ``duplicates: keep``,
    dropped by default) and a later order ``X...`` with a positive amount (a cancellation
    under prefix ``X``, a purchase under the default prefix ``C``).
    """
    raw = pd.read_parquet(workdir / "purchases.parquet")
    counts = raw[raw["amount"] > 0].groupby("customer_id").size()
    ids = sorted(counts[counts >= 3].index)[:N_CUSTOMERS]
    parts = []
    for i, cid in enumerate(ids):
        rows = raw[raw["customer_id"] == cid]
        last = rows.iloc[[-1]]
        cancel = last.assign(
            order_id=f"X-late-{i}",
            amount=80.0,
            timestamp=pd.Timestamp("2024-06-20 12:00", tz="UTC") + pd.Timedelta(hours=i),
        )
        parts.append(pd.concat([rows, last, cancel]))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def expected(workdir: Path, history: pd.DataFrame) -> pd.DataFrame:
    """The trained rules' scores, checked to differ from the default rules' scores."""
    model = ScoringModel.load(workdir / "artifact")
    trained = score(model, canonicalize(history, RULES).log, AS_OF)
    default = score(model, canonicalize(history, LogConfig()).log, AS_OF)
    assert list(trained["customer_id"]) == list(default["customer_id"])
    differs = trained["churn_probability"].to_numpy() != default["churn_probability"].to_numpy()
    assert differs.all(), "the test history must score differently under the default rules"
    return trained


def test_the_artifact_records_the_training_rules(workdir: Path) -> None:
    manifest = json.loads((workdir / "artifact" / "retain_artifact.json").read_text())
    assert manifest["log_config"]["cancel_prefix"] == "X"
    assert manifest["log_config"]["duplicates"] == "keep"
    artifact = load_artifact(workdir / "artifact")
    assert artifact.log_config == RULES
    assert artifact.models.use_baselines  # the default model: BTYD features on


def test_the_run_records_its_data_as_an_mlflow_dataset(workdir: Path) -> None:
    """``mlflow.log_input``: the digest is retain's fingerprint of the log as read."""
    tracking_store.configure_tracking(f"sqlite:///{workdir / 'mlflow.db'}")
    client = MlflowClient()
    version = client.get_model_version_by_alias("retain", "challenger")
    run = client.get_run(version.run_id)
    log = canonicalize(pd.read_parquet(workdir / "purchases.parquet"), RULES).log
    fingerprint = log_fingerprint(log)
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == fingerprint
    assert dataset_input.dataset.name == "purchase_log"
    assert json.loads(dataset_input.dataset.source) == {
        "uri": (workdir / "purchases.parquet").as_uri()
    }
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]
    # the promotion gate compares the same value
    assert run.data.params["data.fingerprint"] == version.tags["data.fingerprint"] == fingerprint


@pytest.fixture(scope="module")
def service(workdir: Path) -> Iterator[str]:
    env = {
        "RETAIN_MODEL_URI": str(workdir / "artifact"),
        "RETAIN_FEATURE_SNAPSHOT": "",
        "RETAIN_API_KEY": "",
        "RETAIN_MAX_BODY_BYTES": "",
        "RETAIN_MAX_CUSTOMERS": "",
    }
    process, url = start_service(env, workdir / "serve.log")
    try:
        yield url
    finally:
        stop_service(process)


def test_http_applies_the_trained_rules(
    service: str, history: pd.DataFrame, expected: pd.DataFrame
) -> None:
    ids = list(expected["customer_id"])
    body = {
        "customers": [
            {"customer_id": cid, "as_of": AS_OF, "history": history_of(history, cid)} for cid in ids
        ]
    }
    response = post(f"{service}/score", body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["customer_id"] for r in results] == ids
    rows = expected.set_index("customer_id")
    for got in results:
        assert got["as_of"] == pd.Timestamp(AS_OF, tz="UTC").isoformat()
        assert_matches(got, rows.loc[got["customer_id"]])


def test_pyfunc_applies_the_trained_rules(
    workdir: Path, history: pd.DataFrame, expected: pd.DataFrame
) -> None:
    tracking_store.configure_tracking(f"sqlite:///{workdir / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/retain@challenger")
    got = model.predict(tracking.wire_frame(history), params={"as_of": AS_OF})
    pd.testing.assert_frame_equal(got, expected)


def test_batch_applies_the_trained_rules(
    workdir: Path, history: pd.DataFrame, expected: pd.DataFrame
) -> None:
    history.to_parquet(workdir / "history.parquet")
    done = retain(
        "score",
        "--data",
        "history.parquet",
        "--as-of",
        AS_OF,
        "--out",
        "scores",
        "--model-uri",
        "models:/retain@challenger",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = read_scores(workdir / "scores").sort_values("customer_id", ignore_index=True)
    assert list(got["customer_id"]) == list(expected["customer_id"])
    for column in ("churn_probability", "expected_spend_365d", "p_purchase_horizon"):
        assert got[column].to_numpy() == pytest.approx(expected[column].to_numpy(), rel=1e-9)
    assert list(got["segment"]) == list(expected["segment"])
    # the default model explains itself in words (its BTYD inputs included), never raw names
    reasons = set(got[["reason_1", "reason_2", "reason_3"]].to_numpy().ravel()) - {""}
    assert reasons and reasons <= set(RISK_PHRASES.values())
    # a --config that contradicts a counting rule the model was trained with is refused
    (workdir / "drop.toml").write_text('[log]\nduplicates = "drop"\n')
    clash = retain(
        "score",
        "--data",
        "history.parquet",
        "--as-of",
        AS_OF,
        "--out",
        "scores-clash",
        "--model-uri",
        "artifact",
        "--config",
        "drop.toml",
        cwd=workdir,
    )
    assert clash.returncode == 2
    assert "duplicates: the model was trained with 'keep', --config says 'drop'" in clash.stderr
