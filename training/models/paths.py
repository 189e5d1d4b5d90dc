"""Path contributions behind the reasons: each split credits its feature (Saabas).

The compiled leaf lookup that finds a few rows' leaves for the reasons also gives their raw
scores (:meth:`LeafPaths.raw_scores`: the leaves' values summed in the compiled forest's
order), so a request's churn trees are walked once for both.
"""

from __future__ import annotations

import re
from typing import Any

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray

from training.models.boosters import SMALL_BATCH_ROWS, predict_booster
from training.models.compiled import LLEAVES_BLOCK, CompiledForest, routes_as_given

FloatArray = NDArray[np.float64]
GATHER_MAX_VALUES = 1 << 17
"""Up to this many gathered table values (trees x features x customers) a call sums the
gathered rows (``gathered_sum``) instead of building a sparse matrix."""
SHARED_MIN_ROWS = 8
"""From this many rows ``LeafPaths.raw_scores`` sums the reasons' leaves; below it a walk of
the trees costs less than the sum (measured: +10 us at 1 row, -23 us at 8, -140 us at 100)."""


class LeafPaths:
    """Per-leaf path attributions of a booster, read once from its own model dump.

    ``table[t * max_leaves + leaf]`` holds, per feature, the sum over the splits on the way
    from tree ``t``'s root to ``leaf`` of (child value - node value); ``bias`` is the sum of
    the root values. Tree output = root value + row of the table, so a prediction's
    attributions are one sparse gather-and-sum over its leaves (LightGBM's ``pred_leaf``, or
    the same leaves from compiled code after :meth:`compile`).
    """

    def __init__(self, booster: lgb.Booster) -> None:
        dump = booster.dump_model()
        n_features = booster.num_feature()
        trees = dump["tree_info"]
        # compiled leaf lookup (``compile``) reproduces LightGBM's numerical splits only
        self._compilable = (
            bool(trees)
            and not dump.get("average_output")
            and "is_linear=1" not in booster.model_to_string()
        )
        self._leaf_forest: CompiledForest | None = None
        self.max_leaves = max((int(t["num_leaves"]) for t in trees), default=1)
        table = np.zeros((len(trees) * self.max_leaves, n_features))
        bias = 0.0
        for t, info in enumerate(trees):
            root = info["tree_structure"]
            if "split_feature" not in root:  # a single-leaf tree: all bias
                bias += float(root["leaf_value"])
                continue
            bias += float(root["internal_value"])
            stack: list[tuple[dict[str, Any], FloatArray]] = [(root, np.zeros(n_features))]
            while stack:
                node, path = stack.pop()
                if "split_feature" not in node:
                    table[t * self.max_leaves + int(node["leaf_index"])] = path
                    continue
                value = float(node["internal_value"])
                if node.get("decision_type") != "<=":
                    self._compilable = False
                for side in ("left_child", "right_child"):
                    child = node[side]
                    child_value = float(child.get("internal_value", child.get("leaf_value")))
                    step = path.copy()
                    step[int(node["split_feature"])] += child_value - value
                    stack.append((child, step))
        self.table = table
        self.bias = bias
        self.n_trees = len(trees)
        self._tree_offsets = np.arange(self.n_trees, dtype=np.int64) * self.max_leaves
        self._sum = BlockedLeafSum(
            leaf_values(booster.model_to_string(), self.n_trees, self.max_leaves), self.n_trees
        )
        # the leaves of the last rows looked up: (shape, bytes of the rows, leaves)
        self._last: tuple[tuple[int, ...], bytes, NDArray[np.int64]] | None = None

    def compile(self, booster: lgb.Booster) -> None:
        """Find leaves with lleaves (:meth:`CompiledForest.leaves`) instead of LightGBM.

        The same leaves as ``pred_leaf``, without LightGBM's per-call predictor set-up (the
        larger part of a few-row request's reasons). Skipped for categorical splits, linear
        trees and averaged (random forest) output, where LightGBM stays the reference.
        """
        if self._compilable and self._leaf_forest is None:
            self._leaf_forest = CompiledForest(booster, leaf_indices=True)

    def drop_compiled(self) -> None:
        """Find leaves with LightGBM's ``pred_leaf`` again."""
        self._leaf_forest = None

    @property
    def compiled(self) -> bool:
        return self._leaf_forest is not None

    def contributions(self, booster: lgb.Booster, m: FloatArray) -> FloatArray:
        """(n, n_features) attributions of the rows of ``m`` (their leaves from LightGBM, or
        from the compiled copy of its trees after :meth:`compile`)."""
        from scipy.sparse import csr_matrix

        n = len(m)
        if n == 0:  # LightGBM's pred_leaf fails on an empty matrix
            return np.zeros((0, self.table.shape[1]))
        if self._leaf_forest is not None:
            leaves = self._compiled_leaves(m)
        else:
            leaves = np.asarray(predict_booster(booster, m, pred_leaf=True), dtype=np.int64)
        flat = (leaves + self._tree_offsets).ravel()
        if self.table.shape[1] > 1 and flat.size * self.table.shape[1] <= GATHER_MAX_VALUES:
            return gathered_sum(self.table, flat, n)
        indptr = np.arange(0, flat.size + 1, self.n_trees)
        ones = np.ones(flat.size)
        pick = csr_matrix((ones, flat, indptr), shape=(n, self.table.shape[0]))
        return np.asarray(pick @ self.table)

    def raw_scores(self, m: FloatArray) -> FloatArray | None:
        """The raw scores the booster's ``CompiledForest`` gives the rows of ``m``, bit for
        bit, from their leaves; None where that needs the forest itself (no compiled lookup,
        fewer than ``SHARED_MIN_ROWS`` or a large batch, or a value the lookup reads as 0 and the
        forest does not).

        A request's prediction and its reasons then share one walk of the churn trees (the
        next ``contributions`` of the same rows takes the leaves remembered here): in a
        request each walk of a forest costs about ten times its warm time (the other forests
        evict its code and branch history).
        """
        n = len(m)
        if self._leaf_forest is None or not SHARED_MIN_ROWS <= n < SMALL_BATCH_ROWS:
            return None
        if not routes_as_given(m):
            return None
        return self._sum(self._remembered_leaves(m) + self._tree_offsets)

    def _remembered_leaves(self, m: FloatArray) -> NDArray[np.int64]:
        """The compiled lookup's leaves of ``m``, remembered for the next ``contributions``
        (a request's reasons follow its prediction, on the same rows)."""
        assert self._leaf_forest is not None
        rows = np.ascontiguousarray(m, dtype=np.float64)
        leaves = self._leaf_forest.leaves(rows)
        leaves.setflags(write=False)
        self._last = (rows.shape, rows.tobytes(), leaves)
        return leaves

    def _compiled_leaves(self, m: FloatArray) -> NDArray[np.int64]:
        """The compiled lookup's leaves, taken from ``raw_scores`` when it just looked up the
        same rows (used once: the next request's rows are looked up afresh)."""
        assert self._leaf_forest is not None
        last, self._last = self._last, None  # read once: another thread may replace it
        if last is not None and len(m) < SMALL_BATCH_ROWS:
            rows = np.ascontiguousarray(m, dtype=np.float64)
            if last[0] == rows.shape and last[1] == rows.tobytes():
                return last[2]
        return self._leaf_forest.leaves(m)


def leaf_values(text: str, n_trees: int, max_leaves: int) -> FloatArray:
    """Every tree's leaf values from a LightGBM model text, at ``t * max_leaves + leaf``.

    Read from the text as lleaves reads them (``float`` of each token), so they are the
    constants of the compiled forest.
    """
    values = np.zeros(n_trees * max_leaves)
    lines = re.findall(r"^leaf_value=(.*)$", text, flags=re.M)
    if len(lines) != n_trees:
        raise ValueError(f"model text has {len(lines)} trees' leaf values, expected {n_trees}")
    for t, line in enumerate(lines):
        leaf = [float(token) for token in line.split(" ")]
        values[t * max_leaves : t * max_leaves + len(leaf)] = leaf
    return values


class BlockedLeafSum:
    """Per row, the sum of its trees' leaf values in a compiled raw-score forest's order.

    lleaves sums each block of ``LLEAVES_BLOCK`` trees onto 0.0, tree by tree, then adds the
    block sums in order. Here the values are laid out tree-major, (trees, rows), the last
    block filled up with -0.0 (x + -0.0 is x, bit for bit), and ``np.add.reduce`` over the
    tree axis adds them in that order while the rows are the inner loop, i.e. with at least
    two rows (one row is summed as two copies: alone it would be summed pairwise, as in
    :func:`gathered_sum`). ``tests/training/test_small_batch_paths.py`` holds it to the
    forest's bits.
    """

    def __init__(self, values: FloatArray, n_trees: int, block: int = LLEAVES_BLOCK) -> None:
        self.values = values
        self.n_trees = n_trees
        self.block = block
        self.n_blocks = max(-(-n_trees // block), 1)

    def __call__(self, flat: NDArray[np.int64]) -> FloatArray:
        """Sums of the rows of ``flat`` ((n, trees) indices into the values)."""
        n = len(flat)
        if n == 1:
            return self(np.repeat(flat, 2, axis=0))[:1]
        by_tree = np.empty((self.n_blocks * self.block, n))
        by_tree[self.n_trees :] = -0.0
        by_tree[: self.n_trees] = self.values.take(flat).T
        blocks = np.add.reduce(by_tree.reshape(self.n_blocks, self.block, n), axis=1, initial=0.0)
        return np.add.reduce(blocks, axis=0)


def gathered_sum(table: FloatArray, flat: NDArray[np.int64], n: int) -> FloatArray:
    """The rows ``flat`` of ``table`` (``n`` equal runs, one per customer) summed per run,
    bit for bit what the sparse product in ``LeafPaths.contributions`` computes.

    That product adds a run's rows one by one, in order, onto zeros. ``np.add.reduce``
    over the run axis with ``initial=0.0`` does the same when the row axis (features) is
    the inner loop, i.e. with at least two features; with one feature it would sum the
    run pairwise, so a one-feature table, and calls over ``GATHER_MAX_VALUES`` values
    (where copying the rows costs more than the sparse set-up), take the sparse product.
    ``tests/training/test_paths.py`` holds both to the same bits.
    """
    rows = table[flat].reshape(n, flat.size // n, table.shape[1])
    return np.add.reduce(rows, axis=1, initial=0.0)
