"""One source of pins: training/constraints.txt. Every other place that names a version agrees."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from training.registry.pins import (
    RUNTIME_PACKAGES,
    PinError,
    direct_requirements,
    read_pins,
    runtime_requirements,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def pyproject_requirements() -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [*project["dependencies"], *extras]


@pytest.mark.parametrize("text", pyproject_requirements())
def test_every_pyproject_pin_is_the_constraints_pin(text: str) -> None:
    pins = read_pins()
    req = Requirement(text)
    key = canonicalize_name(req.name)
    assert key in pins, f"{req.name} is not pinned in training/constraints.txt"
    version = pins[key].split("==", 1)[1]
    assert str(req.specifier) == f"=={version}", f"pyproject {text!r} vs constraints {pins[key]}"


def test_runtime_packages_are_dependencies_of_retain() -> None:
    names = {canonicalize_name(Requirement(t).name) for t in pyproject_requirements()}
    assert {canonicalize_name(n) for n in RUNTIME_PACKAGES} <= names


def test_bentofile_packages_are_the_direct_runtime_pins() -> None:
    bentofile = yaml.safe_load((REPO_ROOT / "serving" / "http" / "bentofile.yaml").read_text())
    assert bentofile["python"]["packages"] == direct_requirements()


def test_runtime_closure_is_pinned_and_installed_at_its_pins() -> None:
    closure = runtime_requirements()
    pins = read_pins()
    assert set(closure) <= set(pins.values())
    for name in ("lleaves", "llvmlite", "lightgbm", "mlflow", "bentoml", "numpy"):
        assert pins[canonicalize_name(name)] in closure
    assert len(closure) == len({canonicalize_name(r.split("==")[0]) for r in closure})


def test_a_pin_that_differs_from_the_installed_version_is_refused() -> None:
    pins = dict(read_pins())
    pins["numpy"] = "numpy==0.0.1"
    with pytest.raises(PinError, match=r"numpy is installed at .* but pinned at 0\.0\.1"):
        runtime_requirements(pins=pins)


def test_an_unpinned_dependency_is_refused() -> None:
    pins = {k: v for k, v in read_pins().items() if k != "threadpoolctl"}  # scikit-learn's
    with pytest.raises(PinError, match="threadpoolctl is not pinned"):
        runtime_requirements(pins=pins)


def test_constraints_hold_plain_pins_only(tmp_path: Path) -> None:
    bad = tmp_path / "constraints.txt"
    bad.write_text("numpy>=2\n")
    with pytest.raises(PinError, match="not a plain NAME==VERSION pin"):
        read_pins(bad)
    bad.write_text("numpy==2.4.6\nNumPy==2.4.5\n")
    with pytest.raises(PinError, match="pinned twice"):
        read_pins(bad)
