"""Pareto/NBD: Schmittlein, Morrison & Colombo (1987), likelihood in the form of Fader &
Hardie (2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions"."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln, hyp2f1

from training.baselines.count_model import CountModel
from training.baselines.summary import check_rfm

FloatArray = NDArray[np.float64]


class _Pairs(NamedTuple):
    """The distinct (x, t) pairs among a fit's (x, t_x) and (x, T), and where each row's are."""

    x: FloatArray
    t: FloatArray
    at_tx: NDArray[np.intp]
    at_age: NDArray[np.intp]


def _pairs(x: FloatArray, tx: FloatArray, age: FloatArray) -> _Pairs:
    n = len(x)
    stacked = np.column_stack([np.concatenate([x, x]), np.concatenate([tx, age])])
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return _Pairs(uniq[:, 0].copy(), uniq[:, 1].copy(), inverse[:n], inverse[n:])


class ParetoNBD(CountModel):
    """Pareto/NBD: Poisson purchases at rate lambda ~ Gamma(r, alpha) while alive;
    exponential lifetime with rate mu ~ Gamma(s, beta).

    ``penalizer`` as for :class:`BetaGeoNBD`.
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("r", "alpha", "s", "beta")

    def _initial(self, mean_x: float, mean_age: float) -> FloatArray:
        rate = max(mean_x / max(mean_age, 1e-9), 1e-3)
        mean_t = max(mean_age, 1e-3)
        return np.array([1.0, 1.0 / rate, 1.0, mean_t])

    @staticmethod
    def _log_term(params: FloatArray, x: FloatArray, t: FloatArray) -> FloatArray:
        """One of A0's two terms, at t = t_x or t = T (hyp2f1 branch with argument in [0, 1))."""
        r, alpha, s, beta = params
        rsx = r + s + x
        if alpha >= beta:
            big, b_arg = alpha, s + 1.0
        else:
            big, b_arg = beta, r + x
        gap = abs(alpha - beta)
        return np.log(hyp2f1(rsx, b_arg, rsx + 1.0, gap / (big + t))) - rsx * np.log(big + t)

    @classmethod
    def _log_a0(
        cls,
        params: FloatArray,
        x: FloatArray,
        tx: FloatArray,
        age: FloatArray,
        pairs: _Pairs | None = None,
    ) -> FloatArray:
        """log A0 of Fader & Hardie's note.

        A0 is a difference of two positive terms (t_x and T); it is formed in log space as
        l1 + log(1 - exp(l2 - l1)) so it is 0 -> -inf cleanly when t_x == T. With ``pairs``
        (a fit's rows, :func:`_pairs`) each distinct (x, t) pair's hyp2f1 is computed once:
        every customer without a repeat purchase shares (0, 0), the costliest term where
        the fit nears the no-dropout collapse.
        """
        if pairs is None:
            l1, l2 = cls._log_term(params, x, tx), cls._log_term(params, x, age)
        else:
            terms = cls._log_term(params, pairs.x, pairs.t)
            l1, l2 = terms[pairs.at_tx], terms[pairs.at_age]
        diff = np.minimum(l2 - l1, 0.0)
        with np.errstate(divide="ignore"):
            return l1 + np.log(-np.expm1(diff))

    def _log_alive_odds(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        """log P(dead, data) / P(alive, data)."""
        r, alpha, s, beta = params
        return (
            np.log(s)
            - np.log(r + s + x)
            + (r + x) * np.log(alpha + age)
            + s * np.log(beta + age)
            + self._log_a0(params, x, tx, age)
        )

    def _fit_loglik(
        self, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> Callable[[FloatArray], FloatArray]:
        """Per-row log-likelihood of a fit's rows, each distinct hyp2f1 term once."""
        pairs = _pairs(x, tx, age)
        return lambda params: self._loglik_rows(params, x, tx, age, pairs)

    def _loglik_rows(
        self,
        params: FloatArray,
        x: FloatArray,
        tx: FloatArray,
        age: FloatArray,
        pairs: _Pairs | None = None,
    ) -> FloatArray:
        r, alpha, s, beta = params
        head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        alive = -(r + x) * np.log(alpha + age) - s * np.log(beta + age)
        # far from the optimum A0 can come out NaN; the optimiser treats a non-finite
        # likelihood as a wall (``fit_log_params``), so the warning is only noise
        with np.errstate(invalid="ignore"):
            dead = np.log(s) - np.log(r + s + x) + self._log_a0(params, x, tx, age, pairs)
            return head + np.logaddexp(alive, dead)

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(still alive at T | x, t_x, T)."""
        params = self.fitted_params()
        return self.p_alive_array(params, *check_rfm(frequency, recency, T))

    def p_alive_array(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        """:meth:`conditional_probability_alive` on checked arrays."""
        odds = self._log_alive_odds(params, x, tx, age)
        return 1.0 / (1.0 + np.exp(np.minimum(odds, 700.0)))

    def conditional_expected_purchases(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[purchases in (T, T + t] | x, t_x, T] (Schmittlein et al. 1987, eq. 22)."""
        params = self.fitted_params()
        r, alpha, s, beta = params
        x, tx, age = check_rfm(frequency, recency, T)
        tt = np.asarray(t, dtype="float64")
        p_alive = self.p_alive_array(params, x, tx, age)
        scale = (r + x) * (beta + age) / (alpha + age)
        if abs(s - 1.0) < 1e-8:
            life = np.log((beta + age + tt) / (beta + age))
        else:
            life = (1 - ((beta + age) / (beta + age + tt)) ** (s - 1)) / (s - 1)
        return p_alive * scale * life
