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
    manifest_sha256: str | None = None  # recorded by the registry; None for a local directory


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
    ``with`` block, then deleted. Before it is yielded, the download is checked against the
    manifest digest the registry recorded for that version (``source.manifest_sha256``,
    which callers also pass to ``load_artifact``): a re-hashed, tampered artifact fails
    here. A missing sqlite store is reported, never created.
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
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from features.redaction import redact
    from training import registry
    from training.artifact import ArtifactError, verify_artifact
    from training.tracking import TrackingStoreError, configure_tracking

    name, alias, version = parse_models_uri(model_uri)
    try:
        resolved_tracking_uri = configure_tracking(tracking_uri, create=False)
        if alias is not None:
            version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
        digest = registry.manifest_digest(str(version), name=name)
    except (TrackingStoreError, registry.RegistryError) as exc:
        raise ModelResolutionError(str(exc)) from None
    except MlflowException as exc:
        raise ModelResolutionError(f"cannot resolve {model_uri!r}: {redact(exc)}") from None
    pinned = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="retain-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=pinned, dst_path=tmp, tracking_uri=resolved_tracking_uri
        )
        artifact_dir = retain_dir_in_pyfunc(Path(local))
        try:
            verify_artifact(artifact_dir, expected_manifest_sha256=digest)
        except ArtifactError as exc:
            raise ModelResolutionError(f"{pinned} ({model_uri}): {exc}") from None
        yield (
            artifact_dir,
            ModelSource(name=name, version=str(version), uri=model_uri, manifest_sha256=digest),
        )
