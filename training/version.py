"""Which retain this is: its version and the commit it was built from, for every artifact.

The version comes from git: building the wheel (or ``pip install -e .``) runs setuptools-scm,
which writes ``training/_version.py`` (not committed) with the version and the commit's short
hash; without git history the version is the fallback in ``pyproject.toml``. An artifact
records both (``retain_version``, ``retain_commit``), so a model can be traced to the code
that trained it.

Code run from a git checkout may be newer than its last install (an editable install writes
``_version.py`` once), so there the commit is asked of git itself (``HEAD``, ``+dirty``
when tracked files differ from it); an installed wheel has no git around it and reports the
commit it was built from.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["UNKNOWN", "git_commit", "retain_commit", "retain_version"]

UNKNOWN = "unknown"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def retain_version() -> str:
    """The version this code was built as (``training/_version.py``), else the installed one."""
    try:
        from training._version import version  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        try:
            return metadata.version("retain")
        except metadata.PackageNotFoundError:
            return UNKNOWN
    return str(version)


def retain_commit() -> str:
    """The commit of this code: git's ``HEAD`` in a checkout, else the one built from."""
    from_git = git_commit(_SOURCE_ROOT)
    if from_git is not None:
        return from_git
    try:
        from training._version import commit_id  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return UNKNOWN
    if not commit_id:
        return UNKNOWN
    return str(commit_id).removeprefix("g")  # setuptools-scm writes git's short hash as g<hash>


def git_commit(root: Path) -> str | None:
    """``HEAD`` of the git work tree whose top is ``root`` (``+dirty`` if tracked files
    changed); None when ``root`` is not the top of one (an installed package) or git is
    missing."""
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if changed else head
