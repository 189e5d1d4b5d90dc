"""BG/NBD: Fader, Hardie & Lee (2005), "Counting your customers the easy way: an
alternative to the Pareto/NBD model", Marketing Science 24(2)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln, hyp2f1

from training.baselines.count_model import CountModel
from training.baselines.summary import check_rfm

FloatArray = NDArray[np.float64]


class BetaGeoNBD(CountModel):
    """BG/NBD: Poisson purchases at rate lambda ~ Gamma(r, alpha); after each purchase the
    customer drops out with probability p ~ Beta(a, b).

    ``penalizer`` adds ``penalizer * sum(params**2)`` to the mean negative log-likelihood
    (the lifetimes convention), which tames small or degenerate samples.
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ("r", "alpha", "a", "b")

    def _initial(self, mean_x: float, mean_age: float) -> FloatArray:
        rate = max(mean_x / max(mean_age, 1e-9), 1e-3)
        return np.array([1.0, 1.0 / rate, 1.0, 1.0])

    @staticmethod
    def _loglik_head(
        params: FloatArray, x: FloatArray, tx: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """The terms of the log-likelihood that do not depend on T: (a1 + a2, a4)."""
        r, alpha, a, b = params
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(
                x > 0,
                np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx),
                -np.inf,
            )
        return a1 + a2, a4

    @staticmethod
    def _loglik_tail(
        params: FloatArray, x: FloatArray, age: FloatArray, head: FloatArray, a4: FloatArray
    ) -> FloatArray:
        r, alpha = params[0], params[1]
        a3 = -(r + x) * np.log(alpha + age)
        return head + np.logaddexp(a3, a4)

    def _loglik_rows(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        head, a4 = self._loglik_head(params, x, tx)
        return self._loglik_tail(params, x, age, head, a4)

    def _loglik_later_and_now(
        self, params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray, t: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """As the base class, with the T-free terms of both likelihoods computed once."""
        head, a4 = self._loglik_head(params, x, tx)
        later = self._loglik_tail(params, x, age + t, head, a4)
        return later, self._loglik_tail(params, x, age, head, a4)

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(still alive at T | x, t_x, T); 1 for customers with no repeat purchase."""
        params = self.fitted_params()
        return self.p_alive_array(params, *check_rfm(frequency, recency, T))

    @staticmethod
    def p_alive_array(
        params: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray
    ) -> FloatArray:
        """:meth:`conditional_probability_alive` on checked arrays."""
        r, alpha, a, b = params
        log_ratio = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * (np.log(alpha + age) - np.log(alpha + tx))
        )
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700.0))), 1.0)

    def expected_purchases(self, t: float | ArrayLike) -> FloatArray:
        """E[X(t)]: repeat purchases of a new customer in their first t units."""
        r, alpha, a, b = self.fitted_params()
        tt = np.asarray(t, dtype="float64")
        z = tt / (alpha + tt)
        return (
            (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + tt)) ** r * hyp2f1(r, b, a + b - 1, z))
        )

    def conditional_expected_purchases(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[repeat purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10)."""
        params = self.fitted_params()
        x, tx, age = check_rfm(frequency, recency, T)
        return self.expected_purchases_array(
            params, t, x, age, self.p_alive_array(params, x, tx, age)
        )

    @staticmethod
    def expected_purchases_array(
        params: FloatArray,
        t: float | ArrayLike,
        x: FloatArray,
        age: FloatArray,
        p_alive: FloatArray,
    ) -> FloatArray:
        """:meth:`conditional_expected_purchases` on checked arrays and their P(alive)."""
        r, alpha, a, b = params
        tt = np.asarray(t, dtype="float64")
        z = tt / (alpha + age + tt)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
        bracket = 1 - ((alpha + age) / (alpha + age + tt)) ** (r + x) * hyp
        factor = (a + b + x - 1) / (a - 1)
        return factor * bracket * p_alive
