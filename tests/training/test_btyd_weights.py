"""BTYD fits on a reduced RFM summary: unique (x, t_x, T) rows with customer counts.

A cluster's partitions send such summaries (many customers share a row: everyone without a
repeat purchase who started on the same day); the fit on them must be the per-customer fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from features.log.purchase_log import canonicalize
from features.synthetic.synth import generate_purchase_log
from training.baselines.bgnbd import BetaGeoNBD
from training.baselines.likelihood import group_rows
from training.baselines.paretonbd import ParetoNBD
from training.baselines.summary import rfm_summary


@pytest.fixture(scope="module")
def rfm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = generate_purchase_log(3000, seed=11, start="2022-01-01", end="2023-12-31").log
    summary = rfm_summary(canonicalize(raw).log, "2023-07-01")
    return (
        summary["frequency"].to_numpy(dtype=np.float64),
        summary["recency"].to_numpy(dtype=np.float64),
        summary["T"].to_numpy(dtype=np.float64),
    )


def _partition_summaries(
    x: np.ndarray, tx: np.ndarray, age: np.ndarray, parts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each partition's unique rows with counts, concatenated (rows repeat across parts)."""
    cols: list[list[np.ndarray]] = [[], [], [], []]
    for chunk in np.array_split(np.arange(len(x)), parts):
        (ux, utx, uage), counts = group_rows(x[chunk], tx[chunk], age[chunk])
        for col, values in zip(cols, (ux, utx, uage, counts), strict=True):
            col.append(values)
    out = [np.concatenate(c) for c in cols]
    return out[0], out[1], out[2], out[3]


@pytest.mark.parametrize("model", [BetaGeoNBD, ParetoNBD])
def test_fit_on_the_reduced_summary_is_the_per_customer_fit(
    model: type, rfm: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    x, tx, age = rfm
    ux, utx, uage, counts = _partition_summaries(x, tx, age, parts=3)
    assert len(ux) < len(x)  # customers share rows: the summary is smaller
    assert counts.sum() == len(x)
    full = model(penalizer=0.001).fit(x, tx, age)
    reduced = model(penalizer=0.001).fit(ux, utx, uage, weights=counts)
    assert reduced.n_customers_ == full.n_customers_ == len(x)
    for name in model.PARAM_NAMES:
        assert reduced.params_[name] == pytest.approx(full.params_[name], rel=1e-4), name
    assert reduced.loglik_ == pytest.approx(full.loglik_, rel=1e-6)
    # and the predictions the features use agree too
    p_full = full.conditional_probability_alive(x, tx, age)
    p_reduced = reduced.conditional_probability_alive(x, tx, age)
    np.testing.assert_allclose(p_reduced, p_full, rtol=1e-4, atol=1e-6)


def test_weights_count_customers_not_rows(rfm: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, tx, age = rfm
    head = slice(0, 400)
    twice = BetaGeoNBD().fit(
        np.concatenate([x[head], x[head]]),
        np.concatenate([tx[head], tx[head]]),
        np.concatenate([age[head], age[head]]),
    )
    weighted = BetaGeoNBD().fit(x[head], tx[head], age[head], weights=np.full(400, 2.0))
    assert weighted.n_customers_ == twice.n_customers_ == 800
    for name in BetaGeoNBD.PARAM_NAMES:
        assert weighted.params_[name] == pytest.approx(twice.params_[name], rel=1e-4)
    once = BetaGeoNBD().fit(x[head], tx[head], age[head])
    assert weighted.loglik_ == pytest.approx(2 * once.loglik_, rel=1e-8)


@pytest.mark.parametrize(
    ("weights", "match"),
    [([1.0, 2.0], "2 values for 3 rows"), ([1.0, -1.0, 1.0], ">= 0"), ([0.0, 0.0, 0.0], "zero")],
)
def test_bad_weights_are_refused(weights: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BetaGeoNBD().fit([1.0, 0.0, 2.0], [1.0, 0.0, 3.0], [4.0, 5.0, 6.0], weights=weights)
