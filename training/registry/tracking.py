"""MLflow experiment tracking: what one training run records.

Runs go to the store :func:`training.registry.tracking_store.configure_tracking` chose at start-up.
A run records everything needed to trust and reproduce a model: its parameters, a
fingerprint of the exact purchase log (``features.log.fingerprint``, also the digest of the
run's MLflow input dataset, so the registry can tell whether two runs were evaluated on
the same data), every backtest metric for the model *and* the baselines, the
plots, the feature importance, and the packaged artifact as an MLflow pyfunc (models from
code, so no pickle is ever written). ``training`` never imports ``serving``: the caller
passes the path of the pyfunc code file.

The pyfunc loads wherever its requirements are installed: retain's packages travel in its
``code/`` directory, and its ``requirements.txt`` is the pinned closure from
:mod:`training.registry.pins` (passed explicitly, so MLflow does not spend seconds inferring an
incomplete list).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from features.log.fingerprint import log_fingerprint
from features.log.schema import CANONICAL_COLUMNS
from features.sources.database_log import DatabaseLog
from training.artifact import manifest_sha256
from training.registry.pins import runtime_requirements
from training.registry.tracking_store import ensure_experiment
from training.registry.versions import MANIFEST_TAG

DATASET_NAME = "purchase_log"
MODEL_NAME_IN_RUN = "model"
# retain's own code travels with the MLflow model (``code_paths``), so loading it needs
# only the pinned requirements, not an installed retain.
CODE_PACKAGES: tuple[str, ...] = ("features", "training", "serving")
_SIGNATURE_TYPES: dict[str, str] = {
    "customer_id": "string",
    "timestamp": "datetime",
    "amount": "double",
    "quantity": "double",
    "order_id": "string",
    "product_id": "string",
    "category": "string",
    "discount": "boolean",
    "channel": "string",
    "is_return": "boolean",
}
_REQUIRED_INPUTS = frozenset({"customer_id", "timestamp", "amount"})


@dataclass(frozen=True)
class DataFingerprint:
    """What identifies a purchase log: size, span and its content fingerprint.

    ``fingerprint`` is :func:`features.log.fingerprint.log_fingerprint` (defined by retain,
    independent of row order); it is also the digest of the run's MLflow dataset.
    """

    rows: int
    customers: int
    first_timestamp: str
    last_timestamp: str
    fingerprint: str

    def as_params(self) -> dict[str, str]:
        return {f"data.{k}": str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TrainingRun:
    """Where one training run landed in MLflow."""

    run_id: str
    experiment_id: str
    model_uri: str
    model_id: str | None


def data_fingerprint(log: pd.DataFrame) -> DataFingerprint:
    """Fingerprint a canonical log: its size, span and content digest."""
    if log.empty:
        raise ValueError("cannot fingerprint an empty purchase log")
    ts = log["timestamp"]
    return DataFingerprint(
        rows=len(log),
        customers=int(log["customer_id"].nunique()),
        first_timestamp=pd.Timestamp(ts.min()).isoformat(),
        last_timestamp=pd.Timestamp(ts.max()).isoformat(),
        fingerprint=log_fingerprint(log),
    )


def training_dataset(fp: DataFingerprint, source: str | Path | DatabaseLog | None) -> MetaDataset:
    """The run's MLflow dataset: the purchase log, its digest the data fingerprint.

    Only metadata is logged (name, digest, source, the canonical schema), never the rows.
    ``source`` is the file the log was read from, or the database table or query (recorded
    with its URL's password masked); None for an in-memory DataFrame.
    """
    origin: DatasetSource
    if source is None:
        origin = CodeDatasetSource(tags={"retain.source": "in-memory DataFrame"})
    elif isinstance(source, DatabaseLog):
        origin = CodeDatasetSource(tags={"retain.source": str(source)})
    else:
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice and warns that the URI is
            # ambiguous between the two (identical) classes
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            origin = resolve_dataset_source(Path(source).absolute().as_uri())
    # MLflow declares ``profile`` abstract yet builds MetaDataset itself: it is concrete
    return MetaDataset(  # type: ignore[abstract]
        origin, name=DATASET_NAME, digest=fp.fingerprint, schema=model_signature().inputs
    )


def model_signature() -> ModelSignature:
    """Input: a canonical purchase log; params: an optional ``as_of`` (ISO timestamp)."""
    inputs = Schema(
        [ColSpec(_SIGNATURE_TYPES[c], c, required=c in _REQUIRED_INPUTS) for c in CANONICAL_COLUMNS]
    )
    params = ParamSchema([ParamSpec("as_of", "string", "")])
    return ModelSignature(inputs=inputs, params=params)


def wire_frame(log: pd.DataFrame) -> pd.DataFrame:
    """A canonical log in the plain dtypes the pyfunc signature accepts.

    MLflow's schema enforcement only takes tz-naive datetimes and plain strings, so ids
    become ``object`` strings, timestamps naive UTC and missing strings ``None`` (what a
    JSON client sends anyway). ``serving.pyfunc_model`` restores the canonical dtypes.
    """
    out = pd.DataFrame(index=pd.RangeIndex(len(log)))
    for column in CANONICAL_COLUMNS:
        if column not in log.columns:
            continue
        values = log[column].reset_index(drop=True)
        if column == "timestamp":
            out[column] = values.dt.tz_convert("UTC").dt.tz_localize(None)
        elif _SIGNATURE_TYPES[column] == "string":
            out[column] = values.astype("object").where(values.notna(), None)
        else:
            out[column] = values
    return out


def input_example(log: pd.DataFrame, n_rows: int = 5) -> pd.DataFrame:
    """A few rows of the log in wire form, stored with the model as its input example."""
    return wire_frame(log.head(n_rows))


def flatten_metrics(backtest: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{"model": {"churn_auc": .8}}`` -> ``{"model.churn_auc": .8}``; non-numbers dropped."""
    flat: dict[str, float] = {}
    for method, metrics in backtest.items():
        if not isinstance(metrics, Mapping):
            continue
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                continue
            flat[f"{method}.{name}"] = float(value)
    return flat


def _importance_png(importance: Mapping[str, float], path: Path, top: int = 25) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(items) + 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#3b6ea5")
    ax.set_xlabel("importance (gain share)")
    ax.set_title("Feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def copy_code_packages(destination: Path, packages: tuple[str, ...] = CODE_PACKAGES) -> list[str]:
    """Copies of retain's packages (the ones this process imports) without bytecode caches.

    Found with ``importlib`` rather than a path into the checkout, so the code that trained
    the model is the code that travels with it.
    """
    copies: list[str] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"package {name!r} not importable; cannot package its code")
        source = Path(next(iter(spec.submodule_search_locations)))
        target = destination / name
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        copies.append(str(target))
    return copies


def log_training_run(
    *,
    experiment: str,
    python_model: str | Path,
    artifact_dir: str | Path,
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    horizon_days: int,
    backtest: Mapping[str, Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    plots: Mapping[str, str | Path] | None = None,
    feature_importance: Mapping[str, float] | None = None,
    fingerprint: DataFingerprint | None = None,
    data_source: str | Path | DatabaseLog | None = None,
    summary: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    workdir: Path | None = None,
) -> TrainingRun:
    """Record one training run and its packaged model in the configured tracking store.

    ``as_of``/``horizon_days`` and ``fingerprint`` identify *the backtest* the metrics come
    from; the registry compares runs only when these match. The log is recorded as the run's
    input dataset (``mlflow.log_input``, context ``training``, digest = the fingerprint;
    ``data_source`` is the file it was read from). ``summary`` (e.g.
    ``BacktestResult.to_dict()``) is stored as JSON next to the metrics.
    """
    experiment_id = ensure_experiment(experiment, workdir=workdir)
    fp = fingerprint or data_fingerprint(log)
    flat = flatten_metrics(backtest)
    finite = {k: v for k, v in flat.items() if math.isfinite(v)}
    not_finite = sorted(set(flat) - set(finite))
    all_params: dict[str, str] = {
        "backtest.as_of": pd.Timestamp(as_of).isoformat(),
        "backtest.horizon_days": str(int(horizon_days)),
        **fp.as_params(),
        **{k: str(v) for k, v in (params or {}).items()},
    }
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run,
        tempfile.TemporaryDirectory(prefix="retain-run-") as tmp,
    ):
        run_id = run.info.run_id
        mlflow.log_params(all_params)
        mlflow.set_tags(
            {
                "retain.backtest_as_of": all_params["backtest.as_of"],
                "retain.horizon_days": all_params["backtest.horizon_days"],
                "retain.data_fingerprint": fp.fingerprint,
                "retain.nonfinite_metrics": json.dumps(not_finite),
                # the registry copies this onto the version; every registry load checks it
                MANIFEST_TAG: manifest_sha256(artifact_dir),
            }
        )
        mlflow.log_input(training_dataset(fp, data_source), context="training")
        if finite:
            mlflow.log_metrics(finite)
        mlflow.log_dict({k: dict(v) for k, v in backtest.items()}, "backtest/metrics.json")
        if summary is not None:
            mlflow.log_dict(dict(summary), "backtest/summary.json")
        for name, path in (plots or {}).items():
            src = Path(path)
            if not src.is_file():
                raise FileNotFoundError(f"plot {name!r} not found at {src}")
            mlflow.log_artifact(str(src), artifact_path="plots")
        if feature_importance:
            mlflow.log_dict(dict(feature_importance), "feature_importance/importance.json")
            png = Path(tmp) / "feature_importance.png"
            _importance_png(feature_importance, png)
            mlflow.log_artifact(str(png), artifact_path="feature_importance")
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(python_model),
            artifacts={"retain": str(Path(artifact_dir))},
            signature=model_signature(),
            input_example=input_example(log),
            code_paths=copy_code_packages(Path(tmp) / "code"),
            pip_requirements=runtime_requirements(),
        )
        mlflow.set_tag("retain.model_uri", info.model_uri)
        if getattr(info, "model_id", None):
            mlflow.set_tag("retain.model_id", info.model_id)
    return TrainingRun(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=info.model_uri,
        model_id=getattr(info, "model_id", None),
    )
