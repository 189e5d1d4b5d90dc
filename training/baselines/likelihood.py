"""Maximum-likelihood fitting shared by the BTYD baselines (BG/NBD, Pareto/NBD, Gamma-Gamma).

Parameters are fitted on the log scale within fixed bounds, each distinct input row once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from training.threads import single_thread_blas

FloatArray = NDArray[np.float64]


_LOG_BOUND = 15.0  # log-parameters live in [-15, 15]: keeps exp() finite, far from any MLE


def group_rows(
    *cols: FloatArray, weights: FloatArray | None = None
) -> tuple[list[FloatArray], FloatArray]:
    """Unique rows and their counts: the likelihood only needs each distinct row once.

    With ``weights`` each row stands for that many customers (a reduced summary whose rows
    may repeat, e.g. merged from several partitions); the counts are the weights' sums.
    """
    stacked = np.column_stack(cols)
    if weights is None:
        uniq, counts = np.unique(stacked, axis=0, return_counts=True)
        return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype("float64")
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=weights, minlength=len(uniq))
    return [uniq[:, i] for i in range(uniq.shape[1])], summed.astype("float64")


class FitBudgetExceeded(RuntimeError):
    """The likelihood was evaluated ``max_evaluations`` times without converging."""


class DegenerateFitStopped(RuntimeError):
    """The optimiser stayed in a region the caller discards; ``reason`` says which.

    Raised by :func:`fit_log_params` when ``give_up`` named the iterate's parameters for
    ``patience`` iterations in a row; ``iterations`` is how many the fit had run.
    """

    def __init__(self, reason: str, iterations: int) -> None:
        super().__init__(f"stopped after {iterations} iterations: {reason}")
        self.reason = reason
        self.iterations = iterations


# How many optimiser iterations in a row an iterate may stay where ``give_up`` says the fit
# is discarded before the fit stops. Pareto/NBD fits that end degenerate enter the collapse
# within their first iterations and then creep along it (s -> 0 or beta -> infinity) for
# hundreds of likelihood evaluations, where hyp2f1 is slowest.
GIVE_UP_PATIENCE = 8


def fit_log_params(
    neg_mean_ll: Callable[[FloatArray], float],
    x0: NDArray[np.float64],
    penalizer: float,
    max_evaluations: int | None = None,
    give_up: Callable[[FloatArray], str | None] | None = None,
    patience: int = GIVE_UP_PATIENCE,
) -> tuple[FloatArray, optimize.OptimizeResult]:
    """Minimise the mean negative log-likelihood over log-parameters.

    L-BFGS-B from ``x0``; only if it reports failure (finite-difference gradients on the
    flat Pareto/NBD ridge can stall it) a Nelder-Mead polish continues from its end point.
    ``max_evaluations`` bounds the work deterministically: Pareto/NBD's hyp2f1 slows down
    by orders of magnitude in some parameter regions (seen: minutes for one fit on a
    synthetic snapshot), and per-snapshot feature fits must not hang training.

    ``give_up(params)`` names why parameters are of no use to the caller (None when they
    are); after ``patience`` iterations in a row it names, the fit raises
    :class:`DegenerateFitStopped` instead of converging to a result the caller would drop.
    """
    calls = [0]
    streak = [0, 0]  # iterations in a row give_up named; iterations so far

    def watch(intermediate_result: optimize.OptimizeResult) -> None:
        streak[1] += 1
        reason = give_up(np.exp(intermediate_result.x)) if give_up is not None else None
        streak[0] = streak[0] + 1 if reason is not None else 0
        if reason is not None and streak[0] >= patience:
            raise DegenerateFitStopped(reason, streak[1])

    def objective(logp: FloatArray) -> float:
        calls[0] += 1
        if max_evaluations is not None and calls[0] > max_evaluations:
            raise FitBudgetExceeded(f"no convergence within {max_evaluations} evaluations")
        value = neg_mean_ll(np.exp(logp)) + penalizer * float(np.sum(np.exp(logp) ** 2))
        return value if np.isfinite(value) else 1e300

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(x0)
    with single_thread_blas():  # BLAS threads on four parameters: all wake-up, no work
        first, polish = _minimize(objective, x0, bounds, watch if give_up else None)
    best = polish if polish.fun <= first.fun else first
    if not np.isfinite(best.fun) or best.fun >= 1e300:
        raise RuntimeError(f"maximum-likelihood fit failed: {best.message}")
    return np.exp(best.x), best


def _minimize(
    objective: Callable[[FloatArray], float],
    x0: FloatArray,
    bounds: list[tuple[float, float]],
    callback: Callable[[FloatArray], None] | None,
) -> tuple[optimize.OptimizeResult, optimize.OptimizeResult]:
    """L-BFGS-B, then Nelder-Mead from its end point only if it reports failure."""
    first = optimize.minimize(
        objective,
        x0,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-12, "gtol": 1e-8},
        callback=callback,
    )
    polish = first
    if not first.success:
        polish = optimize.minimize(
            objective,
            first.x,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-7, "fatol": 1e-11, "maxiter": 2000},
            callback=callback,
        )
    return first, polish
