"""Modules moved into rooms keep an alias at their old path for logged MLflow models.

Every logged model carries the ``pyfunc_model.py`` of its time, which MLflow executes to load
it; one logged before the move imports the old flat paths. In a process that already
imported retain those paths resolve through the alias modules, to the moved modules
themselves (one module object, so state and ``isinstance`` checks agree). Checked end to
end once, with a model logged by the pre-move code (see the move's closing note).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# retain: alias of a moved module"
ALIASES = sorted(
    p
    for pkg in ("features", "training", "serving")
    for p in (ROOT / pkg).rglob("*.py")
    if MARKER in p.read_text(encoding="utf-8")
)
# The imports of moved modules in serving/pyfunc_model.py as it was before the move.
PRE_MOVE_IMPORTS = (
    "from features.purchase_log import canonicalize\nfrom features.schema import LogConfig\n"
)
MOVED_TO = {
    "features.purchase_log": "features.log.purchase_log",
    "features.schema": "features.log.schema",
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_a_pre_move_pyfunc_file_imports_the_moved_objects() -> None:
    namespace: dict[str, Any] = {}
    exec(PRE_MOVE_IMPORTS, namespace)
    for node in ast.walk(ast.parse(PRE_MOVE_IMPORTS)):
        assert isinstance(node, ast.Module | ast.ImportFrom | ast.alias)
        if isinstance(node, ast.ImportFrom):
            moved = importlib.import_module(MOVED_TO[node.module])
            for alias in node.names:
                assert namespace[alias.asname or alias.name] is getattr(moved, alias.name)


@pytest.mark.parametrize("path", ALIASES, ids=module_name)
def test_an_old_path_is_the_moved_module(path: Path) -> None:
    old = module_name(path)
    assert old in MOVED_TO
    assert importlib.import_module(old) is importlib.import_module(MOVED_TO[old])
