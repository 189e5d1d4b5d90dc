"""The contract every feature builder keeps; register new builders in ``BUILDERS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from features.builders import COUNT_COLUMNS, build_feature_block, build_features
from features.catalog import FEATURE_COLUMNS, FEATURES
from features.log.log_arrays import LogArrays
from features.log.schema import PurchaseLogError
from tests.features.conftest import canonical_frame, random_log


class BuilderSpec(NamedTuple):
    """A feature builder ``fn(log, as_of) -> DataFrame`` and the columns it promises."""

    name: str
    fn: Callable[[pd.DataFrame, pd.Timestamp], pd.DataFrame]
    columns: tuple[str, ...]
    int_columns: frozenset[str]


def build_features_from_arrays(log: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """``build_feature_block`` on the log as ``LogArrays`` (the HTTP service's input)."""
    return build_feature_block(LogArrays.from_frame(log), as_of).to_frame()


BUILDERS: list[BuilderSpec] = [
    BuilderSpec("build_features", build_features, FEATURE_COLUMNS, COUNT_COLUMNS),
    BuilderSpec("from_arrays", build_features_from_arrays, FEATURE_COLUMNS, COUNT_COLUMNS),
]
AS_OF = pd.Timestamp("2024-03-01", tz="UTC")


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return random_log(seed=7, start=AS_OF - pd.Timedelta(days=600))


@pytest.mark.parametrize("spec", BUILDERS, ids=lambda s: s.name)
def test_builder_contract(spec: BuilderSpec, log: pd.DataFrame) -> None:
    original = log.copy(deep=True)
    out = spec.fn(log, AS_OF)

    # pure and deterministic
    pd.testing.assert_frame_equal(log, original)
    pd.testing.assert_frame_equal(spec.fn(log, AS_OF), out)

    # index, columns and dtypes as documented
    assert out.index.name == "customer_id"
    assert out.index.dtype == "str"
    assert out.index.is_unique and out.index.is_monotonic_increasing
    assert tuple(out.columns) == spec.columns
    for name in spec.columns:
        assert out[name].dtype == (np.int64 if name in spec.int_columns else np.float64), name
        assert name in FEATURES and FEATURES[name].unit and FEATURES[name].description, name
    bought = log.loc[(log["timestamp"] < AS_OF) & ~log["is_return"], "customer_id"]
    assert set(out.index) == set(bought.astype("str"))
    assert len(out) > 10  # the fixture is not degenerate

    # no future leakage: rows at or after as_of are ignored, whatever they say
    future = log.loc[log["timestamp"] >= AS_OF].copy()
    future["amount"] = future["amount"] * 100
    future["is_return"] = ~future["is_return"]
    tampered = canonical_frame(pd.concat([log.loc[log["timestamp"] < AS_OF], future]))
    pd.testing.assert_frame_equal(spec.fn(tampered, AS_OF), out)
    cut = log.loc[log["timestamp"] < AS_OF].reset_index(drop=True)
    pd.testing.assert_frame_equal(spec.fn(cut, AS_OF), out)

    # row order: the input must be canonical; shuffled input is refused, re-sorted gives `out`
    shuffled = log.sample(frac=1.0, random_state=3).reset_index(drop=True)
    with pytest.raises(PurchaseLogError, match="canonical"):
        spec.fn(shuffled, AS_OF)
    resorted = canonical_frame(shuffled)
    pd.testing.assert_frame_equal(spec.fn(resorted, AS_OF), out)


def test_builders_agree(log: pd.DataFrame) -> None:
    """Every registered builder promises the same catalog columns, so they must agree."""
    reference = BUILDERS[0].fn(log, AS_OF)
    for spec in BUILDERS[1:]:
        pd.testing.assert_frame_equal(spec.fn(log, AS_OF), reference, check_exact=True)
