"""The statistics of a lift: difference in means with Welch's standard error, and CUPED.

:func:`estimate` compares treated and holdout customers on one metric: the difference in means
with the Neyman (Welch) standard error and Welch-Satterthwaite degrees of freedom, and the
CUPED version with the pre-period metric as covariate (Deng et al., 2013). 0/1 outcomes have
each arm's variance floored (:func:`binary_floor`, Agresti-Caffo) so a small holdout where
nobody bought does not look exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))
Z80 = float(stats.norm.ppf(0.8))


@dataclass(frozen=True)
class Estimate:
    """Treated minus holdout for one metric, raw and CUPED-adjusted, with Welch's df."""

    mean_treated: float
    mean_holdout: float
    lift: float
    se: float
    df: float
    lift_cuped: float
    se_cuped: float
    df_cuped: float
    theta: float

    @property
    def use_cuped(self) -> bool:
        return math.isfinite(self.se_cuped) and self.se_cuped < self.se

    @property
    def headline(self) -> tuple[float, float, float]:
        """(lift, se, df) of the estimate reported: CUPED where it narrows the interval."""
        if self.use_cuped:
            return self.lift_cuped, self.se_cuped, self.df_cuped
        return self.lift, self.se, self.df


def mean_var(y: np.ndarray) -> tuple[float, float]:
    if len(y) == 0:
        return math.nan, math.nan
    return float(y.mean()), float(y.var(ddof=1)) if len(y) > 1 else 0.0


def welch(vt: float, nt: int, vc: float, nc: int) -> tuple[float, float]:
    """Standard error and Welch-Satterthwaite degrees of freedom of a difference in means."""
    a, b = vt / nt, vc / nc
    se = math.sqrt(a + b)
    denominator = a * a / (nt - 1) + b * b / (nc - 1)
    df = (a + b) ** 2 / denominator if denominator > 0 else math.inf
    return se, df


def critical(df: float) -> float:
    """Two-sided 95% critical value of Student's t (the normal one for large df)."""
    if not math.isfinite(df) or df > 1e6:
        return Z95
    return float(stats.t.ppf(0.975, max(df, 1.0)))


def binary_floor(y: np.ndarray, variance: float) -> float:
    """A 0/1 arm's variance, at least ``p(1 - p)`` with ``p = (buyers + 1) / (n + 2)``.

    An arm where nobody (or everybody) bought has sample variance 0, which would pretend its
    rate is known exactly; adding one buyer and one non-buyer (Agresti & Caffo, 2000) keeps
    small holdouts honest and changes nothing for arms of ordinary size and rate.
    """
    p = (float(y.sum()) + 1.0) / (len(y) + 2.0)
    return max(variance, p * (1.0 - p))


def estimate(
    y: np.ndarray, x: np.ndarray, treated: np.ndarray, *, binary: bool = False
) -> Estimate:
    """Difference in means (Welch) and its CUPED version with covariate ``x``.

    ``binary``: ``y`` is 0/1 (bought); each arm's variance is floored (:func:`binary_floor`),
    the CUPED one at the floor times ``1 - rho^2`` (what the covariate can explain).
    """
    yt, yc = y[treated], y[~treated]
    mt, vt = mean_var(yt)
    mc, vc = mean_var(yc)
    nt, nc = len(yt), len(yc)
    nan = math.nan
    if nt < 2 or nc < 2:
        return Estimate(mt, mc, mt - mc, nan, nan, nan, nan, nan, nan)
    if binary:
        vt, vc = binary_floor(yt, vt), binary_floor(yc, vc)
    se, df = welch(vt, nt, vc, nc)
    var_x = float(x.var(ddof=1))
    theta = float(np.cov(x, y, ddof=1)[0, 1] / var_x) if var_x > 0 else nan
    lift_c, se_c, df_c = nan, nan, nan
    if math.isfinite(theta):
        adjusted = y - theta * (x - x.mean())
        at, vat = mean_var(adjusted[treated])
        ac, vac = mean_var(adjusted[~treated])
        if binary:
            var_y = float(y.var(ddof=1))
            rho2 = theta * theta * var_x / var_y if var_y > 0 else 0.0
            keep = max(1.0 - rho2, 0.0)
            vat, vac = max(vat, vt * keep), max(vac, vc * keep)
        lift_c = at - ac
        se_c, df_c = welch(vat, nt, vac, nc)
    return Estimate(mt, mc, mt - mc, se, df, lift_c, se_c, df_c, theta)


def p_value(lift: float, se: float, df: float) -> float:
    if not (math.isfinite(se) and se > 0):
        return math.nan
    t = abs(lift / se)
    if not math.isfinite(df) or df > 1e6:
        return float(2.0 * stats.norm.sf(t))
    return float(2.0 * stats.t.sf(t, max(df, 1.0)))


def relative_lift(e: Estimate, nt: int, nc: int, vt: float, vc: float) -> tuple[float, float]:
    """``mean_t / mean_c - 1`` with a delta-method standard error."""
    mc = e.mean_holdout
    if not (mc > 0):
        return math.nan, math.nan
    lift = e.headline[0]
    mt = mc + lift
    var = vt / (nt * mc**2) + (mt**2) * vc / (nc * mc**4)
    return mt / mc - 1.0, math.sqrt(var)
