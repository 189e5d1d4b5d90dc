"""Reasons in words: every model input has a phrase, and phrases only name risk drivers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.catalog import BTYD_FEATURES, FEATURE_COLUMNS, MODEL_INPUTS
from serving.reasons import RISK_PHRASES, phrase_for, reason_texts, top_reasons
from training.models.btyd_features import BASELINE_FEATURES


def test_every_catalog_feature_and_btyd_input_has_a_phrase() -> None:
    assert set(FEATURE_COLUMNS) | set(BASELINE_FEATURES) == set(MODEL_INPUTS)
    assert tuple(BTYD_FEATURES) == BASELINE_FEATURES
    for name in MODEL_INPUTS:
        phrase = RISK_PHRASES.get(name)
        assert phrase, f"{name} has no phrase"
        assert phrase_for(name, 0.3) == phrase
        assert phrase != name.replace("_", " "), f"{name} falls through to its raw name"
    # the Pareto/NBD input used to read "pnbd p alive"
    assert phrase_for("pnbd_p_alive", 0.3) == phrase_for("bgnbd_p_alive", 0.3)


@pytest.mark.parametrize("name", sorted(MODEL_INPUTS))
def test_a_contribution_that_lowers_risk_is_not_worded_as_a_risk(name: str) -> None:
    assert phrase_for(name, 0.25) == RISK_PHRASES[name]
    assert phrase_for(name, -0.25) == ""
    assert phrase_for(name, 0.0) == ""


def test_reasons_follow_the_sign_of_each_contribution() -> None:
    names = ["recency_days", "n_orders", "pnbd_p_alive"]
    values = np.array(
        [
            [0.5, -0.7, 0.1],  # recency and the BTYD pattern raise risk, orders lower it
            [-0.5, 0.7, -0.1],  # only the number of orders raises risk
            [-0.2, -0.3, -0.4],  # nothing raises risk: no reasons at all
        ]
    )
    got = reason_texts(values, names, k=3)
    assert got.tolist() == [
        [RISK_PHRASES["recency_days"], RISK_PHRASES["pnbd_p_alive"], ""],
        [RISK_PHRASES["n_orders"], "", ""],
        ["", "", ""],
    ]
    frame = top_reasons(pd.DataFrame(values, columns=names, index=["a", "b", "c"]), k=2)
    assert frame.loc["b"].tolist() == [RISK_PHRASES["n_orders"], ""]
