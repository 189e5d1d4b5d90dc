"""The notebooks run top to bottom on small data, so they cannot rot.

Each notebook is executed with nbclient in a fresh kernel (cwd: ``notebooks/``, as Jupyter
would start it) after the test's values are appended to its ``parameters`` cell, the way
papermill injects parameters. The assertions compare what the notebook printed with the
same quantities computed here, directly from retain's packages or read back from the MLflow
store the notebook wrote into a temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import nbformat
import pytest
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient

from features.log.purchase_log import LoadResult, canonicalize
from features.retention.kpis import compute_kpis
from features.sources.cdnow import read_cdnow
from features.synthetic.synth import generate_purchase_log
from serving.batch.publish import read_scores
from tests.conftest import CDNOW_SAMPLE, DATASETS_DIR

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT = 600
SYNTH_CUSTOMERS = 400
SEED = 7
MODEL_NAME = "retain"
# Small, fast LightGBM settings: two configurations so 02 has runs to compare.
SMALL_CANDIDATES: dict[str, dict[str, Any]] = {
    "small+btyd": {
        "n_snapshots": 2,
        "num_boost_round": 30,
        "early_stopping_rounds": 10,
        "num_threads": 1,
    },
    "small": {
        "n_snapshots": 2,
        "num_boost_round": 30,
        "early_stopping_rounds": 10,
        "num_threads": 1,
        "use_baselines": False,
    },
}
CDNOW_PARAMS: dict[str, Any] = {
    "DATA": "cdnow",
    "CDNOW_FILE": CDNOW_SAMPLE.name,
    "DATASETS_DIR": str(DATASETS_DIR),
}
SYNTH_PARAMS: dict[str, Any] = {"DATA": "synth", "N_CUSTOMERS": SYNTH_CUSTOMERS, "SEED": SEED}


@pytest.fixture(autouse=True)
def _kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel inherits this environment: no telemetry, no outside MLflow store or key."""
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RETAIN_API_KEY", raising=False)


def run_notebook(name: str, params: dict[str, Any]) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` with ``params`` overriding its ``parameters`` cell."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters'"
    assert all(re.search(rf"^{key} = ", tagged[0].source, re.MULTILINE) for key in params), (
        f"{name}: a test parameter is not defined in the parameters cell"
    )
    overrides = "\n".join(f"{key} = {value!r}" for key, value in params.items())
    tagged[0].source += f"\n\n# injected by tests/notebooks\n{overrides}\n"
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return nb


def load(params: dict[str, Any]) -> LoadResult:
    """The log a notebook reads with ``params``, loaded here directly."""
    if params["DATA"] == "cdnow":
        return read_cdnow(DATASETS_DIR / "cdnow" / params["CDNOW_FILE"])
    return canonicalize(generate_purchase_log(params["N_CUSTOMERS"], seed=params["SEED"]).log)


def cell_text(nb: nbformat.NotebookNode, cell_id: str) -> str:
    """Everything a cell printed or displayed as text (stdout, plain-text and HTML reprs)."""
    cell = next(c for c in nb.cells if c.get("id") == cell_id)
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.extend(str(output.data.get(k, "")) for k in ("text/plain", "text/html"))
    return "\n".join(parts)


def images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def printed_float(text: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}: ([0-9.,]+)", text, re.MULTILINE)
    assert match, f"{label!r} not printed in:\n{text[:2000]}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.parametrize(
    ("params", "period"),
    [
        pytest.param(CDNOW_PARAMS, ("1997-01-01", "1998-07-01"), id="cdnow-sample"),
        pytest.param(SYNTH_PARAMS, ("2024-01-01", "2025-01-01"), id="synth"),
    ],
)
@pytest.mark.slow
def test_01_explore(params: dict[str, Any], period: tuple[str, str]) -> None:
    nb = run_notebook("01_explore.ipynb", params)
    expected = compute_kpis(load(params).log, *period).metrics

    text = cell_text(nb, "kpis")
    assert printed_float(text, "repeat rate") == pytest.approx(expected["repeat_rate"], abs=5e-5)
    assert printed_float(text, "customers") == expected["customers"]
    assert printed_float(text, "purchase frequency") == pytest.approx(
        expected["purchase_frequency"], abs=5e-5
    )
    # monthly buyers, cohort heatmap, segments and the three rhythm histograms are drawn
    assert images(nb) >= 4
    assert "loyal" in cell_text(nb, "segments")


@pytest.fixture(
    scope="module",
    params=[pytest.param(CDNOW_PARAMS, id="cdnow-sample"), pytest.param(SYNTH_PARAMS, id="synth")],
)
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[nbformat.NotebookNode, Path, dict[str, Any]]:
    """Notebook 02 run into a temporary working directory (its MLflow store included)."""
    params: dict[str, Any] = request.param
    workdir = tmp_path_factory.mktemp(f"notebooks-{params['DATA']}")
    with pytest.MonkeyPatch.context() as mp:  # module scope: set up before the autouse fixture
        mp.setenv("BENTOML_DO_NOT_TRACK", "true")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        nb = run_notebook(
            "02_train_compare_promote.ipynb",
            {**params, "WORKDIR": str(workdir), "CANDIDATES": SMALL_CANDIDATES},
        )
    return nb, workdir, params


@pytest.mark.slow
def test_02_train_compare_promote(
    trained: tuple[nbformat.NotebookNode, Path, dict[str, Any]],
) -> None:
    nb, workdir, _ = trained
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    # the registry named too: an in-process `retain train` earlier in this pytest process
    # set a process-wide registry URI that a client would otherwise inherit
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    # one run per candidate, in the store inside the temporary working directory
    experiment = client.get_experiment_by_name("retain")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(SMALL_CANDIDATES)
    assert (workdir / "mlartifacts").is_dir()

    # the registered version is the candidate with the best backtest churn AUC
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert [str(v.version) for v in versions] == ["1"]
    best = max(runs, key=lambda r: r.data.metrics["model.churn_auc"])
    assert versions[0].run_id == best.info.run_id

    # the comparison table shows MLflow's numbers for the model and the baselines
    compare = cell_text(nb, "compare")
    for key in ("model.churn_auc", "bgnbd.churn_auc", "paretonbd.churn_auc"):
        assert f"{best.data.metrics[key]:.4f}" in compare

    # the gate's decision is printed and matches the registry
    promote = cell_text(nb, "promote")
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL_NAME).aliases.items()}
    if "promoted: True" in promote:
        assert aliases == {"champion": "1"}
        assert "model for scoring: models:/retain@champion" in promote
    else:
        assert "promoted: False" in promote
        assert re.search(r"^  - \S", promote, re.MULTILINE), "the gate's reasons are shown"
        assert "promotion refused" in promote
        assert aliases == {"challenger": "1"}
        assert "model for scoring: models:/retain@challenger" in promote
    assert images(nb) == 3  # calibration, cumulative gains, purchases by frequency


@pytest.mark.slow
def test_02_with_the_default_model(tmp_path: Path) -> None:
    """The notebook's default candidate, the ``RetainModels()`` users get (BTYD inputs and
    offsets on, full boosting): the other notebook runs use small settings for speed."""
    nb = run_notebook(
        "02_train_compare_promote.ipynb",
        {**SYNTH_PARAMS, "WORKDIR": str(tmp_path), "CANDIDATES": {"lightgbm+btyd": {}}},
    )
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    [version] = client.search_model_versions(f"name='{MODEL_NAME}'")
    run = client.get_run(version.run_id)
    # nothing but the horizon was passed to RetainModels: every other parameter is a default
    assert {k for k in run.data.params if k.startswith("models.")} == {"models.horizon_days"}
    importance = client.download_artifacts(
        run.info.run_id, "feature_importance/importance.json", str(tmp_path)
    )
    used = json.loads(Path(importance).read_text())
    assert any(name.startswith(("bgnbd_", "pnbd_")) for name in used), sorted(used)
    compare = cell_text(nb, "compare")
    assert f"{run.data.metrics['model.churn_auc']:.4f}" in compare


@pytest.mark.slow
@pytest.mark.server
def test_03_score_serve_offers(
    trained: tuple[nbformat.NotebookNode, Path, dict[str, Any]],
) -> None:
    _, workdir, params = trained
    try:
        nb = run_notebook("03_score_serve_offers.ipynb", {**params, "WORKDIR": str(workdir)})
    except BaseException:
        _kill_leftover_server(workdir)
        raise

    scores = read_scores(workdir / "scores")
    assert len(scores) == load(params).report.n_customers
    assert scores["churn_probability"].between(0, 1).all()

    text = cell_text(nb, "score-http")
    match = re.search(r"HTTP churn probability for (\S+): ([0-9.]+) \(batch: ([0-9.]+)\)", text)
    assert match, text[:2000]
    customer_id, http_p, batch_p = match.group(1), float(match.group(2)), float(match.group(3))
    assert 0.0 <= http_p <= 1.0
    # the service scores the history it was sent exactly like the batch job
    assert http_p == pytest.approx(batch_p, abs=1e-6)
    row = scores.set_index("customer_id").loc[customer_id]
    assert row["churn_probability"] == pytest.approx(batch_p, abs=1e-6)

    assert "offers to send:" in cell_text(nb, "offers")
    assert "scored" in cell_text(nb, "score-ids")
    assert "service stopped" in cell_text(nb, "stop")
    pid = int((workdir / "serve.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group (server and workers) is gone


def _kill_leftover_server(workdir: Path) -> None:
    """The notebook failed: make sure the server it may have started is gone.

    (The notebook also stops it when its kernel exits; this covers a kernel that died.)
    """
    pid_file = workdir / "serve.pid"
    if not pid_file.exists():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(pid_file.read_text()), signal.SIGKILL)


CAMPAIGN_PARAMS: dict[str, Any] = {"N_CUSTOMERS": 8000, "SEED": 3, "CAMPAIGN": "nb_test"}


@pytest.mark.slow
def test_04_campaigns_uplift(tmp_path: Path) -> None:
    from features.retention.assignments import assignments_from_scores
    from serving.lift.assignments import read_assignments
    from serving.lift.campaign_sim import run_synthetic_campaign
    from serving.lift.measure import measure_lift
    from serving.lift.policy_update import rule_updates
    from serving.offers.policy import OfferPolicy
    from training.dataset.uplift_data import uplift_training_set
    from training.evaluation.metrics import qini_coefficient
    from training.models.uplift import UpliftModel, held_out_customers

    nb = run_notebook("04_campaigns_uplift.ipynb", {**CAMPAIGN_PARAMS, "WORKDIR": str(tmp_path)})

    # the same campaign, drawn here from the same seed
    policy = OfferPolicy.default().model_copy(update={"holdout_share": 0.5, "campaign": "nb_test"})
    campaign = run_synthetic_campaign(8000, 3, window_days=90, policy=policy)
    log = canonicalize(campaign.log).log
    until = campaign.outcome_truth["window_end"].max()
    result = measure_lift(log, read_assignments(campaign.scores), window_days=90, log_end=until)

    # the old policy is the campaign's, the new one holds the shrunk measured lifts
    old = OfferPolicy.from_yaml(tmp_path / "offer_policy.yaml")
    assert old.model_dump() == policy.model_dump()
    updated = OfferPolicy.from_yaml(tmp_path / "offer_policy_measured.yaml")
    expected = {u.rule: u.new for u in rule_updates(policy, result.offers(), window_days=90)}
    assert {r.name: r.lift for r in updated.rules} == expected
    assert "new policy written" in cell_text(nb, "policy")
    for rule in result.offers()["rule"]:
        assert rule in cell_text(nb, "measure")

    # the Qini coefficients printed are those of the same model and orders, recomputed here
    experiment = assignments_from_scores(campaign.scores)
    data = uplift_training_set(log, experiment, 90, observed_until=until)
    ids = experiment["customer_id"].to_numpy()
    held = held_out_customers(ids, 0.3, 3)
    model = UpliftModel(seed=3).fit(data.features[~held], data.treated[~held], data.bought[~held])
    truth = campaign.outcome_truth.set_index("customer_id")
    y, t = data.bought[held], data.treated[held]
    text = cell_text(nb, "targeting")
    assert printed_float(text, "Qini coefficient, uplift model") == pytest.approx(
        qini_coefficient(y, model.predict(data.features[held]), t), abs=5e-5
    )
    true_qini = qini_coefficient(y, truth.loc[ids[held], "true_uplift"].to_numpy(), t)
    assert printed_float(text, "Qini coefficient, true uplift") == pytest.approx(
        true_qini, abs=5e-5
    )
    assert re.search(r"^uplift: [0-9,]+ offers", cell_text(nb, "offers"), re.MULTILINE)
    assert images(nb) == 2  # measured lifts with intervals, Qini curves
