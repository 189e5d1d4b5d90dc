"""Uplift metrics on hand-computed cases (Radcliffe's Qini curve and coefficient, uplift at k).

The same figures came out of scikit-uplift 0.5.1's ``qini_auc_score`` and ``uplift_at_k``
(run by hand outside the suite: it calls a scikit-learn function removed in 1.10).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.metrics import qini_coefficient, qini_curve, uplift_at_top

# six customers: bought?, treated?, predicted uplift
Y = [1, 0, 1, 0, 1, 0]
T = [1, 1, 0, 0, 1, 0]
SCORE = [0.9, 0.1, 0.2, 0.5, 0.8, 0.3]


def test_qini_curve_hand_computed() -> None:
    # order 0 (t, bought), 4 (t, bought), 3 (c), 5 (c), 2 (c, bought), 1 (t):
    # k=1: 1 - 0; k=2: 2 - 0; k=3: 2 - 0*2/1; k=4: 2 - 0*2/2; k=5: 2 - 1*2/3; k=6: 2 - 1*3/3
    x, gain = qini_curve(Y, SCORE, T)
    assert x.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert gain == pytest.approx([0, 1, 2, 2, 2, 4 / 3, 1])


def test_qini_coefficient_hand_computed() -> None:
    # area under the curve: 0.5 + 1.5 + 2 + 2 + 5/3 + 7/6 = 53/6; random line to (6, 1): 3;
    # perfect order (score y*t - y*(1-t)): points (0,0) (2,2) (5,2) (6,1), area 9.5
    assert qini_coefficient(Y, SCORE, T) == pytest.approx((53 / 6 - 3) / (9.5 - 3))


def test_tied_scores_are_one_step() -> None:
    # customers 1 and 2 tie: one point after both, k=3: 1 - 1*2/1 = -1; area 1.0
    tied = [0.6, 0.5, 0.5, 0.3, 0.2, 0.1]
    x, gain = qini_curve(Y, tied, T)
    assert x.tolist() == [0, 1, 3, 4, 5, 6]
    assert gain == pytest.approx([0, 1, -1, 0, 0.5, 1])
    assert qini_coefficient(Y, tied, T) == pytest.approx((1.0 - 3) / (9.5 - 3))
    # and the result does not depend on which of the tied rows comes first
    swap = [0, 2, 1, 3, 4, 5]
    assert qini_coefficient(np.array(Y)[swap], np.array(tied)[swap], np.array(T)[swap]) == (
        pytest.approx(qini_coefficient(Y, tied, T))
    )


def test_uplift_at_top_hand_computed() -> None:
    # top 3: customers 0, 4 (treated, both bought) and 3 (held out, did not): 1 - 0
    assert uplift_at_top(Y, SCORE, T, 0.5) == pytest.approx(1.0)
    # all six: treated 2/3 bought, held out 1/3
    assert uplift_at_top(Y, SCORE, T, 1.0) == pytest.approx(2 / 3 - 1 / 3)
    # top 2 holds no held-out customer: undefined
    assert math.isnan(uplift_at_top(Y, SCORE, T, 1 / 3))
    # a tie across the boundary counts pro rata: top 2 of [0.6, 0.5, 0.5, ...] is
    # customer 0 (t, bought) plus half of 1 (t) and half of 2 (c, bought): 1/1.5 - 0.5/0.5
    assert uplift_at_top(Y, [0.6, 0.5, 0.5, 0.3, 0.2, 0.1], T, 1 / 3) == pytest.approx(
        1 / 1.5 - 1.0
    )


def test_random_order_scores_near_zero_and_true_uplift_above() -> None:
    rng = np.random.default_rng(3)
    n = 40_000
    true_uplift = rng.uniform(-0.1, 0.4, n)
    t = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.2 + true_uplift * t).astype(int)
    # the perfect curve is drawn from the realised outcomes, so even the true uplift is far
    # from 1 (0.17 here); random order is about 0 (-0.006)
    assert abs(qini_coefficient(y, rng.random(n), t)) < 0.05
    assert qini_coefficient(y, true_uplift, t) > 0.1
    assert uplift_at_top(y, true_uplift, t, 0.1) > uplift_at_top(y, -true_uplift, t, 0.1)


@pytest.mark.parametrize(
    ("y", "t", "message"),
    [
        ([1, 0, 2], [1, 0, 1], "y must be 0/1"),
        ([1, 0, 1], [1, 0, 3], "treatment must be 0/1"),
        ([1, 0, 1], [1, 1, 1], "both treated"),
    ],
)
def test_bad_input_names_the_argument(y: list[int], t: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        qini_coefficient(y, [0.1, 0.2, 0.3], t)
