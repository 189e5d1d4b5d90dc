"""User errors are told from bugs by type: every subclass of ``features.errors.UserError``.

Before, ``serving.cli_errors`` looked errors up by (module, class) name strings, so renaming
or adding an error class silently turned its errors into tracebacks. Here every subclass
found by walking the base's subclasses (after importing every retain module), and one
defined in this test, exits 2 with one ``error:`` line through the CLI's handler; a bug
still exits 1 with a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from features.errors import InputError, UserError
from serving.cli_errors import RetainGroup

REPO = Path(__file__).resolve().parents[2]
MESSAGE = "the value 42 of --thing is out of range"


class RenamedOrNewError(InputError):
    """Stands for a user error class added (or renamed) after the CLI layer was written."""


def _import_every_module() -> None:
    for package in ("features", "training", "serving"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            importlib.import_module(info.name)


def _all_subclasses(base: type[UserError]) -> set[type[UserError]]:
    found: set[type[UserError]] = set()
    todo = [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def _app(exc: BaseException) -> typer.Typer:
    app = typer.Typer(cls=RetainGroup)

    @app.command()
    def fail() -> None:
        raise exc

    @app.command()
    def other() -> None:  # a second command: typer builds a group (RetainGroup)
        """Unused."""

    return app


def _user_error_classes() -> list[type[UserError]]:
    _import_every_module()
    return sorted(_all_subclasses(UserError), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def test_the_walk_finds_the_errors_of_every_layer() -> None:
    names = {c.__name__ for c in _user_error_classes()}
    # one of each layer, including those the old name list held
    expected = {"PurchaseLogError", "LogConfigError", "ArtifactError", "RegistryError"}
    expected |= {"TrackingStoreError", "ModelResolutionError", "OfferPolicyError", "BatchError"}
    assert expected <= names
    assert "RenamedOrNewError" in names


@pytest.mark.parametrize("cls", _user_error_classes(), ids=lambda c: c.__qualname__)
def test_every_user_error_class_exits_2_with_one_line(cls: type[UserError]) -> None:
    exc = cls(MESSAGE)
    result = CliRunner().invoke(_app(exc), ["fail"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [f"error: {MESSAGE}"]


def test_a_bug_keeps_its_traceback_and_exits_1(tmp_path: Path) -> None:
    script = tmp_path / "bug.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_user_error_types import _app\n"
        "_app(KeyError('customer_id'))(['fail'])\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "KeyError: 'customer_id'" in done.stderr
    assert "error:" not in done.stderr
