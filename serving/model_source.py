"""Where a served or batch-scored model comes from: an artifact directory or the registry.

Registry models are named by alias or version (``models:/retain@champion``,
``models:/retain/3``), never "latest". An alias is pinned to one version before download,
so an alias moving mid-download cannot mix two versions.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ModelResolutionError(RuntimeError):
    """The configured model URI cannot be resolved to a retain artifact."""


@dataclass(frozen=True)
class ModelSource:
    """What was resolved: registered model name and version ("local" for a directory)."""

    name: str
    version: str
    uri: str


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` or ``models:/name/version`` -> (name, alias, version)."""
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias and "/" not in alias:
            return name, alias, None
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise ModelResolutionError(
        f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
    )


def retain_dir_in_pyfunc(model_dir: Path) -> Path:
    """Where the pyfunc model keeps its ``retain`` artifact (read from ``MLmodel``)."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ModelResolutionError(f"{model_dir} has no MLmodel file; not an MLflow model")
    spec = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    artifacts = (spec.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
    entry = artifacts.get("retain")
    if not isinstance(entry, dict) or not entry.get("path"):
        raise ModelResolutionError(
            f"MLflow model at {model_dir} has no 'retain' artifact; log it with "
            "training.tracking.log_training_run"
        )
    path = (model_dir / entry["path"]).resolve()
    if not path.is_relative_to(model_dir.resolve()) or not path.is_dir():
        raise ModelResolutionError(f"'retain' artifact path {entry['path']!r} is not usable")
    return path


@contextlib.contextmanager
def resolved_artifact(
    model_uri: str, tracking_uri: str | None = None
) -> Iterator[tuple[Path, ModelSource]]:
    """(artifact directory, source) for a local directory or a ``models:/`` URI.

    Registry models are downloaded to a temporary directory that lives as long as the
    ``with`` block, then deleted. The caller hash-checks the directory when it loads it.
    """
    if not model_uri.startswith("models:/"):
        path = Path(model_uri).expanduser()
        if not path.is_dir():
            raise ModelResolutionError(
                f"model {model_uri!r} is neither models:/... nor an artifact directory"
            )
        yield path, ModelSource(name=path.name, version="local", uri=str(path.absolute()))
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    from training.tracking import configure_tracking

    resolved_tracking_uri = configure_tracking(tracking_uri)
    name, alias, version = parse_models_uri(model_uri)
    if alias is not None:
        version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
    with tempfile.TemporaryDirectory(prefix="retain-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=tmp,
            tracking_uri=resolved_tracking_uri,
        )
        yield (
            retain_dir_in_pyfunc(Path(local)),
            ModelSource(name=name, version=str(version), uri=model_uri),
        )
