"""Segment rules and their precedence, on hand-made feature rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.config_file import LogConfigError, load_segment_config
from features.retention.segments import SEGMENTS, SegmentConfig, assign_segments, summarize_segments

NAN = math.nan

# name: (recency_days, n_orders, n_purchase_days, gap_mean, gap_std, discount_share, spend,
#        expected segment with the default thresholds)
ROWS: dict[str, tuple[float, int, int, float, float, float, float, str]] = {
    # 400 days since the last purchase: lapsed, although also overdue (at_risk).
    "lapsed_by_days": (400, 5, 5, 30, 5, 0.0, 500, "lapsed"),
    # 200 days < 365 but 5x their 40-day rhythm: lapsed by ratio.
    "lapsed_by_ratio": (200, 4, 4, 40, 5, 0.0, 300, "lapsed"),
    # One-time buyer gone for 400 days: lapsed before at_risk and first_time.
    "lapsed_one_timer": (400, 1, 1, NAN, NAN, 0.0, 20, "lapsed"),
    # 70 / 40 = 1.75 > 1.5 with a steady rhythm: at_risk wins over loyal.
    "at_risk_by_ratio": (70, 4, 4, 40, 5, 0.0, 200, "at_risk"),
    # One purchase day, 150 > 120 days ago: at_risk wins over first_time.
    "at_risk_one_timer": (150, 1, 1, NAN, NAN, 0.0, 40, "at_risk"),
    # Overdue sale-only buyer: at_risk wins over sale_only.
    "at_risk_sale_only": (90, 3, 3, 30, 3, 1.0, 90, "at_risk"),
    # All 3 orders discounted, steady and recent: sale_only wins over loyal.
    "sale_only": (10, 3, 3, 30, 3, 1.0, 60, "sale_only"),
    # Sale-only two-timer: sale_only wins over second_time.
    "sale_only_two_timer": (10, 2, 2, 30, NAN, 1.0, 50, "sale_only"),
    # A single discounted order is not enough for sale_only (min 2 orders).
    "first_time": (10, 1, 1, NAN, NAN, 1.0, 30, "first_time"),
    # Two orders on one purchase day: still a first-timer by purchase days.
    "first_time_two_orders": (10, 2, 1, NAN, NAN, 0.0, 45, "first_time"),
    "second_time": (20, 2, 2, 50, NAN, 0.0, 80, "second_time"),
    # Two purchase days, 100 / 40 = 2.5 overdue but no rhythm yet and 100 < 120 days.
    "second_time_no_rhythm": (100, 2, 2, 40, NAN, 0.0, 70, "second_time"),
    # cv 6 / 30 = 0.2, 25 / 30 = 0.83 not overdue.
    "loyal": (25, 6, 6, 30, 6, 0.5, 900, "loyal"),
    # cv 30 / 30 = 1.0: irregular.
    "regular_irregular": (25, 6, 6, 30, 30, 0.0, 700, "regular"),
    # Steady, 36 / 30 = 1.2: not loyal (overdue), not yet at risk (<= 1.5).
    "regular_slightly_overdue": (36, 5, 5, 30, 3, 0.0, 400, "regular"),
    # Exactly 365 days is not beyond lapsed_days; 3 purchase days and ratio 365/300 < 1.5.
    "boundary_365_days": (365, 3, 3, 300, 10, 0.0, 100, "regular"),
}


def feature_frame(rows: dict[str, tuple] = ROWS) -> pd.DataFrame:
    names = list(rows)
    values = np.array([r[:7] for r in rows.values()], dtype=float)
    frame = pd.DataFrame(
        {
            "recency_days": values[:, 0],
            "n_orders": values[:, 1].astype(np.int64),
            "n_purchase_days": values[:, 2].astype(np.int64),
            "gap_mean_days": values[:, 3],
            "gap_std_days": values[:, 4],
            "recency_gap_ratio": values[:, 0] / values[:, 3],
            "discount_share": values[:, 5],
            "monetary_total": values[:, 6],
        },
        index=pd.Index(names, name="customer_id"),
    )
    return frame


def test_every_segment_and_precedence() -> None:
    features = feature_frame()
    result = assign_segments(features)
    expected = pd.Series({name: row[7] for name, row in ROWS.items()})
    assert result.astype(str).to_dict() == expected.to_dict()
    assert set(result) == set(SEGMENTS)


def test_output_is_categorical_on_the_same_index() -> None:
    features = feature_frame().iloc[::-1]
    result = assign_segments(features)
    assert isinstance(result.dtype, pd.CategoricalDtype)
    assert list(result.cat.categories) == list(SEGMENTS)
    assert result.index.equals(features.index)
    assert result.name == "segment"


def test_thresholds_are_configurable() -> None:
    features = feature_frame()
    # A shorter at_risk_days moves recent one- and two-timers to at_risk; a looser cv admits
    # the irregular customer to loyal.
    config = SegmentConfig(at_risk_days=5, loyal_max_gap_cv=1.5)
    result = assign_segments(features, config).astype(str)
    assert result["first_time"] == "at_risk"
    assert result["second_time"] == "at_risk"
    assert result["regular_irregular"] == "loyal"
    stricter = SegmentConfig(sale_only_min_orders=3)
    assert assign_segments(features, stricter)["sale_only_two_timer"] == "second_time"
    later = SegmentConfig(lapsed_days=500, lapsed_gap_ratio=20)
    assert assign_segments(features, later)["lapsed_by_days"] == "at_risk"


def test_config_from_dict_and_yaml(tmp_path: Path) -> None:
    assert SegmentConfig.from_dict({"lapsed_days": 400}).lapsed_days == 400
    assert SegmentConfig.from_dict(None) == SegmentConfig()
    path = tmp_path / "seg.yaml"
    path.write_text("segments:\n  at_risk_days: 90\n  loyal_max_gap_cv: 0.4\n")
    config = load_segment_config(path)
    assert config.at_risk_days == 90
    assert config.loyal_max_gap_cv == 0.4
    toml = tmp_path / "seg.toml"
    toml.write_text("[segments]\nlapsed_gap_ratio = 6\n")
    assert load_segment_config(toml).lapsed_gap_ratio == 6
    # a file without sections holds log fields (the one reader's rule): thresholds there
    # are refused by name instead of silently ignored
    flat = tmp_path / "flat.yaml"
    flat.write_text("lapsed_gap_ratio: 6\n")
    with pytest.raises(LogConfigError, match=r"lapsed_gap_ratio.*under 'segments:'"):
        load_segment_config(flat)


def test_config_rejects_unknown_and_inconsistent_thresholds() -> None:
    with pytest.raises(ValidationError, match="lapsed_dayz"):
        SegmentConfig.from_dict({"lapsed_dayz": 100})
    with pytest.raises(ValidationError, match="at_risk_gap_ratio"):
        SegmentConfig(at_risk_gap_ratio=5, lapsed_gap_ratio=4)
    with pytest.raises(ValidationError, match="at_risk_days"):
        SegmentConfig(at_risk_days=400)


def test_missing_feature_column_is_named() -> None:
    features = feature_frame().drop(columns=["discount_share"])
    with pytest.raises(ValueError, match="discount_share"):
        assign_segments(features)


def test_empty_feature_table() -> None:
    result = assign_segments(feature_frame().iloc[:0])
    assert len(result) == 0
    assert list(result.cat.categories) == list(SEGMENTS)


def test_summary_sizes_and_value() -> None:
    rows = {k: ROWS[k] for k in ("lapsed_by_days", "lapsed_by_ratio", "loyal", "first_time")}
    features = feature_frame(rows)
    summary = summarize_segments(features, assign_segments(features))
    assert list(summary.index) == list(SEGMENTS)
    total = 500 + 300 + 900 + 30
    assert summary.loc["lapsed", "customers"] == 2
    assert summary.loc["lapsed", "share"] == pytest.approx(0.5)
    assert summary.loc["lapsed", "spend_total"] == pytest.approx(800)
    assert summary.loc["lapsed", "spend_mean"] == pytest.approx(400)
    assert summary.loc["lapsed", "spend_share"] == pytest.approx(800 / total)
    assert summary.loc["loyal", "spend_share"] == pytest.approx(900 / total)
    assert summary.loc["regular", "customers"] == 0
    assert math.isnan(summary.loc["regular", "spend_mean"])
