"""Point-in-time customer features from a purchase log (see ARCHITECTURE.md)."""

from features.builders import FeatureConfig, build_features
from features.canonical import LoadReport
from features.catalog import FEATURE_COLUMNS, FEATURES
from features.purchase_log import LoadResult, canonicalize, read_purchase_log
from features.schema import LogConfig, PurchaseLogError
from features.segments import SegmentConfig, assign_segments

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
