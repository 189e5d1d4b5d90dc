"""retain's version and commit, as every artifact records them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from training.version import UNKNOWN, git_commit, retain_commit, retain_version

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_reports_its_own_head() -> None:
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:  # a source tree without git history
        assert retain_commit() in {UNKNOWN} or len(retain_commit()) >= 7
        return
    assert retain_commit().removesuffix("+dirty") == head.stdout.strip()
    assert retain_version() != UNKNOWN


def test_a_directory_outside_git_has_no_commit(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
