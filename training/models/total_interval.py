"""The planner's total (a population's summed forecasts) and its 90 % interval.

The interval combines two terms on the log scale: the count distribution's own sampling
spread (Poisson; spend as compound Poisson with unit coefficient of variation per purchase)
and the spread of the log errors of the total over past cutoffs (held-out customers of the
training cutoffs and the shadow's out-of-time window). The leave-one-out coverage of those
past intervals is recorded with them, so a planner can see how often the interval held.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

Z90 = 1.6448536269514722  # two-sided 90 % normal quantile
DEFAULT_LOG_SPREAD = 0.25  # the past-error spread assumed without two past cutoffs


def totals_with_interval(
    purchases: float, spend: float, spreads: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Total purchases and spend with their 90 % intervals: the past log-error spread
    (``spreads``, default :data:`DEFAULT_LOG_SPREAD`) and the Poisson count term."""
    out: dict[str, dict[str, float]] = {}
    for name, total in (("purchases", purchases), ("spend", spend)):
        spread = float(spreads.get(name, DEFAULT_LOG_SPREAD))
        # spend: compound Poisson with unit coefficient of variation per purchase
        sampling = (1.0 if name == "purchases" else 2.0) / max(purchases, 1e-9)
        half = Z90 * float(np.sqrt(spread**2 + sampling))
        out[name] = {
            "forecast": total,
            "low": total * float(np.exp(-half)),
            "high": total * float(np.exp(half)),
        }
    return out


def past_totals(
    cut: np.ndarray,
    cutoffs: list[Any],
    count: FloatArray,
    spend: FloatArray,
    y_count: FloatArray,
    y_spend: FloatArray,
    shadow: tuple[str, FloatArray, FloatArray, pd.DataFrame] | None,
) -> dict[str, Any]:
    """Log errors of the total per past cutoff (held-out customers; the shadow's out-of-time
    forecast of the latest window), their spread, and leave-one-out coverage."""
    out: dict[str, Any] = {}
    groups = [("held_out", c, cut == c, count, spend, y_count, y_spend) for c in cutoffs]
    if shadow is not None:
        at, c_sh, s_sh, f_sh = shadow
        everyone = np.ones(len(c_sh), dtype=bool)
        y_c = f_sh["n_purchase_days_h"].to_numpy(dtype=np.float64)
        y_s = f_sh["spend_h"].to_numpy(dtype=np.float64)
        groups.append(("out_of_time", at, everyone, c_sh, s_sh, y_c, y_s))
    for k, name in enumerate(("purchases", "spend")):
        rows, errors, sampling = [], [], []
        for kind, c, here, cnt, spd, y_c, y_s in groups:
            pred, actual = (cnt, spd)[k], (y_c, y_s)[k]
            p, a = float(pred[here].sum()), float(actual[here].sum())
            if p > 0 and a > 0:
                rows.append(
                    {
                        "cutoff": pd.Timestamp(c).isoformat(),
                        "kind": kind,
                        "forecast": p,
                        "actual": a,
                    }
                )
                errors.append(np.log(a / p))
                # spend: compound Poisson with unit coefficient of variation per purchase
                n = max(float(cnt[here].sum()), 1e-9)
                sampling.append((1.0 if name == "purchases" else 2.0) / n)
        err = np.array(errors)
        covered = 0
        for i, r in enumerate(rows):
            half = Z90 * np.sqrt(log_spread(np.delete(err, i)) ** 2 + sampling[i])
            r["covered"] = bool(abs(err[i]) <= half)
            covered += int(r["covered"])
        out[name] = {
            "log_spread": log_spread(err),
            "past": rows,
            "past_covered": covered,
            "past_n": len(rows),
        }
    return out


def log_spread(errors: FloatArray) -> float:
    """Root mean square of past log errors of the total (bias counts as spread)."""
    if len(errors) < 2:
        return DEFAULT_LOG_SPREAD
    return float(np.sqrt(np.mean(np.square(errors))))
