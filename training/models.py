"""The LightGBM models behind retain: churn, purchase timing, purchase count and spend.

Every model is trained on stacked snapshots (``training.labels``): features at cutoff ``c``,
labels in ``[c, c + horizon)``, and every label window ends at or before the fit ``as_of``.
Twelve monthly cutoffs by default: a full year, so every season is in the training set
(with six, the synthetic Q4 backtest never saw a Q4 window). A random 20 % of *customers*
is held out of every snapshot for early stopping; calibration uses the held-out customers
of the latest cutoff (out of sample and the most recent behaviour).

Design choices:

- BG/NBD and Pareto/NBD are fitted per snapshot on that snapshot's history only, and their
  outputs (P(alive), expected purchases, P(no purchase) in H) are extra features. With
  ``baseline_offset`` the churn, count and spend boosters also *start* from the BG/NBD
  prediction (LightGBM ``init_score``), so the trees learn a correction and extrapolate
  like BG/NBD where training data run out (on CDNOW: tenures longer than any training
  snapshot saw). This took the CDNOW aggregate count error from +19 % to +3 %.
- Timing is a discrete-time hazard over day bins; its survival curve is rescaled so that
  S(H) equals the calibrated churn probability (one answer to "will they buy in H?").
- Spend uses tweedie regression (zero mass and skewed positive spend in one model); the
  365-day spend comes from a model on 365-day labels when the history has them, else from
  the horizon spend times the per-customer BG/NBD ratio E[purchases in 365 d] / E[in H].
- ``total_tree_weight`` (default 1) scales the count and spend trees' correction of the
  BG/NBD start. Measured with the backtest (aggregate purchase error, count MAE): 0 (the BG/NBD
  start alone) fixes CDNOW 1998-04-01 (+0.148 -> +0.110, MAE 0.2947 -> 0.2850) and synthetic
  July (-0.125 -> -0.003) but breaks synthetic October (-0.044 -> -0.382) and Complete Journey
  spend (-0.042 -> -0.217 at 2017-12-01). 0.5 still gives -0.281 in October. So the default
  stays 1.
- Training rows are subsampled (``max_train_rows``, ``max_timing_rows``; histogram binning
  with ``max_bin=63``) so a million customers x 6 snapshots trains in minutes on 2 cores.

Measured ad hoc (churn model alone on cached snapshots, not a benchmark script; the
benchmark figures are in benchmarks/quality.py) on CDNOW at 1998-01-01, H = 90 (Pareto/NBD
reaches AUC 0.801, BG/NBD 0.793):

- 31 leaves, min 100 rows, lambda_l2 1: AUC 0.795; 7 leaves, min 300, lambda_l2 10: 0.803.
- Learning rate 0.1 with at most 300 rounds against 0.05 with 1000: churn AUC 0.8061 vs
  0.8056 (CDNOW 1998-01-01) and 0.8451 vs 0.8433 (synthetic Q4) with half the trees or
  fewer, which also makes scoring and its TreeSHAP reasons 2-5x cheaper.
- Early stopping on the latest fold alone (one season) stopped the synthetic Q4 churn model
  after 25 trees (AUC 0.840); on held-out customers of every snapshot it ran to about 1000
  (0.844, with the calendar features). On CDNOW the two agree within 0.002.
- Calibration: Platt on the latest fold's held-out customers (ECE 0.020 and 0.021 at the
  two CDNOW cutoffs; the level shifts because churn rises as the single CDNOW cohort ages).
- Monotone constraints (``monotone_churn``): 0.802 vs 0.803, no gain, off by default.
  Snapshots every 10 days (18) instead of 30 (6): 0.803 either way at 3x the cost.
  Dropping tenure-like columns: AUC 0.833 vs 0.836 at 1998-04-01, so they stay.

Models follow the scikit-learn contract (parameters in ``__init__``, learned state ending in
``_``, ``NotFittedError`` before ``fit``) but use ``lightgbm.train`` / ``lgb.Booster``
directly: ``Booster.predict`` on a numpy array is much faster than the sklearn wrapper for
small batches (the HTTP path). Persistence is LightGBM's text format plus JSON, never pickle.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.exceptions import NotFittedError

from features.builders import FeatureConfig, build_features
from features.catalog import BTYD_FEATURES, FEATURE_COLUMNS
from features.utc import to_utc_timestamp
from training.baselines import (
    BetaGeoNBD,
    FitBudgetExceeded,
    ParetoNBD,
    _as_float_arrays,
    degenerate_fit,
)
from training.calibration import ProbabilityCalibrator
from training.labels import build_labels, join_labels, snapshot_cutoffs
from training.model_text import check_model_texts

FloatArray = NDArray[np.float64]

# Small, strongly regularised trees: on CDNOW (23.6k customers) 31 leaves / min 100 rows
# overfitted the BG/NBD correction (churn AUC 0.795 at 1998-01-01); 7 leaves, min 300 rows
# and lambda_l2 10 gave 0.803 (see the module docstring for the measurements).
DEFAULT_LGB_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 7,
    "min_data_in_leaf": 300,
    "max_bin": 63,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 10.0,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}
BASELINE_FEATURES: tuple[str, ...] = tuple(BTYD_FEATURES)  # documented in features.catalog
# Directions the churn probability may move in (``monotone_churn``): up with time since
# the last purchase, down with the amount of past buying. Other columns are unconstrained.
CHURN_INCREASING: tuple[str, ...] = ("recency_days", "recency_gap_ratio")
CHURN_DECREASING: tuple[str, ...] = (
    "n_purchase_days",
    "n_repeat_days",
    "n_orders",
    "orders_30d",
    "orders_90d",
    "orders_180d",
    "orders_365d",
    "purchase_rate_30d",
)
PREDICTION_COLUMNS: tuple[str, ...] = (
    "churn_probability",
    "p_purchase_7d",
    "p_purchase_30d",
    "p_purchase_horizon",
    "expected_days_to_next",
    "median_days_to_next",
    "expected_next_purchase_date",
    "expected_purchases_horizon",
    "expected_spend_horizon",
    "expected_spend_365d",
)
# Pareto/NBD P(alive) as a feature: fitted on at most this many customers (its four
# population parameters need far fewer than BG/NBD's 10,000 here) and given up after this
# many likelihood evaluations, deterministically (hyp2f1 can be very slow; see baselines).
PNBD_FEATURE_SAMPLE = 4_000
PNBD_FEATURE_EVALUATIONS = 400
_FORMAT_VERSION = 1
_P_FLOOR = 1e-9
_FLOAT_MAX = float(np.finfo(np.float64).max)  # where np.nan_to_num sends +inf
_K_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float constant)


# --------------------------------------------------------------------------------------
# shared LightGBM plumbing
# --------------------------------------------------------------------------------------


class ModelInput:
    """The model matrix (float64, one row per customer) and its column names.

    Why not a DataFrame: per-request scoring of a handful of customers spent most of its time
    in pandas bookkeeping. Boosters read ``values`` directly when its columns are already in
    training order (the scorer builds it so); named columns are looked up by position.
    """

    __slots__ = ("_positions", "names", "values")

    def __init__(self, values: FloatArray, names: Sequence[str]) -> None:
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(
                f"ModelInput: values of shape {values.shape} do not match {len(names)} names"
            )
        self.values = values
        self.names = tuple(names)
        self._positions = _name_positions(self.names)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __contains__(self, name: object) -> bool:
        return name in self._positions

    def column(self, name: str) -> FloatArray:
        return self.values[:, self._positions[name]]

    def select(self, names: Sequence[str], owner: str) -> FloatArray:
        if tuple(names) == self.names:
            return self.values
        missing = [c for c in names if c not in self._positions]
        if missing:
            raise KeyError(
                f"{owner}: input lacks feature column(s) {missing} seen at fit time "
                f"(has {len(self.names)} columns)"
            )
        return self.values[:, [self._positions[c] for c in names]]

    def to_frame(self, index: pd.Index | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=index, columns=list(self.names))


@lru_cache(maxsize=64)
def _name_positions(names: tuple[str, ...]) -> dict[str, int]:
    """Column positions by name, shared by every input with these names (read-only)."""
    return {name: i for i, name in enumerate(names)}


Table = pd.DataFrame | ModelInput


def _col(X: Table, name: str) -> FloatArray:
    """One named input column as float64, from a DataFrame or a ModelInput."""
    if isinstance(X, ModelInput):
        return X.column(name)
    return X[name].to_numpy(dtype=np.float64)


def _matrix(X: Table, names: Sequence[str], owner: str) -> FloatArray:
    """``X`` reordered to the training column order as float64; names missing columns."""
    if isinstance(X, ModelInput):
        return X.select(names, owner)
    missing = [c for c in names if c not in X.columns]
    if missing:
        raise KeyError(
            f"{owner}: input lacks feature column(s) {missing} seen at fit time "
            f"(has {len(X.columns)} columns)"
        )
    if X.columns.equals(pd.Index(names)):  # the common case: no reindexing copy
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    return X.loc[:, list(names)].to_numpy(dtype=np.float64, na_value=np.nan)


def _check_fitted(model: Any, attr: str) -> None:
    if not hasattr(model, attr):
        raise NotFittedError(
            f"{type(model).__name__} is not fitted yet: call fit(...) or load(...) first"
        )


@dataclass(frozen=True)
class BoostConfig:
    """How every booster is trained; one object so all models share seed and threads."""

    lgb_params: dict[str, Any]
    num_boost_round: int = 400
    early_stopping_rounds: int = 25
    seed: int = 0
    num_threads: int = 2

    def params(self, objective: str, **extra: Any) -> dict[str, Any]:
        out = {**DEFAULT_LGB_PARAMS, **self.lgb_params, **extra}
        out.update(objective=objective, seed=self.seed, num_threads=self.num_threads)
        return out


def _train(
    config: BoostConfig,
    objective: str,
    X: FloatArray,
    y: FloatArray,
    names: Sequence[str],
    valid: tuple[FloatArray, FloatArray] | None,
    weight: FloatArray | None = None,
    valid_weight: FloatArray | None = None,
    init_score: tuple[FloatArray, FloatArray] | None = None,
    **extra: Any,
) -> lgb.Booster:
    """Train with early stopping on ``valid``; return a booster truncated at the best round.

    The booster is rebuilt from its own text so the in-memory model and a saved/loaded one
    predict bit-for-bit the same.
    """
    params = config.params(objective, **extra)
    init_t, init_v = init_score if init_score is not None else (None, None)
    train = lgb.Dataset(
        X, y, weight=weight, init_score=init_t, feature_name=list(names), free_raw_data=True
    )
    callbacks: list[Any] = []
    valid_sets: list[lgb.Dataset] = []
    if valid is not None:
        dv = lgb.Dataset(
            valid[0], valid[1], weight=valid_weight, init_score=init_v, reference=train
        )
        valid_sets = [dv]
        callbacks.append(lgb.early_stopping(config.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        params, train, config.num_boost_round, valid_sets=valid_sets, callbacks=callbacks
    )
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


# Below this many rows a prediction runs on one thread: OpenMP start-up costs more than it
# saves (measured on the demo model: 1 customer 40 ms vs 96 ms, 100 customers 173 vs 273 ms
# with 2 threads), and HTTP workers already run side by side.
SMALL_BATCH_ROWS = 5_000


def _threads(rows: int) -> int:
    """One thread for small batches, else every core."""
    return 1 if rows < SMALL_BATCH_ROWS else max(os.cpu_count() or 1, 1)


def _predict(booster: lgb.Booster, m: FloatArray, **kwargs: Any) -> FloatArray:
    """``Booster.predict`` with the thread count chosen by batch size."""
    return booster.predict(m, num_threads=_threads(len(m)), **kwargs)


class CompiledTreesUnavailable(RuntimeWarning):
    """lleaves could not compile the boosters; LightGBM's own predictor scores instead."""


class CompiledForest:
    """A booster compiled to machine code by lleaves from its own LightGBM text (raw scores).

    Why: LightGBM's predict walks generic node arrays (about 35 ns per tree and row here);
    lleaves emits one function per tree, about 10x faster with the same numbers (differences
    below 1e-13). Always compiled in-process from the text model, never loaded from a binary
    cache, so nothing but LightGBM text is ever read from disk. With ``leaf_indices`` the
    forest returns every tree's leaf instead (:meth:`leaves`, for ``LeafPaths``).
    """

    def __init__(self, booster: lgb.Booster, leaf_indices: bool = False) -> None:
        import lleaves

        text = booster.model_to_string()
        options: dict[str, Any] = {}
        if leaf_indices:
            text = _leaf_index_text(text, booster.num_trees())
            # one cache block: every output is a single tree, and it compiles faster
            options["fblocksize"] = max(booster.num_trees(), 1)
        with tempfile.TemporaryDirectory(prefix="retain-forest-") as tmp:
            path = Path(tmp) / "model.txt"
            path.write_text(text, encoding="utf-8")
            model = lleaves.Model(model_file=str(path))
            model.compile(raw_score=True, **options)
        self._model = model
        self._n_outputs = int(model.num_model_per_iteration())

    def raw(self, m: FloatArray) -> FloatArray:
        """Raw scores, shape (n,); (n, outputs) for a multi-output forest."""
        n = len(m)
        if n == 0:
            return np.empty(0)
        return np.asarray(self._model.predict(np.ascontiguousarray(m), n_jobs=_threads(n)))

    def leaves(self, m: FloatArray) -> NDArray[np.int64]:
        """(n, trees) leaf indices of a ``leaf_indices`` forest, as LightGBM's ``pred_leaf``.

        LightGBM's predictor reads |x| <= ``_K_ZERO`` as 0 (it keeps only larger values of
        a dense row); zeroing them here first makes lleaves route every row the same way.
        """
        raw = self.raw(np.where(np.abs(m) <= _K_ZERO, 0.0, m))
        return raw.reshape(len(m), self._n_outputs).astype(np.int64)  # (n,) for one tree


def _leaf_index_text(text: str, n_trees: int) -> str:
    """A model text whose output ``t`` is tree ``t``'s leaf index (one tree per "class").

    Same trees and splits; each leaf's value becomes its index and the model is declared
    multiclass with one tree per class, so a raw-score prediction returns every tree's leaf.
    """
    head, sep, trees = text.partition("\nTree=0\n")
    head = re.sub(r"^num_class=\d+$", f"num_class={n_trees}", head, flags=re.M)
    head = re.sub(
        r"^num_tree_per_iteration=\d+$", f"num_tree_per_iteration={n_trees}", head, flags=re.M
    )
    head = re.sub(r"^objective=.*$", f"objective=multiclass num_class:{n_trees}", head, flags=re.M)
    trees = re.sub(
        r"^leaf_value=(.*)$",
        lambda line: "leaf_value=" + " ".join(map(str, range(line[1].count(" ") + 1))),
        trees,
        flags=re.M,
    )
    return head + sep + trees


class _BoosterModel:
    """What every model here does with its ``booster_``: raw scores, compiled on request."""

    booster_: lgb.Booster
    _forest: CompiledForest | None = None

    def compile(self) -> None:
        """Compile ``booster_`` with lleaves; raw scores then come from machine code."""
        _check_fitted(self, "booster_")
        if self._forest is None:
            self._forest = CompiledForest(self.booster_)

    def drop_compiled(self) -> None:
        """Back to LightGBM's own predictor (what :meth:`RetainModels.compile` falls back to)."""
        self._forest = None

    @property
    def compiled(self) -> bool:
        """Whether any prediction of this model runs on lleaves-compiled trees."""
        return self._forest is not None

    def _raw(self, m: FloatArray) -> FloatArray:
        if self._forest is not None:
            return self._forest.raw(m)
        return _predict(self.booster_, m, raw_score=True)


def _sigmoid(raw: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-raw))


def _booster_from_text(text: str) -> lgb.Booster:
    return lgb.Booster(model_str=text)


Offset = Literal["none", "bgnbd_logit", "bgnbd_log_count", "bgnbd_log_spend"]


def baseline_offset(kind: Offset, X: Table, scale: float = 1.0) -> FloatArray | None:
    """The BG/NBD prediction on the booster's raw scale, used as LightGBM ``init_score``.

    Boosting from the baseline means the trees learn a correction to BG/NBD; where the data
    run out (e.g. tenures longer than any training snapshot saw) the prediction falls back to
    BG/NBD's structural decline instead of a flat tree extrapolation.
    """
    if kind == "none":
        return None
    missing = [c for c in ("bgnbd_p_no_purchase_h", "bgnbd_expected_purchases_h") if c not in X]
    if missing:
        raise KeyError(f"offset {kind!r} needs baseline column(s) {missing}")
    # Direct ufuncs, not np.clip / np.nan_to_num (whose Python wrappers cost more than the
    # arithmetic on a request's few rows), with the same results: fmax(v, lo) maps NaN to lo
    # like nan_to_num(maximum(v, lo), nan=lo), and the minimum with the largest float is
    # where nan_to_num sends +inf.
    if kind == "bgnbd_logit":
        p = np.minimum(np.maximum(_col(X, "bgnbd_p_no_purchase_h"), 1e-4), 1 - 1e-4)
        return np.log(p) - np.log1p(-p)
    count = np.minimum(np.fmax(_col(X, "bgnbd_expected_purchases_h") * scale, 1e-4), _FLOAT_MAX)
    if kind == "bgnbd_log_count":
        return np.log(count)
    value = np.minimum(np.fmax(_col(X, "monetary_mean"), 1.0), _FLOAT_MAX)
    return np.log(count) + np.log(value)


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
            leaves = self._leaf_forest.leaves(m)
        else:
            leaves = np.asarray(_predict(booster, m, pred_leaf=True), dtype=np.int64)
        flat = (leaves + np.arange(self.n_trees, dtype=np.int64) * self.max_leaves).ravel()
        indptr = np.arange(0, flat.size + 1, self.n_trees)
        ones = np.ones(flat.size)
        pick = csr_matrix((ones, flat, indptr), shape=(n, self.table.shape[0]))
        return np.asarray(pick @ self.table)


# --------------------------------------------------------------------------------------
# churn
# --------------------------------------------------------------------------------------


class ChurnModel(_BoosterModel):
    """P(no purchase within the horizon): LightGBM binary, calibrated on the latest fold.

    With ``offset="bgnbd_logit"`` the booster starts from the BG/NBD churn log-odds.
    """

    _paths: LeafPaths | None = None  # built from the booster on first use

    def compile(self) -> None:
        """Compile the booster and, for the reasons, its leaf lookup (see ``LeafPaths``)."""
        super().compile()
        if self._paths is None:
            self._paths = LeafPaths(self.booster_)
        self._paths.compile(self.booster_)

    def drop_compiled(self) -> None:
        super().drop_compiled()
        if self._paths is not None:
            self._paths.drop_compiled()

    @property
    def compiled(self) -> bool:
        leaves = self._paths is not None and self._paths.compiled
        return super().compiled or leaves

    def __init__(
        self,
        calibration: Literal["platt", "isotonic", "none"] = "platt",
        config: BoostConfig | None = None,
        offset: Offset = "none",
        monotone: bool = False,
    ) -> None:
        self.calibration = calibration
        self.config = config or BoostConfig({})
        self.offset = offset
        self.monotone = monotone

    def fit(
        self,
        X: pd.DataFrame,
        churn: FloatArray,
        X_val: pd.DataFrame,
        churn_val: FloatArray,
        X_cal: pd.DataFrame | None = None,
        churn_cal: FloatArray | None = None,
    ) -> ChurnModel:
        """Early stopping on ``X_val``; calibration on ``X_cal`` (default: ``X_val``)."""
        names = list(X.columns)
        xv = _matrix(X_val, names, "ChurnModel")
        yv = np.asarray(churn_val, dtype=np.float64)
        init = _init_pair(self.offset, X, X_val)
        extra: dict[str, Any] = {}
        if self.monotone:
            extra["monotone_constraints"] = churn_monotone_constraints(names)
        self.booster_ = _train(
            self.config,
            "binary",
            _matrix(X, names, "ChurnModel"),
            np.asarray(churn, dtype=np.float64),
            names,
            (xv, yv),
            init_score=init,
            **extra,
        )
        self.feature_names_in_ = names
        if X_cal is None or churn_cal is None:
            X_cal, churn_cal = X_val, yv
        self.calibrator_ = ProbabilityCalibrator(self.calibration).fit(
            self.predict_raw(X_cal), np.asarray(churn_cal, dtype=np.float64)
        )
        return self

    def predict_log_odds(self, X: Table) -> FloatArray:
        """Uncalibrated churn log-odds (trees plus the baseline offset)."""
        _check_fitted(self, "booster_")
        raw = self._raw(_matrix(X, self.feature_names_in_, "ChurnModel"))
        offset = baseline_offset(self.offset, X)
        return raw if offset is None else raw + offset

    def predict_raw(self, X: Table) -> FloatArray:
        """Uncalibrated churn probability."""
        return 1.0 / (1.0 + np.exp(-self.predict_log_odds(X)))

    def predict_proba(self, X: Table) -> FloatArray:
        """Calibrated churn probability per row."""
        _check_fitted(self, "booster_")
        return self.calibrator_.transform(self.predict_raw(X))

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """SHAP-style contributions to the uncalibrated churn log-odds.

        Columns: one per feature, ``baseline_offset`` (the BG/NBD starting point, 0 without
        offset) and ``bias``; each row sums to :meth:`predict_log_odds`.
        """
        _check_fitted(self, "booster_")
        contrib = _predict(
            self.booster_, _matrix(X, self.feature_names_in_, "ChurnModel"), pred_contrib=True
        )
        out = pd.DataFrame(contrib[:, :-1], index=X.index, columns=list(self.feature_names_in_))
        offset = baseline_offset(self.offset, X)
        out["baseline_offset"] = 0.0 if offset is None else offset
        out["bias"] = contrib[:, -1]
        return out

    def path_contributions(self, X: Table) -> tuple[FloatArray, float]:
        """Per-feature contributions along each tree's decision path, and the bias.

        The Saabas decomposition (what ``treeinterpreter`` and XGBoost's approximate
        contributions compute): each split on a customer's path credits its feature with the
        change in the node's value. Rows sum exactly to the trees' log-odds minus the bias
        (the offset is not included). It needs one leaf lookup per tree instead of TreeSHAP's
        walk over every path, so reasons cost about as much as a prediction (TreeSHAP took
        as long as all five boosters together in ``benchmarks/batch.py``). It ranks features
        like TreeSHAP for the top reasons; ``contributions`` stays the exact SHAP values.
        """
        _check_fitted(self, "booster_")
        if self._paths is None:
            self._paths = LeafPaths(self.booster_)
        m = _matrix(X, self.feature_names_in_, "ChurnModel")
        return self._paths.contributions(self.booster_, m), self._paths.bias


def churn_monotone_constraints(names: Sequence[str]) -> list[int]:
    """LightGBM ``monotone_constraints`` for the churn booster (+1 / -1 / 0 per column)."""
    return [1 if n in CHURN_INCREASING else -1 if n in CHURN_DECREASING else 0 for n in names]


def _init_pair(
    kind: Offset, X: pd.DataFrame, X_val: pd.DataFrame, scale: float = 1.0
) -> tuple[FloatArray, FloatArray] | None:
    train = baseline_offset(kind, X, scale)
    if train is None:
        return None
    valid = baseline_offset(kind, X_val, scale)
    assert valid is not None
    return train, valid


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def day_bins(horizon_days: int) -> FloatArray:
    """Bin edges of the discrete-time hazard: 0, 7, 14, 30, 60 (those below H) and H."""
    inner = [e for e in (7.0, 14.0, 30.0, 60.0) if e < horizon_days]
    return np.array([0.0, *inner, float(horizon_days)])


def person_period(
    days_to_next: FloatArray, event: FloatArray, edges: FloatArray
) -> tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]:
    """Expand snapshots into (row, bin, event-in-bin) triples up to the event/censoring bin.

    A customer who bought on day ``d`` contributes bins ``0..k(d)`` with target 1 only in
    bin ``k(d)``; a censored customer (no purchase within H) contributes every bin with
    target 0: censored customers are kept, not dropped.
    """
    n_bins = len(edges) - 1
    ev = np.asarray(event, dtype=bool)
    k = np.clip(np.searchsorted(edges, days_to_next, side="right") - 1, 0, n_bins - 1)
    last = np.where(ev, k, n_bins - 1)
    reps = last + 1
    rows = np.repeat(np.arange(len(reps), dtype=np.int64), reps)
    starts = np.cumsum(reps) - reps
    bins = np.arange(len(rows), dtype=np.int64) - np.repeat(starts, reps)
    target = (ev[rows] & (bins == last[rows])).astype(np.float64)
    return rows, bins, target


class TimingModel(_BoosterModel):
    """Discrete-time hazard of the next purchase over day bins (censoring-aware).

    One LightGBM binary model on person-period rows predicts the hazard of buying in bin
    ``k`` given no purchase before it; the survival curve at bin edges is the running product
    of ``1 - hazard``. Non-event person-period rows are subsampled to ``max_rows`` with
    inverse-probability weights, which keeps training time bounded at millions of customers.
    Its own ``learning_rate`` (above the shared one) because it is the costliest booster
    (about 4 person-period rows per snapshot row) and only shapes the curve within H: the
    level comes from the churn model (``align_survival``). On CDNOW it took 70 of 120 s CPU
    at the shared rate 0.05 (all 1000 rounds).
    """

    def __init__(
        self,
        horizon_days: int = 90,
        max_rows: int = 2_000_000,
        config: BoostConfig | None = None,
        learning_rate: float = 0.15,
    ) -> None:
        self.horizon_days = horizon_days
        self.max_rows = max_rows
        self.config = config or BoostConfig({})
        self.learning_rate = learning_rate

    def _expand(
        self, X: FloatArray, days: FloatArray, event: FloatArray, rng: np.random.Generator | None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        rows, bins, target = person_period(days, event, self.edges_)
        weight = np.ones(len(rows))
        if rng is not None and len(rows) > self.max_rows:
            n_events = float(target.sum())
            rate = max((self.max_rows - n_events) / max(len(rows) - n_events, 1.0), 0.01)
            keep = (target == 1) | (rng.random(len(rows)) < rate)
            rows, bins, target = rows[keep], bins[keep], target[keep]
            weight = np.where(target == 1, 1.0, 1.0 / rate)
        return np.column_stack([X[rows], bins.astype(np.float64)]), target, weight

    def fit(
        self,
        X: pd.DataFrame,
        days_to_next: FloatArray,
        event: FloatArray,
        X_val: pd.DataFrame,
        days_val: FloatArray,
        event_val: FloatArray,
    ) -> TimingModel:
        names = list(X.columns)
        self.edges_ = day_bins(self.horizon_days)
        rng = np.random.default_rng(self.config.seed)
        xt, yt, wt = self._expand(_matrix(X, names, "TimingModel"), days_to_next, event, rng)
        xv, yv, wv = self._expand(_matrix(X_val, names, "TimingModel"), days_val, event_val, rng)
        self.booster_ = _train(
            self.config,
            "binary",
            xt,
            yt,
            [*names, "hazard_bin"],
            (xv, yv),
            wt,
            wv,
            learning_rate=self.learning_rate,
        )
        self.feature_names_in_ = names
        return self

    def survival(self, X: Table) -> FloatArray:
        """S(t) at the bin edges (shape n x (n_bins + 1), S(0) = 1), before any rescaling."""
        _check_fitted(self, "booster_")
        m = _matrix(X, self.feature_names_in_, "TimingModel")
        n_bins = len(self.edges_) - 1
        n, k = m.shape
        # person-period rows: each customer's features once per bin, then the bin number
        rows = np.empty((n, n_bins, k + 1))
        rows[:, :, :k] = m[:, None, :]
        rows[:, :, k] = np.arange(n_bins, dtype=np.float64)
        hazard = _sigmoid(self._raw(rows.reshape(n * n_bins, k + 1))).reshape(n, n_bins)
        # a sigmoid is never below +0.0, so clipping at 0 is only the upper bound
        np.minimum(hazard, 1.0 - _P_FLOOR, out=hazard)
        np.subtract(1.0, hazard, out=hazard)
        surv = np.empty((n, n_bins + 1))
        surv[:, 0] = 1.0
        np.cumprod(hazard, axis=1, out=surv[:, 1:])
        return surv


def align_survival(surv: FloatArray, p_churn: FloatArray) -> FloatArray:
    """Rescale the cumulative hazard so that S(H) equals the calibrated churn probability.

    S'(t) = S(t) ** (log p_churn / log S(H)) keeps the timing model's shape (when within the
    horizon purchases happen) and the churn model's level (whether one happens at all).
    """
    # minimum(maximum()) is np.clip for these non-zero bounds, without its Python wrapper
    s_h = np.minimum(np.maximum(surv[:, -1], _P_FLOOR), 1.0 - _P_FLOOR)
    p = np.minimum(np.maximum(p_churn, _P_FLOOR), 1.0 - _P_FLOOR)
    power = np.log(p) / np.log(s_h)
    out = np.minimum(np.maximum(surv, _P_FLOOR), 1.0) ** power[:, None]
    out[:, 0] = 1.0
    out[:, -1] = p_churn
    return out


def survival_summaries(surv: FloatArray, edges: FloatArray) -> dict[str, FloatArray]:
    """p(buy by 7, 30, H), median and E[T | T < H] from S at bin edges.

    Within a bin the hazard is taken as constant (exponential interpolation). The median is
    NaN when S(H) > 0.5 (more likely than not no purchase within the horizon).
    """
    width = (edges[1:] - edges[:-1])[None, :]  # np.diff
    s_a, s_b = surv[:, :-1], surv[:, 1:]
    ratio = np.minimum(np.maximum(s_b / np.maximum(s_a, _P_FLOOR), _P_FLOOR), 1.0)
    lam = -np.log(ratio) / width
    lw = lam * width
    mass = np.maximum(s_a - s_b, 0.0)  # what np.clip(..., 0.0, None) calls
    total = mass.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(lw > 1e-8, 1.0 / lam - width * ratio / (1.0 - ratio), width / 2.0)
        expected = np.where(
            total > 0, (mass * (edges[None, :-1] + offset)).sum(axis=1) / total, np.nan
        )
        # median: first bin where S drops to 0.5, then solve S(a) * ratio**(u/w) = 0.5
        below = s_b <= 0.5
        has = below.any(axis=1)
        k = np.argmax(below, axis=1)
        idx = np.arange(len(surv))
        sa, rk, wk = s_a[idx, k], ratio[idx, k], width[0, k]
        frac = np.where(rk < 1.0, np.log(0.5 / sa) / np.log(rk), 0.0)
        median = np.where(has, edges[k] + np.clip(frac, 0.0, 1.0) * wk, np.nan)

    def at(t: float) -> FloatArray:
        t = min(t, float(edges[-1]))
        j = int(np.searchsorted(edges, t, side="right") - 1)
        if j >= len(edges) - 1:
            return 1.0 - surv[:, -1]
        frac_t = (t - edges[j]) / (edges[j + 1] - edges[j])
        return 1.0 - surv[:, j] * ratio[:, j] ** frac_t

    return {
        "p_purchase_7d": at(7.0),
        "p_purchase_30d": at(30.0),
        "p_purchase_horizon": 1.0 - surv[:, -1],
        "expected_days_to_next": expected,
        "median_days_to_next": median,
    }


# --------------------------------------------------------------------------------------
# count and spend
# --------------------------------------------------------------------------------------


class SpendModel(_BoosterModel):
    """A LightGBM regression (poisson for purchase days, tweedie for spend), optionally
    boosted from the BG/NBD expectation (``offset``) and optionally re-anchored on the
    latest fold (``recalibrate``: ``scale_ = sum(actual) / sum(predicted)``, else 1).

    Tweedie handles the mass at zero (no purchase) and the skewed positive spend in one
    model, so ``E[spend] = P(buy) x E[spend | buy]`` without a separate hurdle.
    ``offset_scale`` stretches the BG/NBD horizon expectation to the label's horizon.
    """

    def __init__(
        self,
        objective: Literal["poisson", "tweedie", "gamma", "regression"] = "tweedie",
        config: BoostConfig | None = None,
        offset: Offset = "none",
        offset_scale: float = 1.0,
        recalibrate: bool = False,
        tree_weight: float = 1.0,
    ) -> None:
        self.objective = objective
        self.config = config or BoostConfig({})
        self.offset = offset
        self.offset_scale = offset_scale
        self.recalibrate = recalibrate
        self.tree_weight = tree_weight

    def fit(
        self, X: pd.DataFrame, y: FloatArray, X_val: pd.DataFrame, y_val: FloatArray
    ) -> SpendModel:
        names = list(X.columns)
        xv = _matrix(X_val, names, "SpendModel")
        yv = np.asarray(y_val, dtype=np.float64)
        extra = {"tweedie_variance_power": 1.5} if self.objective == "tweedie" else {}
        self.booster_ = _train(
            self.config,
            self.objective,
            _matrix(X, names, "SpendModel"),
            np.asarray(y, dtype=np.float64),
            names,
            (xv, yv),
            init_score=_init_pair(self.offset, X, X_val, self.offset_scale),
            **extra,
        )
        self.feature_names_in_ = names
        self.scale_ = 1.0
        if self.recalibrate:
            pred = float(self.predict(X_val).sum())
            self.scale_ = float(yv.sum() / pred) if pred > 0 else 1.0
        return self

    def predict(self, X: Table) -> FloatArray:
        _check_fitted(self, "booster_")
        m = _matrix(X, self.feature_names_in_, "SpendModel")
        raw = self._raw(m)
        offset = baseline_offset(self.offset, X, self.offset_scale)
        if offset is not None:
            # tree_weight < 1 damps the trees' correction of the BG/NBD start (see RetainModels)
            raw = offset + self.tree_weight * raw if self.tree_weight != 1.0 else raw + offset
        # LightGBM's output transform of these objectives: log link, identity for regression
        return self.scale_ * (raw if self.objective == "regression" else np.exp(raw))


# --------------------------------------------------------------------------------------
# baseline outputs as features
# --------------------------------------------------------------------------------------


def _btyd_inputs(features: Table) -> tuple[FloatArray, FloatArray, FloatArray]:
    """BTYD (frequency, recency, T) in weeks from the feature columns."""
    x = _col(features, "n_repeat_days")
    age = np.maximum(_col(features, "tenure_days") / 7.0, 1e-6)
    tx = np.clip(_col(features, "active_span_days") / 7.0, 0.0, age)
    # several orders on the first purchase day span hours but are no repeat purchase
    return x, np.where(x > 0, tx, 0.0), age


def fit_baselines(
    features: pd.DataFrame, max_customers: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """BG/NBD and Pareto/NBD fitted on one snapshot's customers (its history only).

    Their four parameters describe the population, so a random subsample of
    ``max_customers`` fits them about as well and keeps million-customer snapshots cheap.
    A degenerate fit (``training.baselines.degenerate_fit``: the no-dropout collapse) is
    recorded under ``state["degenerate"]``: Pareto/NBD's is dropped (its P(alive) column is
    NaN for the snapshot, as when its fit fails); BG/NBD's is kept but flagged, because the
    offsets start from its expectations, which stay a count model's (an NBD's) when it
    collapses, and the trees correct them.
    """
    x, tx, age = _btyd_inputs(features)
    if len(x) > max_customers:
        pick = np.random.default_rng(seed).choice(len(x), max_customers, replace=False)
        x, tx, age = x[pick], tx[pick], age[pick]
    bg = BetaGeoNBD(penalizer=0.001).fit(x, tx, age)
    state: dict[str, Any] = {"bgnbd": bg.to_dict(), "degenerate": {}}
    span = float(age.max()) if len(age) else 52.0
    if (why := degenerate_fit("bgnbd", bg.params_, span)) is not None:
        state["degenerate"]["bgnbd"] = f"{why}; kept (the offsets start from it)"
    try:
        sub = np.random.default_rng(seed + 1).permutation(len(x))[:PNBD_FEATURE_SAMPLE]
        pnbd = ParetoNBD(penalizer=0.001, max_evaluations=PNBD_FEATURE_EVALUATIONS)
        pnbd.fit(x[sub], tx[sub], age[sub])
        state["pnbd"] = pnbd.to_dict()
        if (why := degenerate_fit("paretonbd", pnbd.params_, span)) is not None:
            state["pnbd"] = None  # its feature column is then NaN for this snapshot
            state["degenerate"]["pnbd"] = f"{why}; pnbd_p_alive dropped"
    except (ValueError, FloatingPointError, FitBudgetExceeded) as exc:
        state["pnbd"] = None  # its feature column is then NaN for this snapshot
        state["degenerate"]["pnbd"] = f"fit failed ({type(exc).__name__}); pnbd_p_alive dropped"
    return state


def baseline_features(
    features: pd.DataFrame, state: dict[str, Any], horizon_days: int
) -> pd.DataFrame:
    """BG/NBD P(alive), expected purchases and P(no purchase) in H, Pareto/NBD P(alive)."""
    return pd.DataFrame(baseline_arrays(features, state, horizon_days), index=features.index)


def baseline_arrays(
    features: Table, state: dict[str, Any], horizon_days: int
) -> dict[str, FloatArray]:
    """The ``BASELINE_FEATURES`` columns as arrays, in that order."""
    bg = BetaGeoNBD.from_dict(state["bgnbd"])
    h = horizon_days / 7.0
    # The public methods would each re-check (x, t_x, T) and recompute P(alive); checking
    # once and sharing P(alive) gives the same numbers at a fraction of the fixed cost.
    x, tx, age = _as_float_arrays(*_btyd_inputs(features))
    params = bg._check_fitted()
    with np.errstate(all="ignore"):
        p_alive = bg._p_alive(params, x, tx, age)
        out = {
            "bgnbd_p_alive": p_alive,
            "bgnbd_expected_purchases_h": bg._expected_given(params, h, x, age, p_alive),
            "bgnbd_p_no_purchase_h": bg._no_purchase(params, h, x, tx, age),
        }
        if state.get("pnbd"):
            pnbd = ParetoNBD.from_dict(state["pnbd"])
            out["pnbd_p_alive"] = pnbd._p_alive(pnbd._check_fitted(), x, tx, age)
        else:
            out["pnbd_p_alive"] = np.full(len(x), np.nan)
    return out


def bgnbd_365_ratio(features: Table, state: dict[str, Any], horizon_days: int) -> FloatArray:
    """Per customer E[purchases in 365 d] / E[purchases in H] under BG/NBD (>= 1).

    Used to extrapolate horizon spend to 365 days when the history is too short for 365-day
    labels; it accounts for dropout, unlike a flat 365 / H.
    """
    bg = BetaGeoNBD.from_dict(state["bgnbd"])
    x, tx, age = _as_float_arrays(*_btyd_inputs(features))  # checked once (see baseline_arrays)
    params = bg._check_fitted()
    with np.errstate(all="ignore"):
        p_alive = bg._p_alive(params, x, tx, age)
        e_h = bg._expected_given(params, horizon_days / 7.0, x, age, p_alive)
        e_y = bg._expected_given(params, 365.0 / 7.0, x, age, p_alive)
        ratio = np.where(e_h > 1e-12, e_y / e_h, 365.0 / horizon_days)
    return np.clip(np.nan_to_num(ratio, nan=365.0 / horizon_days), 1.0, 365.0 / horizon_days)


def snapshot_record(
    cutoff: pd.Timestamp,
    horizon_days: int,
    dropped_because: str | None,
    n_customers: int,
    degenerate: dict[str, str],
) -> dict[str, Any]:
    """One requested training snapshot as JSON-ready facts (``RetainModels.snapshots_``)."""
    return {
        "cutoff": cutoff.isoformat(),
        "horizon_days": int(horizon_days),
        "used": dropped_because is None,
        "dropped_because": dropped_because,
        "n_customers": int(n_customers),
        "degenerate_baselines": dict(degenerate),
    }


def describe_snapshots(records: Sequence[dict[str, Any]]) -> list[str]:
    """Readable lines: snapshots used and dropped (with why) per horizon, degenerate fits."""
    lines: list[str] = []
    scoring = [r for r in records if r.get("scoring")]
    trained = [r for r in records if not r.get("scoring")]
    for horizon in sorted({int(r["horizon_days"]) for r in trained}):
        group = [r for r in trained if r["horizon_days"] == horizon]
        used = [r for r in group if r["used"]]
        dropped = [r for r in group if not r["used"]]
        line = f"training snapshots (H = {horizon} d): {len(used)} of {len(group)} used"
        if used:
            line += f" ({used[0]['cutoff'][:10]} .. {used[-1]['cutoff'][:10]})"
        if dropped:
            days = ", ".join(r["cutoff"][:10] for r in dropped)
            line += f"; {len(dropped)} dropped ({days}): {dropped[0]['dropped_because']}"
        lines.append(line)
        for r in used:
            for name, why in r["degenerate_baselines"].items():
                lines.append(
                    f"degenerate {name} fit on the {r['cutoff'][:10]} snapshot "
                    f"(H = {horizon} d): {why}"
                )
    for r in scoring:
        for name, why in r["degenerate_baselines"].items():
            lines.append(f"degenerate {name} fit at the scoring cutoff {r['cutoff'][:10]}: {why}")
    return lines


def days_after(as_of: pd.Timestamp, days: FloatArray) -> NDArray[np.datetime64]:
    """``as_of`` plus fractional days, as naive UTC datetime64[ns] (NaN days -> NaT)."""
    ns = np.rint(np.asarray(days, dtype=np.float64) * 86_400e9)  # np.round calls rint
    finite = np.isfinite(ns)
    if finite.all():  # the common case: no NaT to set
        return (ns.astype(np.int64) + as_of.value).view("datetime64[ns]")
    stamps = np.where(finite, ns, 0).astype(np.int64) + as_of.value  # .value is ns
    out = stamps.view("datetime64[ns]")
    out[~finite] = np.datetime64("NaT")
    return out


def prediction_frame(arrays: dict[str, Any], index: pd.Index) -> pd.DataFrame:
    """``predict_arrays`` output as the documented frame (dates tz-aware UTC)."""
    data = dict(arrays)
    data["expected_next_purchase_date"] = pd.DatetimeIndex(
        data["expected_next_purchase_date"]
    ).tz_localize("UTC")
    return pd.DataFrame({c: data[c] for c in PREDICTION_COLUMNS}, index=index)


# --------------------------------------------------------------------------------------
# the bundle
# --------------------------------------------------------------------------------------


class RetainModels:
    """Churn, timing, count and spend models trained together on leak-free snapshots.

    ``fit(log, as_of)`` trains on cutoffs whose label windows end at or before ``as_of``
    (the latest one is the validation/calibration fold); ``predict(log, as_of)`` scores every
    customer known at ``as_of``. The timing curve is rescaled so that P(no purchase in H)
    is exactly the calibrated churn probability.
    """

    def __init__(
        self,
        horizon_days: int = 90,
        n_snapshots: int = 12,
        step_days: int = 30,
        lgb_params: dict[str, Any] | None = None,
        seed: int = 0,
        num_threads: int = 2,
        num_boost_round: int = 300,
        early_stopping_rounds: int = 30,
        use_baselines: bool = True,
        calibration: Literal["platt", "isotonic", "none"] = "platt",
        holdout_share: float = 0.2,
        min_history_days: int = 30,
        max_train_rows: int = 500_000,
        max_timing_rows: int = 500_000,
        baseline_sample: int = 10_000,
        n_snapshots_365: int = 3,
        baseline_offset: bool = True,
        recalibrate_totals: bool = False,
        monotone_churn: bool = False,
        total_tree_weight: float = 1.0,
    ) -> None:
        self.horizon_days = horizon_days
        self.n_snapshots = n_snapshots
        self.step_days = step_days
        self.lgb_params = lgb_params
        self.seed = seed
        self.num_threads = num_threads
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.use_baselines = use_baselines
        self.calibration = calibration
        self.holdout_share = holdout_share
        self.min_history_days = min_history_days
        self.max_train_rows = max_train_rows
        self.max_timing_rows = max_timing_rows
        self.baseline_sample = baseline_sample
        self.n_snapshots_365 = n_snapshots_365
        self.baseline_offset = baseline_offset
        self.recalibrate_totals = recalibrate_totals
        self.monotone_churn = monotone_churn
        self.total_tree_weight = total_tree_weight

    # ---- training --------------------------------------------------------------------

    def _config(self) -> BoostConfig:
        return BoostConfig(
            dict(self.lgb_params or {}),
            self.num_boost_round,
            self.early_stopping_rounds,
            self.seed,
            self.num_threads,
        )

    def _feature_config(self) -> FeatureConfig:
        return FeatureConfig(horizon_days=min(self.horizon_days, 365))

    def snapshot(
        self, log: pd.DataFrame, cutoff: pd.Timestamp, include_365d: bool = False
    ) -> pd.DataFrame:
        """One training snapshot: features, baseline outputs and labels at ``cutoff``."""
        return self._snapshot(log, cutoff, include_365d)[0]

    def _snapshot(
        self, log: pd.DataFrame, cutoff: pd.Timestamp, include_365d: bool
    ) -> tuple[pd.DataFrame, dict[str, str]]:
        """:meth:`snapshot` and its degenerate baseline fits (name -> why)."""
        feats = build_features(log, cutoff, self._feature_config())
        degenerate: dict[str, str] = {}
        if self.use_baselines:
            state = fit_baselines(feats, self.baseline_sample, self.seed)
            degenerate = state["degenerate"]
            feats = feats.join(baseline_features(feats, state, self.horizon_days))
        labels = build_labels(log, cutoff, self.horizon_days, include_365d=include_365d)
        return join_labels(feats, labels, cutoff), degenerate

    def _training_set(
        self,
        log: pd.DataFrame,
        as_of: pd.Timestamp,
        horizon: int,
        include_365d: bool,
        n_snapshots: int,
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
        """(train, validation, calibration) frames from stacked snapshots, and their records.

        Validation holds a random ``holdout_share`` of *customers* in every snapshot (never
        in train at any cutoff): early stopping then sees every season the training rows
        see. On the latest fold alone (one season) it stopped the synthetic churn model after
        25 trees where the Q4 test needed about 1000. Calibration uses the held-out customers
        of the latest cutoff: out of sample and the most recent behaviour.
        """
        earliest = log["timestamp"].min() + pd.Timedelta(days=self.min_history_days)
        cutoffs = snapshot_cutoffs(as_of, horizon, n_snapshots, self.step_days, earliest)
        frames = []
        records: list[dict[str, Any]] = []
        for cutoff in cutoffs:
            frame, degenerate = self._snapshot(log, cutoff, include_365d)
            frames.append(frame)
            records.append(snapshot_record(cutoff, horizon, None, len(frame), degenerate))
        stacked = pd.concat(frames)
        rng = np.random.default_rng(self.seed)
        ids = stacked.index.unique()
        held = ids[rng.random(len(ids)) < self.holdout_share]
        in_holdout = stacked.index.isin(held)
        train, valid = stacked.loc[~in_holdout], stacked.loc[in_holdout]
        calib = valid.loc[valid["cutoff"] == cutoffs[-1]]
        if len(train) > self.max_train_rows:
            train = train.iloc[np.sort(rng.choice(len(train), self.max_train_rows, replace=False))]
        max_valid = max(self.max_train_rows // 2, 1)
        if len(valid) > max_valid:
            valid = valid.iloc[np.sort(rng.choice(len(valid), max_valid, replace=False))]
        return train, valid, calib, records

    def fit(self, log: pd.DataFrame, as_of: pd.Timestamp | str) -> RetainModels:
        """Train every model on snapshots whose label windows end at or before ``as_of``."""
        cutoff = to_utc_timestamp(as_of)
        config = self._config()
        earliest = log["timestamp"].min() + pd.Timedelta(days=self.min_history_days)
        records = self._dropped_snapshots(cutoff, self.horizon_days, self.n_snapshots, earliest)
        train, valid, calib, used = self._training_set(
            log, cutoff, self.horizon_days, False, self.n_snapshots
        )
        records += used
        names = [c for c in train.columns if c in _input_columns(train.columns)]
        xt, xv = train[names], valid[names]
        use_offset = self.use_baselines and self.baseline_offset
        recal = self.recalibrate_totals
        self.churn_ = ChurnModel(
            self.calibration,
            config,
            "bgnbd_logit" if use_offset else "none",
            self.monotone_churn,
        ).fit(
            xt,
            train["churn"].to_numpy(),
            xv,
            valid["churn"].to_numpy(),
            calib[names],
            calib["churn"].to_numpy(),
        )
        self.timing_ = TimingModel(self.horizon_days, self.max_timing_rows, config).fit(
            xt,
            train["days_to_next"].to_numpy(),
            train["event"].to_numpy(),
            xv,
            valid["days_to_next"].to_numpy(),
            valid["event"].to_numpy(),
        )
        count_offset: Offset = "bgnbd_log_count" if use_offset else "none"
        spend_offset: Offset = "bgnbd_log_spend" if use_offset else "none"
        weight = self.total_tree_weight
        self.count_ = SpendModel(
            "poisson", config, count_offset, recalibrate=recal, tree_weight=weight
        ).fit(xt, train["n_purchase_days_h"].to_numpy(), xv, valid["n_purchase_days_h"].to_numpy())
        self.spend_ = SpendModel(
            "tweedie", config, spend_offset, recalibrate=recal, tree_weight=weight
        ).fit(xt, train["spend_h"].to_numpy(), xv, valid["spend_h"].to_numpy())
        self.spend_365_ = None
        if self.horizon_days < 365:
            records += self._dropped_snapshots(cutoff, 365, self.n_snapshots_365, earliest)
            try:
                t365, v365, _, used = self._training_set(
                    log, cutoff, 365, True, self.n_snapshots_365
                )
                records += used
            except ValueError:
                t365 = None  # history too short for 365-day labels: extrapolate instead
            if t365 is not None:
                stretch = 365.0 / self.horizon_days
                self.spend_365_ = SpendModel(
                    "tweedie", config, spend_offset, stretch, recalibrate=recal, tree_weight=weight
                ).fit(
                    t365[names],
                    t365["spend_365d"].to_numpy(),
                    v365[names],
                    v365["spend_365d"].to_numpy(),
                )
        final_features = build_features(log, cutoff, self._feature_config())
        self.baselines_ = fit_baselines(final_features, self.baseline_sample, self.seed)
        self.feature_names_in_ = [c for c in names if c not in BASELINE_FEATURES]
        self.fitted_as_of_ = cutoff
        self.n_train_rows_ = len(train)
        self.snapshots_ = sorted(records, key=lambda r: (r["horizon_days"], r["cutoff"]))
        return self

    def _dropped_snapshots(
        self, as_of: pd.Timestamp, horizon: int, n_snapshots: int, earliest: pd.Timestamp
    ) -> list[dict[str, Any]]:
        """Records of the requested cutoffs the log is too short for (not trained on)."""
        why = (
            f"before {earliest.date()} (the first order + min_history_days = "
            f"{self.min_history_days}): too little history"
        )
        return [
            snapshot_record(cutoff, horizon, why, 0, {})
            for cutoff in snapshot_cutoffs(as_of, horizon, n_snapshots, self.step_days)
            if cutoff < earliest
        ]

    # ---- prediction ------------------------------------------------------------------

    @property
    def input_names_(self) -> list[str]:
        """Every booster's input columns, in order: the features, then the BTYD outputs."""
        _check_fitted(self, "churn_")
        extra = list(BASELINE_FEATURES) if self.use_baselines else []
        return [*self.feature_names_in_, *extra]

    def model_input(self, values: FloatArray, names: Sequence[str]) -> ModelInput:
        """Feature columns (any order, extra columns ignored) -> the boosters' input.

        Selects ``feature_names_in_`` by position and appends the BTYD baseline outputs, so
        every booster reads the result without reindexing or copying.
        """
        _check_fitted(self, "churn_")
        take, names_out = self._input_layout(names)
        values = np.asarray(values, dtype=np.float64)
        n, k = values.shape[0], len(take)
        out = np.empty((n, len(names_out)))
        out[:, :k] = values[:, take]
        if self.use_baselines:
            base = baseline_arrays(
                ModelInput(out[:, :k], self.feature_names_in_), self.baselines_, self.horizon_days
            )
            for j, name in enumerate(BASELINE_FEATURES):
                out[:, k + j] = base[name]
        return ModelInput(out, names_out)

    def _input_layout(self, names: Sequence[str]) -> tuple[NDArray[np.intp], tuple[str, ...]]:
        """Positions of ``feature_names_in_`` among ``names``, and ``input_names_``."""
        given = {name: i for i, name in enumerate(names)}
        missing = [c for c in self.feature_names_in_ if c not in given]
        if missing:
            raise KeyError(f"RetainModels: features lack column(s) {missing} seen at fit time")
        return np.array([given[c] for c in self.feature_names_in_]), tuple(self.input_names_)

    def _model_input(self, features: pd.DataFrame) -> pd.DataFrame:
        """``model_input`` of a feature frame, as a frame on the same index."""
        return self._frame_input(features).to_frame(features.index)

    def _frame_input(self, features: pd.DataFrame) -> ModelInput:
        _check_fitted(self, "churn_")
        present = [c for c in self.feature_names_in_ if c in features.columns]
        x = features.loc[:, present].to_numpy(dtype=np.float64, na_value=np.nan)
        return self.model_input(x, present)  # names any missing column

    def predict(self, log: pd.DataFrame, as_of: pd.Timestamp | str) -> pd.DataFrame:
        """Scores for every customer with an order before ``as_of`` (index customer_id)."""
        cutoff = to_utc_timestamp(as_of)
        return self.predict_features(build_features(log, cutoff, self._feature_config()), cutoff)

    def predict_features(self, features: pd.DataFrame, as_of: pd.Timestamp | str) -> pd.DataFrame:
        """Scores from a ready feature frame (columns in any order, extra columns ignored)."""
        arrays = self.predict_arrays(self._frame_input(features), to_utc_timestamp(as_of))
        return prediction_frame(arrays, features.index)

    def predict_arrays(self, x: ModelInput, as_of: pd.Timestamp) -> dict[str, FloatArray]:
        """``PREDICTION_COLUMNS`` as arrays (the next-purchase date as datetime64[ns], UTC)."""
        p_churn = self.churn_.predict_proba(x)
        surv = align_survival(self.timing_.survival(x), p_churn)
        summary = survival_summaries(surv, self.timing_.edges_)
        spend_h = self.spend_.predict(x)
        if self.spend_365_ is not None:
            spend_y = np.maximum(self.spend_365_.predict(x), spend_h)
        else:
            spend_y = spend_h * bgnbd_365_ratio(x, self.baselines_, self.horizon_days)
        expected_days = summary["expected_days_to_next"]
        return {
            "churn_probability": p_churn,
            "p_purchase_7d": summary["p_purchase_7d"],
            "p_purchase_30d": summary["p_purchase_30d"],
            "p_purchase_horizon": summary["p_purchase_horizon"],
            "expected_days_to_next": expected_days,
            "median_days_to_next": summary["median_days_to_next"],
            "expected_next_purchase_date": days_after(to_utc_timestamp(as_of), expected_days),
            "expected_purchases_horizon": self.count_.predict(x),
            "expected_spend_horizon": spend_h,
            "expected_spend_365d": spend_y,
        }

    def feature_contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """Per-customer, per-input path contributions to the churn log-odds ('top reasons').

        One column per model input (catalog features, then baseline outputs), no bias or
        offset column: positive values push churn risk up. See
        ``ChurnModel.path_contributions``; ``ChurnModel.contributions`` has exact SHAP values.
        """
        x = self._frame_input(features)
        return ModelInput(self.reason_contributions(x), x.names).to_frame(features.index)

    def reason_contributions(self, x: ModelInput) -> FloatArray:
        """(n, len(input_names_)) churn path contributions, columns as ``x.names``."""
        return self.churn_.path_contributions(x)[0]

    # ---- persistence -----------------------------------------------------------------

    def compile(self) -> RetainModels:
        """Compile every booster with lleaves for scoring (a few seconds, once per process).

        Predictions then run about 10x faster, and ``path_contributions`` finds the churn
        trees' leaves in compiled code too. Training and the backtest never need it.

        Compiled trees are an optimisation, not a requirement: when lleaves is missing or
        compiling fails (no LLVM for this platform, an llvmlite lleaves cannot drive, no
        writable temporary directory), every booster goes back to LightGBM's own predictor,
        which gives the same numbers, and one :class:`CompiledTreesUnavailable` warning says
        why. All boosters fall back together, so a process never mixes the two.
        """
        _check_fitted(self, "churn_")
        boosters = [model for model in self._boosters().values() if model is not None]
        try:
            for model in boosters:
                model.compile()
        except Exception as exc:  # any failure of an optional accelerator: fall back
            for model in boosters:
                model.drop_compiled()
            warnings.warn(
                f"compiled trees unavailable ({type(exc).__name__}: {exc}); scoring with "
                "LightGBM's own predictor (same numbers, about 10x slower)",
                CompiledTreesUnavailable,
                stacklevel=2,
            )
        return self

    @property
    def compiled(self) -> bool:
        """Whether any booster scores on compiled trees (False after a fallback)."""
        return any(m.compiled for m in self._boosters().values() if m is not None)

    def _boosters(self) -> dict[str, Any]:
        return {
            "churn": self.churn_,
            "timing": self.timing_,
            "count": self.count_,
            "spend": self.spend_,
            "spend_365": self.spend_365_,
        }

    def save(self, directory: str | Path) -> Path:
        """LightGBM text files plus ``retain_models.json``; no pickle anywhere."""
        _check_fitted(self, "churn_")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        models: dict[str, Any] = {}
        for name, model in self._boosters().items():
            if model is None:
                models[name] = None
                continue
            path = out / f"{name}.lgb.txt"
            path.write_text(model.booster_.model_to_string(), encoding="utf-8")
            entry: dict[str, Any] = {
                "file": path.name,
                "feature_names": list(model.feature_names_in_),
            }
            if isinstance(model, ChurnModel):
                entry["calibration"] = model.calibrator_.to_dict()
                entry["offset"] = model.offset
            if isinstance(model, TimingModel):
                entry["edges"] = model.edges_.tolist()
            if isinstance(model, SpendModel):
                entry["objective"] = model.objective
                entry["scale"] = model.scale_
                entry["offset"] = model.offset
                entry["offset_scale"] = model.offset_scale
                entry["recalibrate"] = model.recalibrate
                entry["tree_weight"] = model.tree_weight
            models[name] = entry
        meta = {
            "format_version": _FORMAT_VERSION,
            "params": self.get_params(),
            "feature_names_in": self.feature_names_in_,
            "fitted_as_of": self.fitted_as_of_.isoformat(),
            "n_train_rows": self.n_train_rows_,
            "snapshots": self.snapshots_,
            "baselines": self.baselines_,
            "models": models,
            "versions": {"lightgbm": lgb.__version__, "numpy": np.__version__},
        }
        (out / "retain_models.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> RetainModels:
        """Rebuild a fitted bundle from :meth:`save` output; predicts identically."""
        src = Path(directory)
        meta_path = src / "retain_models.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no retain_models.json in {src}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported model format {meta.get('format_version')!r}")
        self = cls(**meta["params"])
        config = self._config()
        m = meta["models"]
        texts = {
            entry["file"]: (src / entry["file"]).read_text(encoding="utf-8")
            for entry in m.values()
            if entry is not None
        }
        check_model_texts(texts)  # a malformed text would abort this process in LightGBM

        def booster(entry: dict[str, Any]) -> lgb.Booster:
            return _booster_from_text(texts[entry["file"]])

        self.churn_ = ChurnModel(
            self.calibration, config, m["churn"]["offset"], self.monotone_churn
        )
        self.churn_.booster_ = booster(m["churn"])
        self.churn_.feature_names_in_ = m["churn"]["feature_names"]
        self.churn_.calibrator_ = ProbabilityCalibrator.from_dict(m["churn"]["calibration"])
        self.timing_ = TimingModel(self.horizon_days, self.max_timing_rows, config)
        self.timing_.booster_ = booster(m["timing"])
        self.timing_.feature_names_in_ = m["timing"]["feature_names"]
        self.timing_.edges_ = np.asarray(m["timing"]["edges"], dtype=np.float64)
        for name in ("count", "spend", "spend_365"):
            entry = m.get(name)
            if entry is None:
                setattr(self, f"{name}_", None)
                continue
            model = SpendModel(
                entry["objective"],
                config,
                entry["offset"],
                float(entry["offset_scale"]),
                bool(entry["recalibrate"]),
                float(entry.get("tree_weight", 1.0)),
            )
            model.booster_ = booster(entry)
            model.feature_names_in_ = entry["feature_names"]
            model.scale_ = float(entry["scale"])
            setattr(self, f"{name}_", model)
        self.baselines_ = meta["baselines"]
        self.feature_names_in_ = list(meta["feature_names_in"])
        self.fitted_as_of_ = pd.Timestamp(meta["fitted_as_of"])
        self.n_train_rows_ = int(meta["n_train_rows"])
        self.snapshots_ = list(meta.get("snapshots", []))  # absent in models saved before
        return self

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-ready), the scikit-learn convention."""
        return {
            "horizon_days": self.horizon_days,
            "n_snapshots": self.n_snapshots,
            "step_days": self.step_days,
            "lgb_params": self.lgb_params,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "num_boost_round": self.num_boost_round,
            "early_stopping_rounds": self.early_stopping_rounds,
            "use_baselines": self.use_baselines,
            "calibration": self.calibration,
            "holdout_share": self.holdout_share,
            "min_history_days": self.min_history_days,
            "max_train_rows": self.max_train_rows,
            "max_timing_rows": self.max_timing_rows,
            "baseline_sample": self.baseline_sample,
            "n_snapshots_365": self.n_snapshots_365,
            "baseline_offset": self.baseline_offset,
            "recalibrate_totals": self.recalibrate_totals,
            "monotone_churn": self.monotone_churn,
            "total_tree_weight": self.total_tree_weight,
        }


def _input_columns(columns: Sequence[str]) -> set[str]:
    """Model inputs: the feature catalog plus baseline outputs (never labels or cutoff)."""
    allowed = set(FEATURE_COLUMNS) | set(BASELINE_FEATURES)
    return {c for c in columns if c in allowed}


__all__ = [
    "BASELINE_FEATURES",
    "PREDICTION_COLUMNS",
    "BoostConfig",
    "ChurnModel",
    "CompiledForest",
    "CompiledTreesUnavailable",
    "LeafPaths",
    "ModelInput",
    "RetainModels",
    "SpendModel",
    "TimingModel",
    "align_survival",
    "day_bins",
    "describe_snapshots",
    "person_period",
    "survival_summaries",
]
