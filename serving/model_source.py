"""Where a served or batch-scored model comes from: a bento, an artifact directory or the
registry.

Registry models are named by alias or version (``models:/retain@champion``,
``models:/retain/3``), never "latest". An alias is pinned to one version before download,
so an alias moving mid-download cannot mix two versions.

A bento built by ``retain bento`` carries its model in BentoML's model store
(``bentoml:<name>:<version>``, under the bento's model alias :data:`BENTO_MODEL_ALIAS`).
A service started from such a bento loads that model by default, so the bento serves the
same model whenever and wherever it starts, with no tracking server; ``RETAIN_MODEL_URI``
still points it at the registry or a directory instead.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from features.errors import UserError

BENTO_MODEL_SCHEME = "bentoml:"
BENTO_MODEL_ALIAS = "retain"
# keys of the BentoML model's metadata (see serving.http.bento.bento_model_metadata)
MLFLOW_NAME_KEY = "mlflow_model_name"
MLFLOW_VERSION_KEY = "mlflow_model_version"
DIGEST_KEY = "manifest_sha256"
ARTIFACT_SUBDIR = "retain"


class ModelResolutionError(UserError, RuntimeError):
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
            "training.registry.tracking.log_training_run"
        )
    path = (model_dir / entry["path"]).resolve()
    if not path.is_relative_to(model_dir.resolve()) or not path.is_dir():
        raise ModelResolutionError(f"'retain' artifact path {entry['path']!r} is not usable")
    return path


def logged_model_digest(artifact_dir: Path) -> str:
    """The manifest digest recorded for the logged model that holds ``artifact_dir``.

    ``mlflow.pyfunc.load_model("models:/retain/3")`` gives the model only its downloaded
    files; the run id in the model's ``MLmodel`` says which run logged it, and the digest
    comes from the tracking store (the run's tag and every registered version's copy), never
    from the download itself, so a re-hashed tampered copy is refused here too.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from features.redaction import redact
    from training.registry import versions as registry

    root = next((p for p in Path(artifact_dir).parents if (p / "MLmodel").is_file()), None)
    if root is None:
        raise ModelResolutionError(f"{artifact_dir} is not inside an MLflow model (no MLmodel)")
    run_id = Model.load(str(root)).run_id
    if not run_id:
        raise ModelResolutionError(
            f"MLflow model at {root} names no run, so its artifact cannot be checked against "
            "a recorded digest; log it with training.registry.tracking.log_training_run"
        )
    try:
        return registry.run_manifest_digest(str(run_id))
    except registry.RegistryError as exc:
        raise ModelResolutionError(str(exc)) from None
    except MlflowException as exc:
        raise ModelResolutionError(
            f"cannot read the digest recorded for run {run_id}: {redact(exc)}"
        ) from None


def bento_model_uri() -> str | None:
    """``bentoml:<tag>`` of the model the bento being served carries, if it carries one.

    BentoML maps the bento's model aliases to exact tags when it loads a bento; outside a
    bento (``retain serve`` from a checkout) the map is empty.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    tag = BentoMLContainer.model_aliases.get().get(BENTO_MODEL_ALIAS)
    return f"{BENTO_MODEL_SCHEME}{tag}" if tag else None


def default_model_uri(registered_model: str) -> str:
    """The bento's own model when there is one, else the registry's champion."""
    return bento_model_uri() or f"models:/{registered_model}@champion"


def bento_model_artifact(model_uri: str) -> tuple[Path, ModelSource]:
    """The artifact directory inside a BentoML model, its digest checked against the one
    recorded when the bento was built.

    The store's own ``model.yaml`` sits next to the files it describes, so whoever can edit
    one can edit the other; the model's *tag*, which the bento names in its own
    ``bento.yaml``, carries the digest's first 16 hex digits
    (:func:`serving.http.bento.bento_model_version`), and the stored digest must agree with
    both the tag and the files.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    from training.artifact import ArtifactError, manifest_sha256

    tag = model_uri.removeprefix(BENTO_MODEL_SCHEME)
    try:
        stored = bentoml.models.get(tag)
    except NotFound as exc:
        raise ModelResolutionError(f"BentoML model {tag!r} not found in the model store") from exc
    meta = dict(stored.info.metadata)
    recorded: object = meta.get(DIGEST_KEY)  # metadata values are any JSON value
    path = Path(stored.path_of(ARTIFACT_SUBDIR))
    try:
        actual = manifest_sha256(path)
    except ArtifactError as exc:
        raise ModelResolutionError(f"BentoML model {tag}: {exc}") from exc
    if not recorded or actual != recorded:
        raise ModelResolutionError(
            f"BentoML model {tag}: manifest sha256 {actual} does not match the digest "
            f"recorded at build time ({recorded or 'none'})"
        )
    named = tag_digest_prefix(str(stored.tag.version))
    if named is None or not actual.startswith(named):
        raise ModelResolutionError(
            f"BentoML model {tag}: manifest sha256 {actual} does not match the digest its "
            f"tag names ({named or 'none'}); the model store was modified after the build"
        )
    source = ModelSource(
        name=str(meta.get(MLFLOW_NAME_KEY, stored.tag.name)),
        version=str(meta.get(MLFLOW_VERSION_KEY, stored.tag.version)),
        uri=model_uri,
    )
    return path, source


def tag_digest_prefix(version: str) -> str | None:
    """The digest prefix a bento model version ``v<N>-<16 hex>`` names (None if it names none)."""
    _, sep, prefix = version.rpartition("-")
    if not sep or len(prefix) != 16 or not set(prefix) <= set("0123456789abcdef"):
        return None
    return prefix


@contextlib.contextmanager
def resolved_artifact(
    model_uri: str, tracking_uri: str | None = None
) -> Iterator[tuple[Path, ModelSource]]:
    """(artifact directory, source) for a local directory, a ``bentoml:`` or a ``models:/``
    URI.

    Registry models are downloaded to a temporary directory that lives as long as the
    ``with`` block, then deleted. Before it is yielded, the download is checked against the
    manifest digest the registry recorded for that version (``source.manifest_sha256``,
    which callers also pass to ``load_artifact``): a re-hashed, tampered artifact fails
    here. A missing sqlite store is reported, never created.
    """
    if model_uri.startswith(BENTO_MODEL_SCHEME):
        yield bento_model_artifact(model_uri)
        return
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
    from training.artifact import ArtifactError, verify_artifact
    from training.registry import versions as registry
    from training.registry.tracking_store import TrackingStoreError, configure_tracking

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
