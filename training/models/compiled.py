"""Compiled scoring: boosters compiled to machine code by lleaves, with a fallback.

``BoosterModel`` is the base of the model classes: raw scores from LightGBM, or from a
``CompiledForest`` after ``compile()``. ``compile_together`` compiles several models or,
when lleaves cannot, none (one ``CompiledTreesUnavailable`` warning; same numbers).
"""

from __future__ import annotations

import ctypes
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray

from training.models.boosters import SMALL_BATCH_ROWS, check_fitted, predict_booster, threads_for

FloatArray = NDArray[np.float64]

_K_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float constant)
LLEAVES_BLOCK = 34
"""Trees per cache block of a raw-score forest (lleaves' default, pinned): each block's trees
are summed onto 0.0 in order, then the block sums in order, and ``LeafPaths.raw_scores``
repeats that order to give the forest's very bits from its leaves."""
# lleaves' entry point, void forest_root(double *rows, double *out, int32 start, int32 end),
# given plain addresses (``_address``: cheaper than ``ndarray.ctypes``)
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


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
        options: dict[str, Any] = {"fblocksize": LLEAVES_BLOCK}
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
        self._n_features = int(model.num_feature())
        # the compiled function itself, for small batches: lleaves' ``predict`` spends more
        # on converting both arrays to ctypes pointers than its trees take on a few rows
        address = ctypes.cast(model._c_entry_func, ctypes.c_void_p).value
        self._entry = _ENTRY(address) if model.use_fp64 and address else None

    def raw(self, m: FloatArray) -> FloatArray:
        """Raw scores, shape (n,); (n, outputs) for a multi-output forest."""
        n = len(m)
        if n == 0:
            return np.empty(0)
        if n < SMALL_BATCH_ROWS and self._entry is not None:
            return self._raw_small(m, n)
        return np.asarray(self._model.predict(np.ascontiguousarray(m), n_jobs=threads_for(n)))

    def _raw_small(self, m: FloatArray, n: int) -> FloatArray:
        """What ``lleaves.Model.predict(m, n_jobs=1)`` does (one call of the compiled
        forest over every row, into zeros), with the buffers passed without a copy."""
        assert self._entry is not None
        rows = np.ascontiguousarray(m, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self._n_features:
            raise ValueError(f"Data must be of dimension (N, {self._n_features}), is {rows.shape}.")
        if not rows.flags.writeable:  # from_buffer wants a writable buffer; the trees only read
            rows = rows.copy()
        out = np.zeros(n if self._n_outputs == 1 else (n, self._n_outputs))
        self._entry(_address(rows), _address(out), 0, n)
        return out

    def leaves(self, m: FloatArray) -> NDArray[np.int64]:
        """(n, trees) leaf indices of a ``leaf_indices`` forest, as LightGBM's ``pred_leaf``.

        LightGBM's predictor reads |x| <= ``_K_ZERO`` as 0 (it keeps only larger values of
        a dense row); zeroing them here first makes lleaves route every row the same way.
        """
        raw = self.raw(np.where(np.abs(m) <= _K_ZERO, 0.0, m))
        return raw.reshape(len(m), self._n_outputs).astype(np.int64)  # (n,) for one tree


def routes_as_given(m: FloatArray) -> bool:
    """Whether :meth:`CompiledForest.leaves` routes the rows of ``m`` as they are: no value
    is a nonzero within ``_K_ZERO`` of 0 (those it reads as 0, the raw forest does not)."""
    tiny = np.abs(m) <= _K_ZERO
    return not (tiny & (m != 0.0)).any()


def _address(array: np.ndarray) -> int:
    """The address of a writable, contiguous array's first byte."""
    return ctypes.addressof(ctypes.c_char.from_buffer(array.data))


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


class BoosterModel:
    """What every model here does with its ``booster_``: raw scores, compiled on request."""

    booster_: lgb.Booster
    _forest: CompiledForest | None = None

    def compile(self) -> None:
        """Compile ``booster_`` with lleaves; raw scores then come from machine code."""
        check_fitted(self, "booster_")
        if self._forest is None:
            self._forest = CompiledForest(self.booster_)

    def drop_compiled(self) -> None:
        """Back to LightGBM's own predictor (what :func:`compile_together` falls back to)."""
        self._forest = None

    @property
    def compiled(self) -> bool:
        """Whether any prediction of this model runs on lleaves-compiled trees."""
        return self._forest is not None

    def raw_scores(self, m: FloatArray) -> FloatArray:
        """The booster's raw scores of the rows of ``m`` (compiled after :meth:`compile`)."""
        if self._forest is not None:
            return self._forest.raw(m)
        return predict_booster(self.booster_, m, raw_score=True)


def compile_together(models: Sequence[BoosterModel]) -> None:
    """Compile every model with lleaves, or, when that fails, none of them.

    Compiled trees are an optimisation, not a requirement: when lleaves is missing or
    compiling fails (no LLVM for this platform, an llvmlite lleaves cannot drive, no
    writable temporary directory), every model goes back to LightGBM's own predictor, which
    gives the same numbers, and one :class:`CompiledTreesUnavailable` warning says why. All
    models fall back together, so a process never mixes the two.
    """
    try:
        for model in models:
            model.compile()
    except Exception as exc:  # any failure of an optional accelerator: fall back
        for model in models:
            model.drop_compiled()
        warnings.warn(
            f"compiled trees unavailable ({type(exc).__name__}: {exc}); scoring with "
            "LightGBM's own predictor (same numbers, about 10x slower)",
            CompiledTreesUnavailable,
            stacklevel=3,
        )
