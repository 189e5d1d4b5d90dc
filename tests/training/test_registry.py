"""Registry workflow against the embedded default store (sqlite in a tmp working directory).

Runs are real MLflow runs carrying the params, metrics and model-URI tag that
``training.tracking.log_training_run`` writes; the registry never looks inside the model, so
a small text artifact stands in for the packaged pyfunc here (the full cycle with a real
pyfunc lives in tests/serving/test_mlflow_cycle.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from training import registry, tracking

SAME_BACKTEST = {
    "backtest.as_of": "2024-01-01T00:00:00+00:00",
    "backtest.horizon_days": "90",
    "data.fingerprint": "a" * 64,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One embedded store per module (creating the sqlite schema takes seconds)."""
    workdir = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = tracking.configure_tracking(None)
        assert uri == f"sqlite:///{workdir / 'mlflow.db'}"
        yield workdir
    assert (workdir / "mlflow.db").is_file()


@pytest.fixture()
def client(store: Path) -> MlflowClient:
    tracking.configure_tracking(f"sqlite:///{store / 'mlflow.db'}")
    return MlflowClient()


@pytest.fixture()
def name(request: pytest.FixtureRequest) -> str:
    """Each test gets its own registered model in the shared store."""
    return "retain-" + request.node.name.removeprefix("test_").replace("_", "-")[:60]


def _run(
    auc: float,
    count_mae: float,
    bgnbd_auc: float = 0.70,
    paretonbd_auc: float = 0.71,
    backtest: dict[str, str] | None = None,
) -> str:
    experiment_id = tracking.ensure_experiment("retain-test")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(backtest or SAME_BACKTEST)
        mlflow.log_metrics(
            {
                "model.churn_auc": auc,
                "model.count_mae": count_mae,
                "bgnbd.churn_auc": bgnbd_auc,
                "paretonbd.churn_auc": paretonbd_auc,
            }
        )
        mlflow.log_text("stand-in", "model/MLmodel.txt")
        mlflow.set_tag(registry.MODEL_URI_TAG, f"{run.info.artifact_uri}/model")
    return run.info.run_id


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_artifacts_go_to_mlartifacts_in_working_dir(client: MlflowClient, store: Path) -> None:
    run_id = _run(0.8, 1.0)
    assert client.get_run(run_id).info.artifact_uri.startswith((store / "mlartifacts").as_uri())
    assert (store / "mlartifacts").is_dir()


def test_first_challenger_beating_baselines_becomes_champion(
    client: MlflowClient, name: str
) -> None:
    run_id = _run(0.80, 1.0)
    version = registry.register_challenger(run_id, name=name)
    assert _aliases(client, name) == {"challenger": version}
    tags = client.get_model_version(name, version).tags
    assert float(tags["model.churn_auc"]) == 0.80
    assert tags["data.fingerprint"] == "a" * 64

    decision = registry.promote(name=name)
    assert decision.promoted
    assert decision.champion_version is None
    assert _aliases(client, name) == {"champion": version}
    assert json.loads(client.get_registered_model(name).tags["champion_history"]) == [version]


def test_challenger_not_beating_baselines_is_refused(client: MlflowClient, name: str) -> None:
    registry.register_challenger(_run(0.70, 1.0, bgnbd_auc=0.69, paretonbd_auc=0.72), name=name)
    before = _aliases(client, name)
    decision = registry.promote(name=name)
    assert not decision.promoted
    assert any("paretonbd.churn_auc 0.7200" in r for r in decision.reasons)
    assert _aliases(client, name) == before


def test_better_challenger_replaces_champion(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    assert registry.promote(name=name).promoted
    v2 = registry.register_challenger(_run(0.82, 0.95), name=name)
    decision = registry.promote(name=name)
    assert decision.promoted, decision.reasons
    assert (decision.challenger_version, decision.champion_version) == (v2, v1)
    assert _aliases(client, name) == {"champion": v2}


def test_worse_challenger_refused_with_reasons_and_aliases_untouched(
    client: MlflowClient, name: str
) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    registry.promote(name=name)
    v2 = registry.register_challenger(_run(0.78, 1.10), name=name)
    decision = registry.promote(name=name)
    assert not decision.promoted
    text = " ".join(decision.reasons)
    assert "churn_auc 0.7800 is worse than champion v1 0.8000" in text
    assert "count_mae 1.1000 is worse than champion v1 1.0000" in text
    assert _aliases(client, name) == {"champion": v1, "challenger": v2}
    # Within tolerance on AUC but still worse on count_mae: still refused.
    assert not registry.promote(name=name, tolerance=0.05).promoted


def test_tolerance_lets_slightly_lower_auc_through(client: MlflowClient, name: str) -> None:
    registry.register_challenger(_run(0.80, 1.00), name=name)
    registry.promote(name=name)
    v2 = registry.register_challenger(_run(0.795, 0.99), name=name)
    assert not registry.promote(name=name, tolerance=0.001).promoted
    assert registry.promote(name=name, tolerance=0.01).promoted
    assert _aliases(client, name)["champion"] == v2


def test_different_backtest_is_refused_unless_forced(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    registry.promote(name=name)
    other = {**SAME_BACKTEST, "data.fingerprint": "b" * 64, "backtest.horizon_days": "60"}
    v2 = registry.register_challenger(_run(0.90, 0.50, backtest=other), name=name)
    decision = registry.promote(name=name)
    assert not decision.promoted
    assert "not the same backtest" in decision.reasons[0]
    assert "backtest.horizon_days: challenger '60' vs champion '90'" in decision.reasons[0]
    assert "data.fingerprint" in decision.reasons[0]
    assert _aliases(client, name) == {"champion": v1, "challenger": v2}

    forced = registry.promote(name=name, force=True)
    assert forced.promoted and forced.forced
    assert _aliases(client, name) == {"champion": v2}


def test_rollback_moves_champion_back(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    registry.promote(name=name)
    v2 = registry.register_challenger(_run(0.85, 0.90), name=name)
    registry.promote(name=name)
    assert registry.rollback(name=name) == v1
    assert _aliases(client, name) == {"champion": v1}
    assert json.loads(client.get_registered_model(name).tags["champion_history"]) == [v1]
    rows = {r.version: r for r in registry.list_versions(name=name)}
    assert rows[v1].aliases == ["champion"] and rows[v2].aliases == []
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(name=name)
    assert _aliases(client, name) == {"champion": v1}


def test_rollback_without_history_is_a_clear_error(client: MlflowClient, name: str) -> None:
    with pytest.raises(registry.RegistryError, match="does not exist"):
        registry.rollback(name=name)
    registry.register_challenger(_run(0.80, 1.00), name=name)
    with pytest.raises(registry.RegistryError, match=r"nothing to roll back to.*current: none"):
        registry.rollback(name=name)


def test_list_versions_shows_aliases_and_metrics(client: MlflowClient, name: str) -> None:
    run1 = _run(0.80, 1.00)
    v1 = registry.register_challenger(run1, name=name)
    registry.promote(name=name)
    v2 = registry.register_challenger(_run(0.70, 2.00), name=name)
    rows = registry.list_versions(name=name)
    assert [r.version for r in rows] == [v2, v1]
    assert rows[0].aliases == ["challenger"] and rows[1].aliases == ["champion"]
    assert rows[1].run_id == run1
    assert rows[1].metrics["model.churn_auc"] == 0.80
    assert rows[1].metrics["paretonbd.churn_auc"] == 0.71
    assert rows[0].backtest == SAME_BACKTEST


def test_no_challenger_is_refused(client: MlflowClient, name: str) -> None:
    decision = registry.promote(name=name)
    assert not decision.promoted
    assert "no 'challenger' alias" in decision.reasons[0]


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking.resolve_tracking_uri("http://explicit:5000") == "http://explicit:5000"
    assert tracking.resolve_tracking_uri(None) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_tracking_uri(None, workdir=tmp_path) == (
        f"sqlite:///{tmp_path}/mlflow.db"
    )


def _tiny_log(amounts: list[float], categories: list[str]) -> pd.DataFrame:
    ids = pd.Categorical(["a", "b", "a"], categories=categories)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "timestamp": pd.DatetimeIndex(
                ["2024-01-01", "2024-01-02", "2024-03-05 12:00"], tz="UTC"
            ).as_unit("us"),
            "amount": amounts,
            "quantity": 1.0,
            "order_id": pd.array(["o1", "o2", "o3"], dtype="str"),
            "product_id": pd.array([None] * 3, dtype="str"),
            "category": pd.array([None] * 3, dtype="str"),
            "discount": False,
            "channel": pd.array([None] * 3, dtype="str"),
            "is_return": False,
        }
    )


def test_data_fingerprint_hashes_content_not_category_codes() -> None:
    base = tracking.data_fingerprint(_tiny_log([1.0, 2.0, 3.0], ["a", "b"]))
    assert (base.rows, base.customers) == (3, 2)
    assert base.first_timestamp == "2024-01-01T00:00:00+00:00"
    assert base.last_timestamp == "2024-03-05T12:00:00+00:00"
    # Same rows, different category order (codes differ): same fingerprint.
    assert tracking.data_fingerprint(_tiny_log([1.0, 2.0, 3.0], ["b", "a"])) == base
    # One cent changed: different content hash.
    changed = tracking.data_fingerprint(_tiny_log([1.0, 2.01, 3.0], ["a", "b"]))
    assert changed.fingerprint != base.fingerprint
    assert len(base.fingerprint) == 32  # fits MLflow's dataset digest (36 characters at most)


def test_flatten_metrics_keys_by_method_and_drops_missing() -> None:
    flat = tracking.flatten_metrics(
        {"model": {"churn_auc": 0.8, "timing_cindex": None}, "recency": {"churn_auc": 0.6}}
    )
    assert flat == {"model.churn_auc": 0.8, "recency.churn_auc": 0.6}
