"""Registry workflow against the embedded default store (sqlite in a tmp working directory).

Runs are real MLflow runs carrying the params, metrics, model-URI and manifest-digest tags
that ``training.registry.tracking.log_training_run`` writes; the gate logic never looks inside the
model, so a small text artifact stands in for the packaged pyfunc here and the load-and-score
check is a recorder (the full cycle with real pyfuncs, the real smoke test and tampered
artifacts lives in tests/serving/test_mlflow_cycle.py).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from training.registry import gate, tracking, tracking_store
from training.registry import versions as registry

DIGEST = "0123456789abcdef" * 4
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
        uri = tracking_store.configure_tracking(None)
        assert uri == f"sqlite:///{workdir / 'mlflow.db'}"
        yield workdir
    assert (workdir / "mlflow.db").is_file()


@pytest.fixture()
def client(store: Path) -> MlflowClient:
    tracking_store.configure_tracking(f"sqlite:///{store / 'mlflow.db'}")
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
    with_digest: bool = True,
) -> str:
    experiment_id = tracking_store.ensure_experiment("retain-test")
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
        if with_digest:
            mlflow.set_tag(registry.MANIFEST_TAG, DIGEST)
    return run.info.run_id


class SmokeRecorder:
    """The load-and-score check as the gate sees it: called with a version, raises or not."""

    def __init__(self, failure: str | None = None) -> None:
        self.failure = failure
        self.versions: list[str] = []

    def __call__(self, version: str) -> None:
        self.versions.append(version)
        if self.failure is not None:
            raise ValueError(self.failure)


def _promote(name: str, **kwargs: object) -> registry.PromotionDecision:
    smoke = SmokeRecorder()
    decision = registry.promote(name=name, smoke_test=smoke, **kwargs)
    if decision.challenger_version is not None and "already" not in " ".join(decision.reasons):
        assert smoke.versions == [decision.challenger_version]
    return decision


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


@pytest.mark.slow
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

    decision = _promote(name)
    assert decision.promoted
    assert decision.champion_version is None
    assert _aliases(client, name) == {"champion": version}
    assert json.loads(client.get_registered_model(name).tags["champion_history"]) == [version]


def test_challenger_not_beating_baselines_is_refused(client: MlflowClient, name: str) -> None:
    registry.register_challenger(_run(0.70, 1.0, bgnbd_auc=0.69, paretonbd_auc=0.72), name=name)
    before = _aliases(client, name)
    decision = _promote(name)
    assert not decision.promoted
    assert any("paretonbd.churn_auc 0.7200" in r for r in decision.reasons)
    assert _aliases(client, name) == before


def test_better_challenger_replaces_champion(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    assert _promote(name).promoted
    v2 = registry.register_challenger(_run(0.82, 0.95), name=name)
    decision = _promote(name)
    assert decision.promoted, decision.reasons
    assert (decision.challenger_version, decision.champion_version) == (v2, v1)
    assert _aliases(client, name) == {"champion": v2}


def test_worse_challenger_refused_with_reasons_and_aliases_untouched(
    client: MlflowClient, name: str
) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    _promote(name)
    v2 = registry.register_challenger(_run(0.78, 1.10), name=name)
    decision = _promote(name)
    assert not decision.promoted
    text = " ".join(decision.reasons)
    assert "churn_auc 0.7800 is worse than champion v1 0.8000" in text
    assert "count_mae 1.1000 is worse than champion v1 1.0000" in text
    assert _aliases(client, name) == {"champion": v1, "challenger": v2}
    # Within tolerance on AUC but still worse on count_mae: still refused.
    assert not _promote(name, tolerance=0.05).promoted


def test_tolerance_lets_slightly_lower_auc_through(client: MlflowClient, name: str) -> None:
    registry.register_challenger(_run(0.80, 1.00), name=name)
    _promote(name)
    v2 = registry.register_challenger(_run(0.795, 0.99), name=name)
    assert not _promote(name, tolerance=0.001).promoted
    assert _promote(name, tolerance=0.01).promoted
    assert _aliases(client, name)["champion"] == v2


def test_champion_on_another_backtest_is_compared_after_rescoring(
    client: MlflowClient, name: str
) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    _promote(name)
    other = {**SAME_BACKTEST, "data.fingerprint": "b" * 64, "backtest.as_of": "2024-04-01"}
    v2 = registry.register_challenger(_run(0.90, 0.50, backtest=other), name=name)
    # Not re-scored yet: refused, naming the check, and saying how to re-score.
    decision = _promote(name)
    assert not decision.promoted
    assert decision.reasons[0].startswith("[same_backtest] champion v1 was backtested")
    assert "data.fingerprint: challenger 'bbbb" in decision.reasons[0]
    assert "retain promote --data" in decision.reasons[0]
    assert _aliases(client, name) == {"champion": v1, "challenger": v2}

    # Re-scored on v2's backtest the champion is *better* there: refused on the metric,
    # not on the data change.
    registry.record_champion_rescore(
        v2, v1, {"model.churn_auc": 0.93, "model.count_mae": 0.40}, "v1 re-fitted", name=name
    )
    decision = _promote(name)
    assert not decision.promoted
    assert decision.reasons == [
        "[churn_auc] challenger churn_auc 0.9000 is worse than champion v1 0.9300 (tolerance 0.0)",
        "[count_mae] challenger count_mae 0.5000 is worse than champion v1 0.4000",
    ]
    # Re-scored worse than the challenger: promoted with nothing skipped.
    registry.record_champion_rescore(
        v2, v1, {"model.churn_auc": 0.85, "model.count_mae": 0.70}, "v1 re-fitted", name=name
    )
    decision = _promote(name)
    assert decision.promoted and decision.skipped == {}
    assert "0.9000 vs 0.8500" in decision.reasons[1]
    assert decision.reasons[1].endswith("(champion v1 on v1 re-fitted)")
    assert _aliases(client, name) == {"champion": v2}
    assert registry.SKIPPED_TAG not in client.get_model_version(name, v2).tags


def test_rescore_callback_is_used_and_recorded(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    _promote(name)
    other = {**SAME_BACKTEST, "data.fingerprint": "c" * 64}
    v2 = registry.register_challenger(_run(0.82, 0.90, backtest=other), name=name)
    calls: list[tuple[str, str]] = []

    def rescore(challenger: object, champion: object) -> tuple[dict[str, float | None], str]:
        calls.append((str(challenger.version), str(champion.version)))  # type: ignore[attr-defined]
        figures = {"model.churn_auc": 0.81, "model.count_mae": 0.95, "model.brier": None}
        return figures, "v1's configuration re-fitted"

    decision = _promote(name, rescore=rescore)
    assert decision.promoted, decision.reasons
    assert calls == [(v2, v1)]
    tags = client.get_model_version(name, v2).tags
    assert tags[registry.RESCORED_VERSION_TAG] == v1
    assert float(tags["gate.champion.model.churn_auc"]) == 0.81
    assert "gate.champion.model.brier" not in tags
    assert tags[registry.RESCORED_BASIS_TAG] == "v1's configuration re-fitted"


def test_figures_recorded_without_a_basis_are_not_compared(client: MlflowClient, name: str) -> None:
    """A re-score recorded by an older retain (the champion's production model scored on a
    window it was fitted on) carries no basis: the gate asks for a re-fit instead."""
    registry.register_challenger(_run(0.80, 1.00), name=name)
    _promote(name)
    other = {**SAME_BACKTEST, "data.fingerprint": "d" * 64}
    v2 = registry.register_challenger(_run(0.82, 0.90, backtest=other), name=name)
    client.set_model_version_tag(name, v2, "gate.champion.model.churn_auc", "0.5")
    client.set_model_version_tag(name, v2, "gate.champion.model.count_mae", "2.0")
    client.set_model_version_tag(name, v2, registry.RESCORED_VERSION_TAG, "1")
    decision = _promote(name)
    assert not decision.promoted
    assert decision.reasons[0].startswith("[same_backtest] champion v1 was backtested")


def test_rollback_history_names_only_versions_that_were_champion() -> None:
    # normal: back to the one before the champion
    assert registry.rollback_history(["1", "2", "3"], "3") == ["1", "2"]
    # a promotion killed after the alias moved, before history: v4 replaced v3
    assert registry.rollback_history(["1", "2", "3"], "4") == ["1", "2", "3"]
    # a rollback killed after the alias moved, before history: v2 is champion again
    assert registry.rollback_history(["1", "2", "3"], "2") == ["1"]
    # a version promoted twice: its last time counts
    assert registry.rollback_history(["1", "2", "1", "3", "1"], "1") == ["1", "2", "1", "3"]
    assert registry.rollback_history([], None) == []


def test_skip_check_skips_one_named_check_and_records_it(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    _promote(name)
    v2 = registry.register_challenger(_run(0.79, 0.90), name=name)
    # Skipping another check does not let the failing one through.
    decision = _promote(name, skip=("count_mae",))
    assert not decision.promoted
    assert [r.split("]")[0] for r in decision.reasons] == ["[churn_auc"]
    decision = _promote(name, skip=("churn_auc",))
    assert decision.promoted
    assert decision.skipped == {
        "churn_auc": "challenger churn_auc 0.7900 is worse than champion v1 0.8000 (tolerance 0.0)"
    }
    assert json.loads(client.get_model_version(name, v2).tags[registry.SKIPPED_TAG]) == (
        decision.skipped
    )
    assert _aliases(client, name) == {"champion": v2}
    assert v1 != v2
    with pytest.raises(registry.RegistryError, match=r"unknown check\(s\) \['force'\]"):
        _promote(name, skip=("force",))


def test_failed_load_and_score_refuses_whatever_is_skipped(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.90, 0.50), name=name)
    smoke = SmokeRecorder("sha256 mismatch for 'models/churn.lgb.txt'")
    decision = registry.promote(name=name, smoke_test=smoke, skip=tuple(gate.CHECKS))
    assert not decision.promoted
    assert smoke.versions == [v1]
    assert decision.reasons == [
        "challenger v1 failed the load-and-score check: sha256 mismatch for 'models/churn.lgb.txt'"
    ]
    assert _aliases(client, name) == {"challenger": v1}


def test_register_copies_the_manifest_digest_and_requires_it(
    client: MlflowClient, name: str
) -> None:
    version = registry.register_challenger(_run(0.80, 1.00), name=name)
    assert client.get_model_version(name, version).tags[registry.MANIFEST_TAG] == DIGEST
    assert registry.manifest_digest(version, name=name) == DIGEST
    with pytest.raises(registry.RegistryError, match=r"no valid 'retain\.manifest_sha256'"):
        registry.register_challenger(_run(0.80, 1.00, with_digest=False), name=name)
    assert [r.version for r in registry.list_versions(name=name)] == [version]


def test_alias_version_reads_back_what_another_run_set(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    assert registry.alias_version(registry.CHALLENGER, name=name) == v1
    v2 = registry.register_challenger(_run(0.81, 1.00), name=name)  # "another run"
    assert registry.alias_version(registry.CHALLENGER, name=name) == v2
    assert registry.alias_version(registry.CHAMPION, name=name) is None


def test_rollback_moves_champion_back(client: MlflowClient, name: str) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    _promote(name)
    v2 = registry.register_challenger(_run(0.85, 0.90), name=name)
    _promote(name)
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
    _promote(name)
    v2 = registry.register_challenger(_run(0.70, 2.00), name=name)
    rows = registry.list_versions(name=name)
    assert [r.version for r in rows] == [v2, v1]
    assert rows[0].aliases == ["challenger"] and rows[1].aliases == ["champion"]
    assert rows[1].run_id == run1
    assert rows[1].metrics["model.churn_auc"] == 0.80
    assert rows[1].metrics["paretonbd.churn_auc"] == 0.71
    assert rows[0].backtest == SAME_BACKTEST


def test_no_challenger_is_refused(client: MlflowClient, name: str) -> None:
    decision = _promote(name)
    assert not decision.promoted
    assert "no 'challenger' alias" in decision.reasons[0]


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_store.resolve_tracking_uri("http://explicit:5000") == "http://explicit:5000"
    assert tracking_store.resolve_tracking_uri(None) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_store.resolve_tracking_uri(None, workdir=tmp_path) == (
        f"sqlite:///{tmp_path}/mlflow.db"
    )


def _closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reading_a_missing_sqlite_store_reports_it_and_creates_nothing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(tracking_store.TrackingStoreError, match=r"mlflow\.db does not exist"):
        tracking_store.configure_tracking(uri, create=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("template", "password"),
    [
        ("http://alice:secret@127.0.0.1:{port}", "secret"),
        ("postgresql://user:pw@127.0.0.1:{port}/mlflow", ":pw@"),
    ],
)
def test_unreachable_store_is_one_message_with_the_host_but_not_the_password(
    template: str, password: str
) -> None:
    uri = template.format(port=_closed_port())
    with pytest.raises(tracking_store.TrackingStoreError) as caught:
        tracking_store.configure_tracking(uri)
    message = str(caught.value)
    assert message.startswith("cannot reach the MLflow tracking server at ")
    assert "127.0.0.1" in message and ":***@127.0.0.1" in message
    assert password not in message


_FIRST_USE = """
import sys
from training.registry import gate, versions as registry, tracking, tracking_store
uri, tag = sys.argv[1], sys.argv[2]
tracking_store.configure_tracking(uri)
print(tracking_store.ensure_experiment("exp-" + tag))
"""


@pytest.mark.slow
def test_concurrent_first_use_of_a_new_sqlite_store_is_safe(tmp_path: Path) -> None:
    """Four processes open one new store at once: every one gets its experiment."""
    db = tmp_path / "mlflow.db"
    env = {**os.environ}
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_USE, f"sqlite:///{db}", str(i)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err[-800:] for *_, err in results]
    with sqlite3.connect(db) as con:
        names = {row[0] for row in con.execute("select name from experiments")}
    assert {f"exp-{i}" for i in range(4)} <= names


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


def test_a_challenger_registered_during_a_promotion_keeps_its_alias(
    client: MlflowClient, name: str
) -> None:
    v1 = registry.register_challenger(_run(0.80, 1.00), name=name)
    newer: list[str] = []

    def smoke_test_while_another_run_registers(version: str) -> None:
        newer.append(registry.register_challenger(_run(0.81, 1.00), name=name))

    decision = registry.promote(name=name, smoke_test=smoke_test_while_another_run_registers)
    assert decision.promoted and decision.challenger_version == v1
    assert _aliases(client, name) == {"champion": v1, "challenger": newer[0]}


def test_sqlite_artifacts_sit_next_to_the_database_not_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    database = tmp_path / "store" / "mlflow.db"
    database.parent.mkdir()
    previous = mlflow.get_tracking_uri()
    try:
        tracking_store.configure_tracking(f"sqlite:///{database}")
        experiment_id = tracking_store.ensure_experiment("retain-artifacts-next-to-db")
        location = MlflowClient().get_experiment(experiment_id).artifact_location
    finally:
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)
    assert location == (database.parent / "mlartifacts").as_uri()
    assert not (elsewhere / "mlartifacts").exists()
