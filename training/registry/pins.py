"""The one source of pins, and the requirement list both deployable artifacts install.

``training/constraints.txt`` (package data: an installed retain has it too) pins every package of retain's environment (the
full transitive set ``make venv`` installs with). It is the only place a version is written:
``pyproject.toml`` and ``bentofile.yaml`` repeat pins that a test compares with it, and the
bento's and the MLflow model's requirements are generated from it when they are built.

Why the whole closure and not just the direct packages: a requirement list of direct pins
lets pip pick the newest transitive releases on the day an artifact is installed, so the
same artifact would run on different code depending on when its environment was built. The
closure of :data:`RUNTIME_PACKAGES` is read from the installed packages' own metadata
(markers evaluated for the building interpreter and platform) and every member must be
pinned in ``constraints.txt``.

The bento and the MLflow model get the same list, so one environment runs both (the
pyfunc does not need BentoML, but one set to audit and install is worth the extra package).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata, resources
from importlib.resources.abc import Traversable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS_FILE: Traversable = resources.files("training") / "constraints.txt"

# What the scoring code imports when it runs from an artifact (the HTTP service, the pyfunc,
# model resolution from the registry); the CLI's extras (dask, typer, rich, matplotlib)
# stay out. lleaves and llvmlite are listed although scoring falls back to LightGBM without
# them: compiled trees make the pyfunc's predictions about 10x faster. The ADBC PostgreSQL
# driver serves ``/score/ids`` from the database (``RETAIN_HISTORY_URL``) in a deployed bento.
RUNTIME_PACKAGES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "lightgbm",
    "lleaves",
    "llvmlite",
    "mlflow",
    "bentoml",
    "pydantic",
    "pyyaml",
    "prometheus-client",
    "adbc-driver-manager",
    "adbc-driver-postgresql",
)


class PinError(ValueError):
    """A package is unpinned, pinned twice, or installed at another version than its pin."""


def read_pins(path: Traversable = CONSTRAINTS_FILE) -> dict[str, str]:
    """``{canonical name: "Name==version"}`` from a constraints file of ``==`` pins only."""
    if not path.is_file():
        raise PinError(f"{path} not found: retain is installed without its package data")
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.marker or req.extras:
            raise PinError(f"{path.name}:{number}: {line!r} is not a plain NAME==VERSION pin")
        key = canonicalize_name(req.name)
        if key in pins:
            raise PinError(f"{path.name}:{number}: {req.name} is pinned twice")
        pins[key] = f"{req.name}=={specs[0].version}"
    return pins


def pin_version(pins: Mapping[str, str], name: str) -> str:
    """The pinned version of ``name``; a clear error when it has no pin."""
    pin = pins.get(canonicalize_name(name))
    if pin is None:
        raise PinError(f"{name} is not pinned in {CONSTRAINTS_FILE.name}")
    return pin.split("==", 1)[1]


def direct_requirements(
    packages: Iterable[str] = RUNTIME_PACKAGES, pins: Mapping[str, str] | None = None
) -> list[str]:
    """``name==version`` for each package, versions from ``constraints.txt``."""
    pins = read_pins() if pins is None else pins
    return [f"{name}=={pin_version(pins, name)}" for name in packages]


def runtime_requirements(
    packages: Iterable[str] = RUNTIME_PACKAGES, pins: Mapping[str, str] | None = None
) -> list[str]:
    """The pinned closure of ``packages``: every distribution they need, sorted by name.

    Raises :class:`PinError` when a needed distribution is not pinned, or is installed at
    another version than its pin (its metadata would then describe other dependencies).
    """
    pins = read_pins() if pins is None else pins
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in packages]
    done: set[tuple[str, frozenset[str]]] = set()
    needed: set[str] = set()
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in done:
            continue
        done.add((key, extras))
        version = pin_version(pins, name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise PinError(f"{name} is pinned but not installed; run `make venv`") from exc
        if dist.version != version:
            raise PinError(
                f"{name} is installed at {dist.version} but pinned at {version} in "
                f"{CONSTRAINTS_FILE.name}; run `make venv`"
            )
        needed.add(key)
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = extras or frozenset({""})
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((req.name, frozenset(canonicalize_name(e) for e in req.extras)))
    return [pins[key] for key in sorted(needed)]
