"""train -> register -> promote -> load ``models:/<name>@champion`` -> predict, on a real server.

The pyfunc's output must be exactly the scorer's output on the same artifact, and two
training runs logging to one server at once must both be recorded.
"""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import typer
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from features.builders import build_features
from features.fingerprint import log_fingerprint
from features.purchase_log import canonicalize
from features.synth import generate_purchase_log
from serving import mlflow_commands
from serving.scorer import ScoringModel, score, score_features
from serving.workflow import TrainOutcome, train_and_register
from training import tracking

pytestmark = [pytest.mark.server, pytest.mark.slow]

SMALL_MODELS = {
    "n_snapshots": 2,
    "num_boost_round": 8,
    "early_stopping_rounds": 4,
    "num_threads": 1,
    "use_baselines": False,
    "lgb_params": {"min_data_in_leaf": 10, "num_leaves": 7},
}
HORIZON = 30


@pytest.fixture(scope="module")
def raw_log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = generate_purchase_log(400, seed=5, start="2023-01-01", end="2024-03-31").log
    path = tmp_path_factory.mktemp("data") / "purchases.parquet"
    raw.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def canonical_log(raw_log_path: Path) -> pd.DataFrame:
    return canonicalize(pd.read_parquet(raw_log_path)).log


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    mlflow_commands.register(app)
    return app


def _train(
    path: Path, server: str, name: str, as_of: str, artifact_out: Path | None = None
) -> TrainOutcome:
    return train_and_register(
        path,
        as_of,
        HORIZON,
        tracking_uri=server,
        experiment=name,
        registered_model=name,
        models_params=SMALL_MODELS,
        artifact_out=artifact_out,
        console=Console(quiet=True),
    )


def _aliases(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient().get_registered_model(name).aliases.items()}


def test_train_promote_load_predict_rollback(
    mlflow_server: str,
    raw_log_path: Path,
    canonical_log: pd.DataFrame,
    cli: typer.Typer,
    tmp_path: Path,
) -> None:
    name = "retain-cycle"
    runner = CliRunner()
    server = ["--tracking-uri", mlflow_server, "--name", name]

    first = _train(raw_log_path, mlflow_server, name, "2024-01-01", tmp_path / "artifact-v1")
    assert first.version == "1"
    assert first.tracking_uri == mlflow_server
    assert _aliases(name) == {"challenger": "1"}
    # The production models are fitted at the UTC day after the last row of the log.
    assert first.fit_as_of == pd.Timestamp("2024-04-01", tz="UTC")

    run = MlflowClient().get_run(first.run_id)
    assert run.data.params["backtest.as_of"] == "2024-01-01T00:00:00+00:00"
    assert run.data.params["data.rows"] == str(len(canonical_log))
    assert run.data.params["data.customers"] == str(canonical_log["customer_id"].nunique())
    # the log is the run's MLflow dataset; its digest is retain's data fingerprint
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == log_fingerprint(canonical_log)
    assert dataset_input.dataset.digest == run.data.params["data.fingerprint"]
    for method in ("model", "bgnbd", "paretonbd", "recency"):
        auc = first.backtest["metrics"][method]["churn_auc"]
        assert run.data.metrics[f"{method}.churn_auc"] == pytest.approx(auc)
    logged = {a.path for a in MlflowClient().list_artifacts(first.run_id, "plots")}
    assert "plots/calibration.png" in logged
    importance = {a.path for a in MlflowClient().list_artifacts(first.run_id, "feature_importance")}
    assert importance == {
        "feature_importance/importance.json",
        "feature_importance/feature_importance.png",
    }

    # First promotion: only the baseline gate applies; compute the expected decision here.
    metrics = first.backtest["metrics"]
    beats = metrics["model"]["churn_auc"] > max(
        metrics["bgnbd"]["churn_auc"], metrics["paretonbd"]["churn_auc"]
    )
    result = runner.invoke(cli, ["promote", *server])
    assert result.exit_code == (0 if beats else 1), result.output
    if not beats:
        assert "does not beat baseline" in result.output
        assert _aliases(name) == {"challenger": "1"}
        result = runner.invoke(cli, ["promote", "--force", *server])
        assert result.exit_code == 0, result.output
    assert "PROMOTED" in result.output
    assert _aliases(name) == {"champion": "1"}

    # The registered pyfunc scores exactly like the scorer on the same artifact.
    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    expected = score(ScoringModel.load(tmp_path / "artifact-v1"), canonical_log, "2024-04-01")
    assert len(expected) == canonical_log["customer_id"].nunique()
    wire = tracking.wire_frame(canonical_log)  # plain dtypes, as a JSON client sends them
    got = champion.predict(wire, params={"as_of": "2024-04-01"})
    pd.testing.assert_frame_equal(got, expected)
    # Without as_of the pyfunc scores at the UTC day after the log's last row: 2024-04-01.
    pd.testing.assert_frame_equal(champion.predict(wire), expected)
    # Feature frames go through the unwrapped model (the signature describes purchase logs).
    scoring = ScoringModel.load(tmp_path / "artifact-v1")
    features = build_features(canonical_log, "2024-04-01", scoring.artifact.feature_config)
    pd.testing.assert_frame_equal(
        champion.unwrap_python_model().predict(None, features, {"as_of": "2024-04-01"}),
        score_features(scoring, features, "2024-04-01"),
    )

    # A challenger from another backtest is not comparable: refused, aliases untouched.
    second = _train(raw_log_path, mlflow_server, name, "2023-12-01")
    assert second.version == "2"
    result = runner.invoke(cli, ["promote", *server])
    assert result.exit_code == 1
    assert "REFUSED" in result.output and "not the same backtest" in result.output
    assert _aliases(name) == {"champion": "1", "challenger": "2"}
    assert runner.invoke(cli, ["promote", "--force", *server]).exit_code == 0
    assert _aliases(name) == {"champion": "2"}

    listing = runner.invoke(cli, ["models", *server], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    rows = {line.split()[0]: line for line in listing.output.splitlines() if "-01 " in line}
    assert "champion" in rows["2"] and "2023-12-01" in rows["2"]
    assert "champion" not in rows["1"] and "2024-01-01" in rows["1"]

    result = runner.invoke(cli, ["rollback", *server])
    assert result.exit_code == 0, result.output
    assert _aliases(name) == {"champion": "1"}
    result = runner.invoke(cli, ["rollback", *server])
    assert result.exit_code == 1
    assert "nothing to roll back to" in result.output


def test_concurrent_training_runs_are_all_recorded(mlflow_server: str, raw_log_path: Path) -> None:
    name = "retain-concurrent"
    outcomes: dict[str, TrainOutcome] = {}
    errors: list[BaseException] = []

    def worker(as_of: str) -> None:
        try:
            outcomes[as_of] = _train(raw_log_path, mlflow_server, name, as_of)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(d,)) for d in ("2024-01-01", "2024-02-01")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(outcomes) == 2

    tracking.configure_tracking(mlflow_server)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == {o.run_id for o in outcomes.values()}
    for as_of, outcome in outcomes.items():
        assert client.get_run(outcome.run_id).data.params["backtest.as_of"].startswith(as_of)
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(v.version for v in versions) == ["1", "2"] or sorted(
        int(v.version) for v in versions
    ) == [1, 2]
    assert {v.run_id for v in versions} == {o.run_id for o in outcomes.values()}
