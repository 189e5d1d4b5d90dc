"""The few-row paths of scoring give the very bits of the general ones.

A request of a few customers takes shortcuts: the compiled forest called directly
(``CompiledForest._raw_small`` instead of ``lleaves.Model.predict``) and the reasons'
leaf rows summed by ``gathered_sum`` instead of a sparse product, and the churn raw scores
summed from the reasons' leaves (``LeafPaths.raw_scores``) instead of a second walk of the
trees. All are held here to the general path on random inputs, bit for bit (including the
sign of zero).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from scipy.sparse import csr_matrix

from training.models.compiled import LLEAVES_BLOCK, CompiledForest
from training.models.paths import (
    GATHER_MAX_VALUES,
    SHARED_MIN_ROWS,
    BlockedLeafSum,
    LeafPaths,
    gathered_sum,
)


def _bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


def _sparse_sum(table: np.ndarray, flat: np.ndarray, n: int) -> np.ndarray:
    """The general path of ``LeafPaths.contributions``: one sparse product."""
    per_row = flat.size // n
    pick = csr_matrix(
        (np.ones(flat.size), flat, np.arange(0, flat.size + 1, per_row)),
        shape=(n, table.shape[0]),
    )
    return np.asarray(pick @ table)


@pytest.mark.parametrize("seed", range(6))
def test_gathered_sum_is_the_sparse_product_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n_trees = int(rng.integers(1, 300))
        max_leaves = int(rng.integers(2, 9))
        n_features = int(rng.integers(2, 50))
        n = int(rng.integers(1, 15))
        # magnitudes 1e-8..1e8 make any other summation order show in the last bits
        table = rng.standard_normal((n_trees * max_leaves, n_features))
        table *= 10.0 ** rng.integers(-8, 8, size=table.shape)
        table[rng.random(table.shape) < 0.3] = 0.0
        table[rng.random(table.shape) < 0.05] = -0.0
        leaves = rng.integers(0, max_leaves, size=(n, n_trees))
        flat = (leaves + np.arange(n_trees) * max_leaves).ravel()
        got = gathered_sum(table, flat, n)
        want = _sparse_sum(table, flat, n)
        assert got.shape == want.shape == (n, n_features)
        assert np.array_equal(_bits(got), _bits(want))


def test_an_all_negative_zero_run_sums_to_positive_zero_as_the_sparse_product() -> None:
    table = np.full((6, 3), -0.0)
    flat = np.array([0, 2, 4, 1, 3, 5])
    got = gathered_sum(table, flat, 2)
    assert np.array_equal(_bits(got), _bits(_sparse_sum(table, flat, 2)))
    assert not np.signbit(got).any()


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2_000, 12))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (x[:, 0] + np.nan_to_num(x[:, 1]) * x[:, 2] + rng.standard_normal(2_000) > 0).astype(float)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 0}
    return lgb.train(params, lgb.Dataset(x, y), 60)


def test_the_compiled_forest_called_directly_gives_lleaves_predictions(
    booster: lgb.Booster,
) -> None:
    forest = CompiledForest(booster)
    leaves = CompiledForest(booster, leaf_indices=True)
    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 17, 200):
        m = rng.standard_normal((n, 12)) * 3.0
        m[rng.random(m.shape) < 0.1] = np.nan
        m[rng.random(m.shape) < 0.05] = 0.0
        assert np.array_equal(_bits(forest.raw(m)), _bits(forest._model.predict(m, n_jobs=1)))
        want = leaves._model.predict(m, n_jobs=1)
        assert np.array_equal(_bits(leaves.raw(m)), _bits(want))
        # a view with strides and a read-only array take the same path
        wide = np.repeat(m, 2, axis=1)[:, ::2]
        assert np.array_equal(_bits(forest.raw(wide)), _bits(forest.raw(m)))
        frozen = m.copy()
        frozen.setflags(write=False)
        assert np.array_equal(_bits(forest.raw(frozen)), _bits(forest.raw(m)))
    with pytest.raises(ValueError, match="dimension"):
        forest.raw(np.zeros((2, 11)))


def test_reasons_of_a_few_rows_are_the_sparse_product_of_their_leaves(
    booster: lgb.Booster,
) -> None:
    paths = LeafPaths(booster)
    paths.compile(booster)
    rng = np.random.default_rng(5)
    for n in (1, 4, 9):
        m = rng.standard_normal((n, 12))
        assert n * paths.n_trees * paths.table.shape[1] <= GATHER_MAX_VALUES  # the short path
        leaves = np.asarray(booster.predict(m, pred_leaf=True), dtype=np.int64)
        flat = (leaves + np.arange(paths.n_trees) * paths.max_leaves).ravel()
        got = paths.contributions(booster, m)
        assert np.array_equal(_bits(got), _bits(_sparse_sum(paths.table, flat, n)))
        # the Saabas identity: rows add up to the trees' raw score minus the bias
        raw = booster.predict(m, raw_score=True)
        assert np.allclose(got.sum(axis=1) + paths.bias, raw, atol=1e-9)


def _lleaves_order_sum(values: np.ndarray, flat: np.ndarray, block: int) -> np.ndarray:
    """A compiled forest's raw score, as its code adds: per row, each block of trees onto
    0.0 in order, then the block sums in order."""
    out = np.zeros(len(flat))
    for r, row in enumerate(flat):
        total = 0.0
        for start in range(0, row.size, block):
            part = 0.0
            for index in row[start : start + block]:
                part = float(values[index]) + part
            total = part if start == 0 else part + total
        out[r] = total
    return out


@pytest.mark.parametrize("seed", range(4))
def test_blocked_leaf_sum_adds_in_the_compiled_forests_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(30):
        n_trees = int(rng.integers(1, 200))
        max_leaves = int(rng.integers(2, 9))
        block = int(rng.integers(1, 40))
        n = int(rng.integers(1, 12))
        # magnitudes 1e-8..1e8 make any other summation order show in the last bits
        values = rng.standard_normal(n_trees * max_leaves)
        values *= 10.0 ** rng.integers(-8, 8, size=values.shape)
        values[rng.random(values.shape) < 0.1] = -0.0
        leaves = rng.integers(0, max_leaves, size=(n, n_trees))
        flat = leaves + np.arange(n_trees) * max_leaves
        got = BlockedLeafSum(values, n_trees, block)(flat)
        assert np.array_equal(_bits(got), _bits(_lleaves_order_sum(values, flat, block)))


def test_raw_scores_from_the_leaves_are_the_compiled_forests_bits(
    booster: lgb.Booster,
) -> None:
    forest = CompiledForest(booster)
    paths = LeafPaths(booster)
    assert paths.raw_scores(np.zeros((2, 12))) is None  # no compiled lookup yet
    paths.compile(booster)
    assert booster.num_trees() > LLEAVES_BLOCK  # more than one block
    rng = np.random.default_rng(6)
    for n in (1, 3, SHARED_MIN_ROWS, 9, 17, 200):
        m = rng.standard_normal((n, 12)) * 3.0
        m[rng.random(m.shape) < 0.1] = np.nan
        m[rng.random(m.shape) < 0.05] = 0.0
        m[rng.random(m.shape) < 0.05] = -0.0
        got = paths.raw_scores(m)
        if n < SHARED_MIN_ROWS:  # a walk of the trees costs less there
            assert got is None
            continue
        assert got is not None
        assert np.array_equal(_bits(got), _bits(forest.raw(m)))
        # the reasons of the same rows take the remembered leaves, of other rows their own
        want = LeafPaths(booster).contributions(booster, m)
        assert np.array_equal(_bits(paths.contributions(booster, m)), _bits(want))
        paths.raw_scores(m)
        other = m[::-1].copy()
        want_other = LeafPaths(booster).contributions(booster, other)
        assert np.array_equal(_bits(paths.contributions(booster, other)), _bits(want_other))
    tiny = np.ones((SHARED_MIN_ROWS, 12))
    tiny[1, 4] = 1e-36  # LightGBM (and the leaf lookup) read it as 0, the forest does not
    assert paths.raw_scores(tiny) is None
