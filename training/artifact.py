"""The packaged model artifact: one directory that is everything a scorer needs.

Layout::

    retain_artifact.json     manifest (format, versions, configs incl. the log config the
                             training data was read with, schema, metrics, sha256s)
    offer_policy.yaml        the offer policy, as YAML text (validated by serving on load)
    models/...               what ``RetainModels.save`` writes: LightGBM text + JSON only
    uplift/...               optional: what ``UpliftModel.save`` writes (LightGBM text + JSON),
                             added to a copy of an artifact by :func:`add_uplift`

Why so strict on load: an artifact may come from a registry or a colleague's laptop, and
loading must never execute code. So only ``.txt``/``.json``/``.yaml`` files are accepted,
every file must be listed in the manifest with a matching sha256, and pickles, symlinks and
paths escaping the directory are refused. ``training`` never imports ``serving``: the
policy travels as YAML text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from features.atomic import new_directory, sha256_file
from features.errors import UserError
from features.log.schema import CANONICAL_COLUMNS, TIMESTAMP_DTYPE, LogConfig
from training.version import retain_commit, retain_version

if TYPE_CHECKING:  # imported lazily at run time: heavy, and avoids cycles
    from features.builders import FeatureConfig
    from features.retention.segments import SegmentConfig
    from training.models.bundle import RetainModels
    from training.models.uplift import UpliftModel

FORMAT_NAME = "retain-artifact"
FORMAT_VERSION = 1
MANIFEST_NAME = "retain_artifact.json"
POLICY_NAME = "offer_policy.yaml"
MODELS_DIR = "models"
UPLIFT_DIR = "uplift"
ALLOWED_SUFFIXES: frozenset[str] = frozenset({".txt", ".json", ".yaml"})
PICKLE_SUFFIXES: frozenset[str] = frozenset({".pkl", ".pickle", ".joblib", ".cloudpickle"})
PICKLE_MAGIC = b"\x80"
CANONICAL_DTYPES: dict[str, str] = {
    "customer_id": "category",
    "timestamp": TIMESTAMP_DTYPE,
    "amount": "float64",
    "quantity": "float64",
    "order_id": "str",
    "product_id": "str",
    "category": "str",
    "discount": "bool",
    "channel": "str",
    "is_return": "bool",
}
_LIBRARIES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "lightgbm",
    "scikit-learn",
    "scipy",
    "pydantic",
    "pyyaml",
)


Config = TypeVar("Config")


class ArtifactError(UserError, ValueError):
    """The artifact directory is missing, malformed, tampered with or unsafe to load."""


@dataclass(frozen=True)
class RetainArtifact:
    """A loaded, hash-checked artifact."""

    models: RetainModels
    feature_config: FeatureConfig  # always the models' own (checked on load)
    segment_config: SegmentConfig | None
    policy_yaml: str
    manifest: dict[str, Any]
    log_config: LogConfig = field(default_factory=LogConfig)
    uplift: UpliftModel | None = None  # None when the artifact has none

    @property
    def horizon_days(self) -> int:
        return int(self.manifest["horizon_days"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics") or {})


def input_schema() -> list[dict[str, str]]:
    """The canonical purchase-log columns and dtypes a scorer of this artifact accepts."""
    return [{"name": c, "dtype": CANONICAL_DTYPES[c]} for c in CANONICAL_COLUMNS]


def _config_to_json(config: object) -> Any:
    """Pydantic models and dataclasses to plain JSON values (``None`` means defaults)."""
    if config is None:
        return None
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return json.loads(json.dumps(dataclasses.asdict(config), default=str))
    raise ArtifactError(
        f"cannot serialise config of type {type(config).__name__}; expected a pydantic model "
        "or a dataclass"
    )


def _config_from_json(cls: type[Config], value: Any, what: str) -> Config | None:  # value: JSON
    if value is None:
        return None
    try:
        if issubclass(cls, BaseModel):
            return cls.model_validate(value)
        # a dataclass (pydantic models returned above); mypy cannot tell from a bare type
        fields = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise ArtifactError(f"{what} in manifest has unknown field(s) {unknown}")
        return cls(**kwargs)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{what} in manifest is invalid: {exc}") from exc


def _library_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_artifact(
    directory: str | Path,
    models: RetainModels,
    *,
    segment_config: SegmentConfig | None,
    feature_config: FeatureConfig | None = None,
    policy_yaml: str,
    metrics: dict[str, Any] | None = None,
    created_at: datetime | None = None,
    log_config: LogConfig | None = None,
) -> Path:
    """Write a fitted ``RetainModels`` and its configs as one artifact directory.

    ``log_config`` is the config the training log was read with (default: ``LogConfig()``);
    it is stored in the manifest so every scorer of the artifact counts rows the same way.
    The feature config stored is the models' own (``models.feature_config``): a scorer builds
    the features the models were trained on. ``feature_config``, when given, must equal it.

    Everything is written to a temporary sibling directory first and moved into place in one
    rename (:func:`features.atomic.new_directory`), so readers never see a half-written
    artifact. ``directory`` must not exist yet (or be empty): artifacts are immutable.
    """
    target = _new_target(directory)
    if feature_config is not None and feature_config != models.feature_config:
        raise ArtifactError(
            f"feature_config {feature_config!r} disagrees with the models' "
            f"{models.feature_config!r} (trained for a {models.horizon_days}-day horizon)"
        )
    if not isinstance(policy_yaml, str) or not policy_yaml.strip():
        raise ArtifactError("policy_yaml must be the offer policy as non-empty YAML text")
    with new_directory(target) as tmp:
        models_dir = tmp / MODELS_DIR
        models_dir.mkdir()
        models.save(models_dir)
        (tmp / POLICY_NAME).write_text(policy_yaml, encoding="utf-8")
        files: dict[str, str] = {}
        for path in sorted(p for p in tmp.rglob("*") if not p.is_dir()):
            rel = path.relative_to(tmp).as_posix()
            if path.is_symlink() or path.suffix not in ALLOWED_SUFFIXES:
                raise ArtifactError(
                    f"models.save wrote {rel!r}; an artifact may only hold regular "
                    f"{sorted(ALLOWED_SUFFIXES)} files"
                )
            files[rel] = sha256_file(path)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_at": (created_at or datetime.now(UTC)).isoformat(),
            "retain_version": retain_version(),
            "retain_commit": retain_commit(),
            "libraries": _library_versions(),
            "horizon_days": int(models.horizon_days),
            "feature_config": _config_to_json(models.feature_config),
            "segment_config": _config_to_json(segment_config),
            "log_config": _config_to_json(log_config or LogConfig()),
            "policy_file": POLICY_NAME,
            "models_dir": MODELS_DIR,
            "input_schema": input_schema(),
            "metrics": json.loads(json.dumps(metrics or {}, default=float)),
            "files": files,
        }
        _write_manifest(tmp, manifest)
    return target


def _new_target(directory: str | Path) -> Path:
    """The absolute target of a new artifact; it must not exist yet, or be empty.

    Resolved as the file system does (``sub/../ART`` is ``ART``, whether or not ``sub``
    exists), so the emptiness check and the final move look at the same directory.
    """
    target = Path(directory).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ArtifactError(f"{target} already exists and is not empty; artifacts are immutable")
    return target


def add_uplift(
    source: str | Path,
    uplift: UpliftModel,
    directory: str | Path,
    *,
    uplift_metadata: dict[str, Any] | None = None,
) -> Path:
    """A new artifact: every file of ``source``, byte for byte, plus ``uplift``'s files.

    Why a copy and not ``save_artifact`` again: the churn, timing and spend models stay the
    very bytes that were validated and registered (the manifest keeps their sha256s), and
    ``source`` is never modified. ``source`` is hash-checked first; an uplift model it
    already holds is replaced. The manifest gains ``uplift_dir`` and an ``uplift`` entry
    (``uplift_metadata``: what it was trained on); every other field is kept as it was.
    """
    manifest = verify_artifact(source)
    root = Path(source)
    target = _new_target(directory)
    old_uplift = manifest.get("uplift_dir")
    kept = {
        rel: digest
        for rel, digest in manifest["files"].items()
        if old_uplift is None or not PurePosixPath(rel).is_relative_to(old_uplift)
    }
    with new_directory(target) as tmp:
        for rel in kept:
            path = tmp / PurePosixPath(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_check_listed_path(root, rel), path)
            if sha256_file(path) != kept[rel]:
                raise ArtifactError(f"{rel!r} changed while it was copied from {root}")
        uplift.save(tmp / UPLIFT_DIR, metadata=uplift_metadata)
        files = dict(kept)
        for path in sorted(p for p in (tmp / UPLIFT_DIR).rglob("*") if not p.is_dir()):
            rel = path.relative_to(tmp).as_posix()
            if path.is_symlink() or path.suffix not in ALLOWED_SUFFIXES:
                raise ArtifactError(f"uplift.save wrote {rel!r}; only text and JSON are allowed")
            files[rel] = sha256_file(path)
        manifest = {
            **manifest,
            "uplift_dir": UPLIFT_DIR,
            "uplift": json.loads(json.dumps(uplift_metadata or {}, default=float)),
            "files": files,
        }
        _write_manifest(tmp, manifest)
    return target


def _write_manifest(tmp: Path, manifest: dict[str, Any]) -> None:
    """The manifest, written last: the staging directory is then complete."""
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def manifest_sha256(directory: str | Path) -> str:
    """sha256 of an artifact's manifest file: one digest that pins every file it lists.

    The manifest holds each file's sha256, so whoever records this digest *outside* the
    artifact (the registry, a bento) can tell a re-hashed, tampered copy from the original.
    """
    path = Path(directory) / MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(
            f"{Path(directory)} is not a retain artifact: {MANIFEST_NAME} not found"
        )
    return sha256_file(path)


def _read_manifest(root: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    manifest_path = root / MANIFEST_NAME
    if manifest_path.is_symlink():
        raise ArtifactError(f"{manifest_path} is a symlink; refusing to load")
    if not manifest_path.is_file():
        raise ArtifactError(f"{root} is not a retain artifact: {MANIFEST_NAME} not found")
    raw = manifest_path.read_bytes()  # hashed and parsed from the same bytes
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise ArtifactError(
                f"{MANIFEST_NAME} has sha256 {actual} but {expected_sha256} was recorded when "
                "the artifact was registered: the artifact was modified; refusing to load"
            )
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{manifest_path}: format is {got!r}, expected {FORMAT_NAME!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not "
            f"supported (this retain reads version {FORMAT_VERSION})"
        )
    if not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{manifest_path}: 'files' must map relative paths to sha256")
    return manifest


def _check_listed_path(root: Path, rel: str) -> Path:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not rel:
        raise ArtifactError(f"manifest path {rel!r} escapes the artifact directory")
    path = root / pure
    if path.is_symlink():
        raise ArtifactError(f"{rel!r} is a symlink; artifacts may not contain symlinks")
    if not path.resolve().is_relative_to(root.resolve()):
        raise ArtifactError(f"manifest path {rel!r} escapes the artifact directory")
    return path


def verify_artifact(
    directory: str | Path, expected_manifest_sha256: str | None = None
) -> dict[str, Any]:
    """Check an artifact directory file by file without loading models; return its manifest.

    ``expected_manifest_sha256`` is the digest recorded outside the artifact (see
    :func:`manifest_sha256`); without it only the artifact's own consistency is checked.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} does not exist")
    manifest = _read_manifest(root, expected_manifest_sha256)
    listed: dict[str, str] = manifest["files"]
    for rel in listed:
        _check_listed_path(root, rel)

    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise ArtifactError(f"{rel!r} is a symlink; artifacts may not contain symlinks")
            if path.is_dir():
                continue
            if rel == MANIFEST_NAME:
                continue
            suffix = path.suffix.lower()
            if suffix in PICKLE_SUFFIXES:
                raise ArtifactError(f"{rel!r} is a pickle file; retain never loads pickles")
            if suffix not in ALLOWED_SUFFIXES:
                raise ArtifactError(
                    f"{rel!r} has extension {suffix or '(none)'!r}; only "
                    f"{sorted(ALLOWED_SUFFIXES)} are allowed"
                )
            if rel not in listed:
                raise ArtifactError(f"{rel!r} is not listed in the manifest; refusing to load")
            with path.open("rb") as fh:
                if fh.read(1) == PICKLE_MAGIC:
                    raise ArtifactError(
                        f"{rel!r} starts with the pickle magic byte 0x80; refusing to load"
                    )
            actual = sha256_file(path)
            if actual != listed[rel]:
                raise ArtifactError(
                    f"sha256 mismatch for {rel!r}: manifest {listed[rel]}, file {actual}"
                )
            seen.add(rel)
    missing = sorted(set(listed) - seen)
    if missing:
        raise ArtifactError(f"file(s) listed in the manifest are missing: {missing}")
    return manifest


def load_artifact(
    directory: str | Path, expected_manifest_sha256: str | None = None
) -> RetainArtifact:
    """Verify every file of an artifact directory, then load its models and configs.

    Pass ``expected_manifest_sha256`` whenever the artifact comes from somewhere that
    recorded it (a registered version): that is what catches a tampered, re-hashed copy.
    """
    from features.builders import FeatureConfig
    from features.retention.segments import SegmentConfig
    from training.models.bundle import RetainModels

    root = Path(directory)
    manifest = verify_artifact(root, expected_manifest_sha256)
    policy_rel = manifest.get("policy_file", POLICY_NAME)
    policy_path = _check_listed_path(root, policy_rel)
    if policy_rel not in manifest["files"]:
        raise ArtifactError(f"policy file {policy_rel!r} is not listed in the manifest")
    models_rel = manifest.get("models_dir", MODELS_DIR)
    models_dir = _check_listed_path(root, models_rel)
    if not models_dir.is_dir():
        raise ArtifactError(f"models directory {models_rel!r} not found in {root}")
    models = RetainModels.load(models_dir)
    uplift = None
    uplift_rel = manifest.get("uplift_dir")
    if uplift_rel is not None:  # optional: artifacts without an uplift model load as before
        from training.models.uplift import UpliftModel

        uplift_dir = _check_listed_path(root, uplift_rel)
        if not uplift_dir.is_dir():
            raise ArtifactError(f"uplift directory {uplift_rel!r} not found in {root}")
        try:
            uplift = UpliftModel.load(uplift_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"uplift model in {uplift_rel!r} cannot be loaded: {exc}") from exc
    if int(models.horizon_days) != int(manifest["horizon_days"]):
        raise ArtifactError(
            f"models horizon {models.horizon_days} != manifest horizon_days "
            f"{manifest['horizon_days']}"
        )
    feature_config = _config_from_json(
        FeatureConfig, manifest.get("feature_config"), "feature_config"
    )
    if feature_config is not None and feature_config != models.feature_config:
        raise ArtifactError(
            f"the manifest's feature_config (horizon_days {feature_config.horizon_days}) "
            f"disagrees with the models' (horizon_days {models.feature_config.horizon_days}): "
            "the artifact's parts were not saved together; refusing to load"
        )
    return RetainArtifact(
        models=models,
        feature_config=models.feature_config,
        segment_config=_config_from_json(
            SegmentConfig, manifest.get("segment_config"), "segment_config"
        ),
        policy_yaml=policy_path.read_text(encoding="utf-8"),
        manifest=manifest,
        # artifacts written before the log config was recorded were read with the defaults
        log_config=_config_from_json(LogConfig, manifest.get("log_config"), "log_config")
        or LogConfig(),
        uplift=uplift,
    )
