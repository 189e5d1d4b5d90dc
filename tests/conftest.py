"""Fixtures shared by every test package: where the real reference datasets live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = Path(os.environ.get("RETAIN_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
CDNOW_MASTER = DATASETS_DIR / "cdnow" / "CDNOW_master.txt"
CDNOW_SAMPLE = DATASETS_DIR / "cdnow" / "CDNOW_sample.txt"


@pytest.fixture(scope="session")
def cdnow_master_path() -> Path:
    if not CDNOW_MASTER.exists():
        pytest.fail(f"CDNOW master log not found at {CDNOW_MASTER}; set RETAIN_DATASETS")
    return CDNOW_MASTER


@pytest.fixture(scope="session")
def cdnow_sample_path() -> Path:
    if not CDNOW_SAMPLE.exists():
        pytest.fail(f"CDNOW sample log not found at {CDNOW_SAMPLE}; set RETAIN_DATASETS")
    return CDNOW_SAMPLE
