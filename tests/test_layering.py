"""Imports flow one way: serving -> training -> features.

``features`` never imports ``training`` or ``serving``, and ``training`` never imports
``serving``, at module level or inside a function (a function-level import is a dependency
too). Parsed with :mod:`ast`, so no module is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN: dict[str, frozenset[str]] = {
    "features": frozenset({"training", "serving"}),
    "training": frozenset({"serving"}),
}


def imported_packages(source: str) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import anywhere in ``source``."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    banned = FORBIDDEN[package]
    return [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, target in sorted(imported_packages(path.read_text(encoding="utf-8")))
        if target in banned
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    assert violations(package) == []


def test_function_level_imports_are_seen() -> None:
    source = "import os\n\ndef f():\n    from serving.scorer import score\n    import training.x\n"
    assert imported_packages(source) == {(1, "os"), (4, "serving"), (5, "training")}
