"""BTYD fits: the give-up rule for degenerate fits, start values, shared hyp2f1 terms.

On real data (the CDNOW master log) and on a log without dropout, where Pareto/NBD
collapses (``tests.training.conftest.no_dropout_log``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.builders import FeatureConfig, build_features
from features.sources.cdnow import read_cdnow
from tests.training.conftest import no_dropout_log
from training.baselines.bgnbd import BetaGeoNBD
from training.baselines.degenerate import degenerate_fit
from training.baselines.likelihood import GIVE_UP_PATIENCE, DegenerateFitStopped
from training.baselines.paretonbd import ParetoNBD
from training.baselines.summary import rfm_summary
from training.models.btyd_features import fit_baselines


@pytest.fixture(scope="module")
def cdnow(cdnow_master_path: Path) -> pd.DataFrame:
    return read_cdnow(cdnow_master_path).log


def _rfm(log: pd.DataFrame, as_of: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = rfm_summary(log, as_of, time_unit_days=7.0)
    return (s[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T"))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def collapsed_rfm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _rfm(no_dropout_log(1500, seed=4), "2024-04-01")


def test_pareto_fit_in_the_collapse_stops_early_and_says_why(
    collapsed_rfm: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, tx, age = collapsed_rfm
    span = float(age.max())
    # the full fit ends in the no-dropout collapse: what the early stop would drop anyway
    full = ParetoNBD(penalizer=0.001).fit(x, tx, age)
    assert degenerate_fit("paretonbd", full.params_, span) is not None
    with pytest.raises(DegenerateFitStopped) as stopped:
        ParetoNBD(penalizer=0.001).fit(
            x, tx, age, give_up=lambda p: degenerate_fit("paretonbd", p, span)
        )
    assert "no-dropout collapse" in stopped.value.reason
    assert stopped.value.iterations >= GIVE_UP_PATIENCE
    assert f"stopped after {stopped.value.iterations} iterations" in str(stopped.value)


def test_snapshot_fits_report_the_early_stop() -> None:
    log = no_dropout_log(1500, seed=4)
    features = build_features(log, pd.Timestamp("2024-04-01", tz="UTC"), FeatureConfig())
    state = fit_baselines(features, 10_000, 0)
    assert state["pnbd"] is None
    why = state["degenerate"]["pnbd"]
    assert why.startswith("stopped after") and "pnbd_p_alive dropped" in why


def test_healthy_fits_never_give_up_and_keep_their_optimum(cdnow: pd.DataFrame) -> None:
    """On CDNOW at 1998-01-01 (healthy fits) the give-up rule changes no bit of the result."""
    x, tx, age = _rfm(cdnow, "1998-01-01")
    span = float(age.max())
    plain = ParetoNBD(penalizer=0.001).fit(x, tx, age)
    watched = ParetoNBD(penalizer=0.001).fit(
        x, tx, age, give_up=lambda p: degenerate_fit("paretonbd", p, span)
    )
    assert watched.params_ == plain.params_
    assert degenerate_fit("paretonbd", plain.params_, span) is None


@pytest.mark.parametrize("model", [BetaGeoNBD, ParetoNBD])
def test_start_values_reach_the_same_optimum_on_cdnow(model: type, cdnow: pd.DataFrame) -> None:
    """Started from the fit a quarter earlier (as a previous snapshot), the fit at 1998-01-01
    reaches the default start's optimum within the optimiser's tolerance."""
    before = model(penalizer=0.001).fit(*_rfm(cdnow, "1997-10-01"))
    x, tx, age = _rfm(cdnow, "1998-01-01")
    cold = model(penalizer=0.001).fit(x, tx, age)
    warm = model(penalizer=0.001).fit(x, tx, age, start=before.params_)
    assert before.params_ != cold.params_  # a different start indeed
    for name, value in cold.params_.items():
        assert warm.params_[name] == pytest.approx(value, rel=1e-3)
    assert warm.loglik_ == pytest.approx(cold.loglik_, abs=0.05)  # of about -50,000
    with pytest.raises(ValueError, match="finite and > 0"):
        model().fit(x, tx, age, start={**cold.params_, next(iter(cold.params_)): 0.0})


def test_shared_hyp2f1_terms_give_the_rowwise_likelihood(cdnow: pd.DataFrame) -> None:
    """The fit computes each distinct (x, t) hyp2f1 term once; its log-likelihood is the sum
    of the row-by-row one (every customer without a repeat purchase shares one term)."""
    x, tx, age = _rfm(cdnow, "1998-01-01")
    assert (x == 0).sum() > len(x) / 2  # most CDNOW customers never return
    fitted = ParetoNBD().fit(x, tx, age)
    rowwise = fitted.log_likelihood(x, tx, age)
    assert fitted.loglik_ == pytest.approx(float(rowwise.sum()), rel=1e-12)
