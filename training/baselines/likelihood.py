"""Maximum-likelihood fitting shared by the BTYD baselines (BG/NBD, Pareto/NBD, Gamma-Gamma).

Parameters are fitted on the log scale within fixed bounds, each distinct input row once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from training.threads import single_thread_blas

FloatArray = NDArray[np.float64]


_LOG_BOUND = 15.0  # log-parameters live in [-15, 15]: keeps exp() finite, far from any MLE


def group_rows(*cols: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """Unique rows and their counts: the likelihood only needs each distinct row once."""
    stacked = np.column_stack(cols)
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype("float64")


class FitBudgetExceeded(RuntimeError):
    """The likelihood was evaluated ``max_evaluations`` times without converging."""


def fit_log_params(
    neg_mean_ll: Any,
    x0: NDArray[np.float64],
    penalizer: float,
    max_evaluations: int | None = None,
) -> tuple[FloatArray, optimize.OptimizeResult]:
    """Minimise the mean negative log-likelihood over log-parameters.

    L-BFGS-B from ``x0``; only if it reports failure (finite-difference gradients on the
    flat Pareto/NBD ridge can stall it) a Nelder-Mead polish continues from its end point.
    ``max_evaluations`` bounds the work deterministically: Pareto/NBD's hyp2f1 slows down
    by orders of magnitude in some parameter regions (seen: minutes for one fit on a
    synthetic snapshot), and per-snapshot feature fits must not hang training.
    """
    calls = [0]

    def objective(logp: FloatArray) -> float:
        calls[0] += 1
        if max_evaluations is not None and calls[0] > max_evaluations:
            raise FitBudgetExceeded(f"no convergence within {max_evaluations} evaluations")
        value = neg_mean_ll(np.exp(logp)) + penalizer * float(np.sum(np.exp(logp) ** 2))
        return value if np.isfinite(value) else 1e300

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(x0)
    with single_thread_blas():  # BLAS threads on four parameters: all wake-up, no work
        first, polish = _minimize(objective, x0, bounds)
    best = polish if polish.fun <= first.fun else first
    if not np.isfinite(best.fun) or best.fun >= 1e300:
        raise RuntimeError(f"maximum-likelihood fit failed: {best.message}")
    return np.exp(best.x), best


def _minimize(
    objective: Any, x0: FloatArray, bounds: list[tuple[float, float]]
) -> tuple[optimize.OptimizeResult, optimize.OptimizeResult]:
    """L-BFGS-B, then Nelder-Mead from its end point only if it reports failure."""
    first = optimize.minimize(
        objective, x0, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-12, "gtol": 1e-8}
    )
    polish = first
    if not first.success:
        polish = optimize.minimize(
            objective,
            first.x,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-7, "fatol": 1e-11, "maxiter": 2000},
        )
    return first, polish
