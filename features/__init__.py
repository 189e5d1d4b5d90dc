"""Point-in-time customer features from a purchase log (see ARCHITECTURE.md).

The names below are loaded on first use (PEP 562), not when the package is imported: every
``retain`` command imports ``features`` submodules, and importing pandas for ``retain
--help`` would take a second before anything is printed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features.builders import FeatureConfig, build_features
    from features.catalog import FEATURE_COLUMNS, FEATURES
    from features.log.canonical import LoadReport
    from features.log.purchase_log import LoadResult, canonicalize, read_purchase_log
    from features.log.schema import LogConfig, PurchaseLogError
    from features.retention.segments import SegmentConfig, assign_segments

_HOMES: dict[str, str] = {
    "FEATURES": "features.catalog",
    "FEATURE_COLUMNS": "features.catalog",
    "FeatureConfig": "features.builders",
    "LoadReport": "features.log.canonical",
    "LoadResult": "features.log.purchase_log",
    "LogConfig": "features.log.schema",
    "PurchaseLogError": "features.log.schema",
    "SegmentConfig": "features.retention.segments",
    "assign_segments": "features.retention.segments",
    "build_features": "features.builders",
    "canonicalize": "features.log.purchase_log",
    "read_purchase_log": "features.log.purchase_log",
}

__all__ = [
    "FEATURES",
    "FEATURE_COLUMNS",
    "FeatureConfig",
    "LoadReport",
    "LoadResult",
    "LogConfig",
    "PurchaseLogError",
    "SegmentConfig",
    "assign_segments",
    "build_features",
    "canonicalize",
    "read_purchase_log",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'features' has no attribute {name!r}")
    return getattr(import_module(home), name)
