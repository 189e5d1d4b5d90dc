"""Whether the churn probability is averaged with BG/NBD's, chosen on an out-of-time window.

The churn map (``training.models.combine``) fixes the level on held-out customers of
windows the trees saw; the forecast's window is new, and there the map can miss by more
than the ECE margin of issue 25 (Complete Journey 2017-12-01: ECE 0.0215 on its own
windows, 0.0248 on the test against BG/NBD's 0.0188). The shadow's forecast of the latest
window (``training.models.shadow``) is the one out-of-time evidence: where the even average
with BG/NBD (fitted at the cutoff on the whole history, so tied to no window's level)
calibrates better there than the mapped model, the forecast uses the average.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.evaluation import metrics

FloatArray = NDArray[np.float64]

# the model's share in the average: one choice (the model or the even average) rather than
# a grid, because the ECE that chooses has a noise floor of about 0.014 on a window of
# 2,400 customers and a fine grid follows that noise (on Complete Journey 2017-06-01 the
# grid's best, 0.2, lost the AUC floor: 0.8735 against Pareto/NBD's 0.8737)
CHURN_AVERAGE = 0.5


def choose_churn_average(
    y: FloatArray, model: FloatArray, bgnbd: FloatArray, another_season: bool
) -> tuple[float, dict[str, Any]]:
    """The model's share (1 or :data:`CHURN_AVERAGE`) on an out-of-time window, and why.

    ``y`` are the window's churn labels, ``model`` the mapped model's probabilities for
    them, ``bgnbd`` BG/NBD's. The average is kept when its ECE (the floor's measure: 10
    equal-width bins) is strictly below the model's. A window of another season than the
    forecast's is no evidence for it (as for the blend weights): the model is kept and the
    comparison recorded.
    """
    ece_model = float(metrics.expected_calibration_error(y, model))
    average = CHURN_AVERAGE * model + (1 - CHURN_AVERAGE) * bgnbd
    ece_average = float(metrics.expected_calibration_error(y, average))
    share = CHURN_AVERAGE if ece_average < ece_model else 1.0
    why = "out-of-time ECE"
    if another_season:
        share, why = 1.0, "another season: the model kept"
    return share, {"why": why, "ece_model": ece_model, "ece_average": ece_average}
