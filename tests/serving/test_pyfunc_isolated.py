"""The registered MLflow model loads and predicts wherever its own requirements are installed.

``mlflow.pyfunc.load_model("models:/retain/<version>")`` runs in a virtualenv built only from
the model's ``requirements.txt`` (no retain installed, ``python -I``, working directory
outside the checkout): retain's code must come from the model itself. Before this, no code
travelled with the model and its nine hand-written requirements left out lleaves, llvmlite
and every transitive package (this test failed: ``pip check`` listed joblib, narwhals,
pydantic-core, alembic... as missing).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.log.purchase_log import canonicalize
from serving.scorer import NUMBER_COLUMNS, SCORE_COLUMNS, ScoringModel, score
from tests.serving.conftest import RegisteredModel, isolated_env
from training.registry.pins import runtime_requirements
from training.registry.tracking import wire_frame

pytestmark = [pytest.mark.slow]

AS_OF = "2024-06-01"

PREDICT = """
import sys
import mlflow
import pandas as pd

mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
import serving.scorer  # loaded by the model, from the model's own code/ directory
print(serving.scorer.__file__)
frame = pd.read_parquet(sys.argv[3])
out = model.predict(frame, params={"as_of": sys.argv[4]})
out.to_parquet(sys.argv[5])
"""


def test_model_requirements_are_the_pinned_closure(registered_model: RegisteredModel) -> None:
    mlflow.set_tracking_uri(registered_model.tracking_uri)
    path = mlflow.pyfunc.get_model_dependencies(registered_model.model_uri)
    listed = [line for line in Path(path).read_text().splitlines() if line.strip()]
    assert listed == runtime_requirements()
    assert {"lleaves==1.3.0", "llvmlite==0.44.0", "lightgbm==4.7.0"} <= set(listed)


def test_registered_model_predicts_in_a_venv_of_only_its_requirements(
    registered_model: RegisteredModel,
    isolated_venv: Callable[[Path], Path],
    tmp_path: Path,
) -> None:
    mlflow.set_tracking_uri(registered_model.tracking_uri)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(registered_model.model_uri))
    python = isolated_venv(requirements)

    raw = registered_model.raw_log
    log = canonicalize(raw).log
    wire = tmp_path / "input.parquet"
    wire_frame(log).to_parquet(wire)
    out = tmp_path / "scores.parquet"
    script = tmp_path / "predict.py"
    script.write_text(PREDICT)
    result = subprocess.run(
        [str(python), "-I", str(script), registered_model.tracking_uri,
         registered_model.model_uri, str(wire), AS_OF, str(out)],
        cwd=tmp_path,
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    scorer_file = Path(result.stdout.strip().splitlines()[-1])
    assert scorer_file.parent.parent.name == "code", scorer_file  # <model>/code/serving/

    got = pd.read_parquet(out)
    expected = score(ScoringModel.load(registered_model.artifact), log, AS_OF)
    assert list(got.columns) == list(SCORE_COLUMNS)
    assert len(got) == len(expected) > 100
    assert got["customer_id"].astype(str).tolist() == expected["customer_id"].astype(str).tolist()
    for column in NUMBER_COLUMNS:
        np.testing.assert_allclose(
            got[column].to_numpy(), expected[column].to_numpy(), rtol=1e-12, atol=1e-12,
            err_msg=column,
        )  # fmt: skip
    for column in ("segment", "risk_band", "offer", "reason_1"):
        assert got[column].astype(str).tolist() == expected[column].astype(str).tolist(), column
