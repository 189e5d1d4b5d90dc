"""Every output says where it came from: the MLflow run of ``retain train`` records the
model's weight per output against BG/NBD, the windows behind it and the planner's totals,
and the packaged artifact carries the very combination serving scores with."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.serving.conftest import RegisteredModel


def test_run_records_the_combination_and_the_totals(
    registered_model: RegisteredModel, tmp_path: Path
) -> None:
    uri = registered_model.tracking_uri  # the registry named too: others set a process-wide one
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name, version = registered_model.model_uri.removeprefix("models:/").split("/")
    run_id = client.get_model_version(name, version).run_id
    local = client.download_artifacts(run_id, "backtest/summary.json", str(tmp_path))
    summary = json.loads(Path(local).read_text(encoding="utf-8"))
    for key in ("combination", "production_combination"):
        combination = summary[key]
        for output in ("count_weight", "spend_weight", "churn_weight"):
            assert 0.0 <= combination[output] <= 1.0
        assert "out_of_time" in combination["weights_from"]
        assert combination["evidence_snapshots"] >= 1
        assert combination["calibrated_on"]["rows"] > 0
        # the churn probability's average with BG/NBD, and what chose it
        assert combination["churn_average"] in (0.5, 1.0)
        assert combination["churn_average_chosen_on"]["why"]
    for totals in (summary["totals"], summary["production_totals"]):
        for name in ("purchases", "spend"):
            assert totals[name]["low"] < totals[name]["forecast"] < totals[name]["high"]
    assert summary["totals"]["purchases"]["actual"] > 0
    # the artifact serving loads carries the production combination, as recorded
    meta = json.loads(
        (registered_model.artifact / "models" / "retain_models.json").read_text(encoding="utf-8")
    )
    assert meta["combination"] == summary["production_combination"]
