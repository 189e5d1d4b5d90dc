"""``retain bento``: one immutable, self-contained bento that carries its model.

Why not ``bentoml build`` alone: it copies sources and pins, but the model would still be
resolved from the registry when the bento starts, so one bento could serve different models
and could not start without the tracking server. Here the resolved artifact (hash-checked)
is saved in BentoML's model store with the MLflow name and version and the artifact's
manifest sha256 in its metadata, and the bento references it under the model alias
:data:`serving.model_source.BENTO_MODEL_ALIAS`; the service loads it from there and checks
the digest again (:func:`serving.model_source.bento_model_artifact`).

The rest of the recipe is ``serving/http/bentofile.yaml`` (service, whole-package sources,
environment; package data, so an installed retain builds bentos too), with its Python
packages replaced by the pinned closure from :mod:`training.registry.pins`, the same requirement
list the MLflow model carries. The sources are copied from wherever ``features``,
``training`` and ``serving`` are imported from (a checkout or site-packages) into a
temporary build context holding nothing else.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import typer

from features.cli_options import ModelUriOption, TrackingUriOption
from serving.model_source import (
    ARTIFACT_SUBDIR,
    BENTO_MODEL_ALIAS,
    DIGEST_KEY,
    MLFLOW_NAME_KEY,
    MLFLOW_VERSION_KEY,
    ModelSource,
    resolved_artifact,
)

BENTOFILE: Traversable = resources.files("serving.http") / "bentofile.yaml"
SOURCE_PACKAGES: tuple[str, ...] = ("features", "training", "serving")
BENTO_MODEL_NAME = "retain-model"


class BentoBuildError(RuntimeError):
    """The bento cannot be built as asked (bad recipe, or a model tag reused for other bytes)."""


@dataclass(frozen=True)
class BuiltBento:
    """What ``retain bento`` made: the bento's tag, its model's tag and the model's digest."""

    bento_tag: str
    model_tag: str
    digest: str
    source: ModelSource


def bento_model_metadata(source: ModelSource, digest: str) -> dict[str, str]:
    """What a bento's model records about its origin (never the tracking URI: it may hold
    credentials)."""
    return {
        MLFLOW_NAME_KEY: source.name,
        MLFLOW_VERSION_KEY: source.version,
        DIGEST_KEY: digest,
    }


def bento_model_version(source: ModelSource, digest: str) -> str:
    """A BentoML model version naming the MLflow version and the digest: the same artifact
    always gets the same tag, so rebuilding reuses the stored model."""
    version = source.version if source.version.isdigit() else "local"
    return f"v{version}-{digest[:16]}"


def read_bentofile(path: Traversable = BENTOFILE) -> dict[str, Any]:
    """The build recipe (``serving/http/bentofile.yaml``, package data) as a mapping."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data.get("service"):
        raise BentoBuildError(f"{path} has no 'service'")
    return data


def store_model(path: Path, source: ModelSource) -> tuple[str, str]:
    """Save a verified artifact directory in BentoML's model store; (tag, digest).

    A model tag is written once: when it already exists, its recorded digest must match.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    from training.artifact import manifest_sha256, verify_artifact

    verify_artifact(path)
    digest = manifest_sha256(path)
    tag = f"{BENTO_MODEL_NAME}:{bento_model_version(source, digest)}"
    metadata = bento_model_metadata(source, digest)
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        if dict(existing.info.metadata).get(DIGEST_KEY) != digest:
            raise BentoBuildError(f"model {tag} exists with another digest; not overwritten")
        return str(existing.tag), digest
    with bentoml.models.create(
        tag,
        labels={"project": "retain", MLFLOW_VERSION_KEY: source.version},
        metadata=metadata,
    ) as model:
        shutil.copytree(path, model.path_of(ARTIFACT_SUBDIR))
    return str(model.tag), digest


def copy_sources(build_ctx: Path) -> None:
    """The packages the bento runs, copied from where they are imported (no bytecode)."""
    for name in SOURCE_PACKAGES:
        package = importlib.import_module(name)
        source = Path(next(iter(package.__path__)))
        shutil.copytree(
            source, build_ctx / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )


def build_bento(model_uri: str, tracking_uri: str | None = None) -> BuiltBento:
    """Resolve ``model_uri``, store its artifact as a BentoML model, build the bento."""
    import bentoml
    import yaml

    from training.registry.pins import runtime_requirements

    recipe = read_bentofile()
    with resolved_artifact(model_uri, tracking_uri) as (path, source):
        model_tag, digest = store_model(path, source)
    recipe["python"] = {
        **(recipe.get("python") or {}),
        "packages": runtime_requirements(),
        "lock_packages": False,
    }
    recipe["labels"] = {
        **(recipe.get("labels") or {}),
        MLFLOW_NAME_KEY: source.name,
        MLFLOW_VERSION_KEY: source.version,
        DIGEST_KEY: digest,
    }
    recipe["models"] = [{"tag": model_tag, "alias": BENTO_MODEL_ALIAS}]
    with tempfile.TemporaryDirectory(prefix="retain-bento-") as tmp:
        build_ctx = Path(tmp) / "src"
        copy_sources(build_ctx)
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(build_ctx))
    return BuiltBento(str(bento.tag), model_tag, digest, source)


def bento(
    model_uri: ModelUriOption = "models:/retain@champion",
    tracking_uri: TrackingUriOption = None,
    export: Path | None = typer.Option(
        None, "--export", help="Also write the bento (with its model) to this .bento file."
    ),
) -> None:
    """Build one bento that carries the model; serve it with `bentoml serve <tag>`."""
    import bentoml
    from mlflow.exceptions import MlflowException

    from serving.model_source import ModelResolutionError
    from training.artifact import ArtifactError

    try:
        built = build_bento(model_uri, tracking_uri)
    except (ModelResolutionError, ArtifactError, BentoBuildError, MlflowException) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        typer.echo(f"retain bento: {model_uri}: {message}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"model {built.source.name} version {built.source.version} "
        f"(manifest sha256 {built.digest}) stored as {built.model_tag}",
        err=True,
    )
    if export is not None:
        written = bentoml.bentos.export_bento(built.bento_tag, str(export.absolute()))
        typer.echo(f"exported to {written}", err=True)
    typer.echo(built.bento_tag)


def register(app: typer.Typer) -> None:
    """Add ``retain bento`` to the root app."""
    app.command("bento")(bento)
