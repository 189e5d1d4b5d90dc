"""The uplift training set and model: outcomes in the window, refused inputs, the estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from features.builders import build_features
from features.retention.assignments import AssignmentError, assignments_from_scores
from tests.training.conftest import make_log, simulate_log
from training.dataset.uplift_data import UpliftDataError, uplift_training_set
from training.models.uplift import UpliftModel

SEND = pd.Timestamp("2024-03-01", tz="UTC")


@pytest.fixture(scope="module")
def hand_log() -> pd.DataFrame:
    # a: buys inside the window; b: only a return inside and a purchase after it;
    # c: buys on the send day itself; d: buys the day before the send date
    return make_log(
        [
            ("a", "2024-01-10", 20.0),
            ("a", "2024-03-15", 30.0),
            ("b", "2024-01-05", 40.0),
            ("b", "2024-03-20", 40.0),
            ("b", "2024-04-02", 25.0),
            ("c", "2024-02-01", 10.0),
            ("c", "2024-03-01 08:00", 10.0),
            ("d", "2024-01-20", 10.0),
            ("d", "2024-02-29 23:00", 15.0),
            ("e", "2024-06-30", 1.0),  # the log runs to the end of June
        ],
        returns=frozenset({3}),
    )


def assignments(ids: list[str], treated: list[int], send: object = SEND) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ids, "send_date": send, "treated": treated})


def test_outcome_is_a_purchase_in_the_window(hand_log: pd.DataFrame) -> None:
    data = uplift_training_set(hand_log, assignments(["a", "b", "c", "d"], [1, 0, 1, 0]), 30)
    # a bought on 03-15; b's only row in [03-01, 03-31) is a return; c bought on the send
    # day; d's purchase the evening before does not count
    assert data.bought.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert data.treated.tolist() == [1.0, 0.0, 1.0, 0.0]
    # features are as of the send date: d's purchase of 02-29 23:00 is 1 hour old
    assert data.features.loc["d", "recency_days"] == pytest.approx(1 / 24)
    assert data.features.loc["c", "n_orders"] == 1  # the send-day order is not a feature
    # b's purchase of 04-02 is inside a 40-day window
    longer = uplift_training_set(hand_log, assignments(["a", "b"], [1, 0]), 40)
    assert longer.bought.tolist() == [1.0, 1.0]


def test_window_past_the_end_of_the_log_is_refused(hand_log: pd.DataFrame) -> None:
    late = assignments(["a", "b"], [1, 0], send=pd.Timestamp("2024-06-15", tz="UTC"))
    with pytest.raises(UpliftDataError, match=r"2 of 2 customer\(s\) cannot be observed"):
        uplift_training_set(hand_log, late, 30)
    # a window ending exactly at the end of the log's last day is whole
    whole = assignments(["a", "b"], [1, 0], send=pd.Timestamp("2024-06-01", tz="UTC"))
    assert len(uplift_training_set(hand_log, whole, 30)) == 2


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (assignments(["a", "b", "a"], [1, 0, 0]), r"2 row\(s\) assign a customer twice.*a, a"),
        (assignments(["a", "b"], [1, 1]), "no held-out"),
        (assignments(["a", "b"], [0, 0]), "no sent"),
        (assignments(["a", "b"], [1, 2]), r"treated must be true/false.*rows \[2\].*'2'"),
        (assignments(["a", "zz"], [1, 0]), r"no purchase in the log before.*customer_id zz"),
        (assignments(["a", "e"], [1, 0]), r"no purchase in the log before.*customer_id e"),
        (pd.DataFrame({"customer_id": ["a"], "treated": [1]}), r"lack column\(s\) \['send_date'\]"),
        (assignments(["a", "b"], [1, 0], send=[SEND, None]), r"send_date is missing.*b"),
    ],
)
def test_bad_assignments_name_the_rows(
    hand_log: pd.DataFrame, frame: pd.DataFrame, message: str
) -> None:
    with pytest.raises(AssignmentError, match=message):
        uplift_training_set(hand_log, frame, 30)


def test_one_customer_in_two_campaigns_is_two_rows(hand_log: pd.DataFrame) -> None:
    frame = assignments(["a", "a", "b"], [1, 0, 0])
    frame["campaign"] = ["spring", "summer", "spring"]
    frame.loc[1, "send_date"] = pd.Timestamp("2024-04-10", tz="UTC")
    data = uplift_training_set(hand_log, frame, 30)
    assert data.bought.tolist() == [1.0, 0.0, 0.0]  # a bought 03-15, not in 04-10..05-10


def test_assignments_from_scores_is_intention_to_treat() -> None:
    scores = pd.DataFrame(
        {
            "customer_id": ["s", "h", "n", "x", "hn"],
            "offer_rule": ["r1", "r1", "r2", "", "r2"],
            "offer_expected_value": [1.0, 2.0, -0.5, 0.0, -1.0],
            "offer_send_date": pd.to_datetime(["2024-03-01"] * 5, utc=True),
            "holdout": [False, True, False, False, True],
        }
    )
    out = assignments_from_scores(scores)
    # sent (s) and held out (h) are the experiment; negative value (n, hn) and no rule
    # (x) were never candidates
    assert out["customer_id"].tolist() == ["s", "h"]
    assert out["treated"].tolist() == [1, 0]
    assert (out["send_date"] == SEND).all()
    assert out["holdout"].tolist() == [False, True]


def test_suppressed_customers_are_neither_treated_nor_held_out(hand_log: pd.DataFrame) -> None:
    """One rule for both readers: the simulator's rows (with the suppressed) are the
    experiment's rows plus customers who are neither sent nor held out, and uplift training
    refuses them instead of counting a never-sent customer as a held-out one."""
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "offer_rule": ["r1", "r1", "r2", "r2"],
            "offer_expected_value": [1.0, 2.0, -0.5, 3.0],
            "offer_send_date": pd.to_datetime(["2024-03-01"] * 4, utc=True),
            "holdout": [False, True, False, False],
            "campaign": "spring",
        }
    )
    experiment = assignments_from_scores(scores)
    simulated = assignments_from_scores(scores, suppressed=True)
    assert simulated["customer_id"].tolist() == ["a", "b", "c", "d"]
    assert simulated["treated"].tolist() == [True, False, False, True]
    assert simulated["holdout"].tolist() == [False, True, False, False]
    shared = simulated[simulated["customer_id"] != "c"].reset_index(drop=True)
    pd.testing.assert_frame_equal(shared, experiment)
    assert uplift_training_set(hand_log, experiment, 30).treated.tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(AssignmentError, match=r"holdout and treated must be opposites.*rows \[3\]"):
        uplift_training_set(hand_log, simulated, 30)


# ------------------------------------------------------------------------ the estimator


@pytest.fixture(scope="module")
def training() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Customers of a simulated log with a known effect: only recent-ish buyers respond."""
    log = simulate_log(2500, seed=3)
    send = pd.Timestamp("2024-06-01", tz="UTC")
    ids = log["customer_id"].cat.categories
    rng = np.random.default_rng(0)
    treated = (rng.random(len(ids)) < 0.5).astype(int)
    frame = assignments(list(ids), list(treated), send=send)
    before = log.loc[log["timestamp"] < send, "customer_id"].astype("str").unique()
    frame = frame.loc[frame["customer_id"].isin(before)].reset_index(drop=True)
    data = uplift_training_set(log, frame, 60)
    recency = data.features["recency_days"].to_numpy()
    tau = np.where((recency > 30) & (recency < 200), 0.4, 0.0)
    bought = np.maximum(data.bought, (data.treated == 1) & (rng.random(len(tau)) < tau))
    return data.features, data.treated, bought.astype(float), tau


def test_follows_the_scikit_learn_contract(training: tuple) -> None:
    x, t, y, _ = training
    model = UpliftModel(num_boost_round=20, seed=4)
    assert model.get_params()["seed"] == 4
    with pytest.raises(NotFittedError):
        model.predict(x)
    model.fit(x, t, y)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "boosters_")  # clone copies parameters, not learned state
    copy.set_params(num_boost_round=10, learner="transformed_outcome")
    assert copy.fit(x, t, y).predict(x).shape == (len(x),)
    assert model.num_boost_round == 20  # set_params on the clone left the original alone
    assert model.n_features_in_ == x.shape[1]


def test_ranks_the_responders_first(training: tuple) -> None:
    x, t, y, tau = training
    up = UpliftModel().fit(x, t, y).predict(x)
    assert up[tau > 0].mean() > up[tau == 0].mean() + 0.15


def test_save_load_and_compile_predict_the_same(training: tuple, tmp_path: Path) -> None:
    x, t, y, _ = training
    model = UpliftModel(num_boost_round=40).fit(x, t, y)
    before = model.predict(x)
    model.save(tmp_path / "u", metadata={"window_days": 60})
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == [
        "uplift_control.lgb.txt",
        "uplift_model.json",
        "uplift_treated.lgb.txt",
    ]
    loaded = UpliftModel.load(tmp_path / "u")
    assert loaded.metadata_ == {"window_days": 60}
    np.testing.assert_array_equal(loaded.predict(x), before)
    shuffled = x[list(reversed(x.columns))]  # columns are found by name
    np.testing.assert_allclose(loaded.compile().predict(shuffled), before, atol=1e-12)
    meta = json.loads((tmp_path / "u" / "uplift_model.json").read_text())
    assert meta["params"] == model.get_params()


def test_fit_refuses_one_group(training: tuple) -> None:
    x, _, y, _ = training
    with pytest.raises(ValueError, match="both sent"):
        UpliftModel().fit(x, np.ones(len(x)), y)
    with pytest.raises(ValueError, match="learner must be"):
        UpliftModel(learner="s_learner").fit(x, np.r_[1, np.zeros(len(x) - 1)], y)  # type: ignore[arg-type]


def test_features_per_send_date_equal_build_features_on_the_whole_log() -> None:
    log = simulate_log(400, seed=9)
    ids = log["customer_id"].cat.categories[::3]
    days = pd.to_datetime(["2023-09-01", "2023-10-15", "2024-01-02"], utc=True)
    frame = pd.DataFrame(
        {
            "customer_id": list(ids) + list(ids[:20]),
            "send_date": [days[i % 3] for i in range(len(ids))] + [days[2]] * 20,
            "treated": [i % 2 for i in range(len(ids) + 20)],
            "campaign": ["a"] * len(ids) + ["b"] * 20,  # 20 customers in two campaigns
        }
    )
    known = [
        cid in build_features(log, day).index
        for cid, day in zip(frame["customer_id"], frame["send_date"], strict=True)
    ]
    frame = frame.loc[known].reset_index(drop=True)
    data = uplift_training_set(log, frame, 30)
    for day in days:
        rows = (frame["send_date"] == day).to_numpy()
        expected = build_features(log, day).loc[frame.loc[rows, "customer_id"]]
        pd.testing.assert_frame_equal(
            data.features.loc[rows].astype("float64"), expected.astype("float64")
        )


def test_one_reader_holdout_or_treated_and_stripped_ids(hand_log: pd.DataFrame) -> None:
    """uplift-train reads assignments as `retain lift` does (features.retention.assignments)."""
    plain = uplift_training_set(hand_log, assignments(["a", "b", "c", "d"], [1, 0, 1, 0]), 30)
    held = pd.DataFrame(
        {
            "customer_id": [" a", "b ", "c", "d"],
            "send_date": SEND,
            "holdout": ["false", "true", "no", "yes"],
        }
    )
    data = uplift_training_set(hand_log, held, 30)
    assert data.treated.tolist() == plain.treated.tolist()
    assert data.bought.tolist() == plain.bought.tolist()
    assert data.features.index.tolist() == ["a", "b", "c", "d"]
    numbers = assignments(["a", "b"], [1, 0], send=20240301)
    with pytest.raises(AssignmentError, match=r"send_date must hold dates.*\['20240301'"):
        uplift_training_set(hand_log, numbers, 30)


def test_the_log_end_is_stated_with_its_option(hand_log: pd.DataFrame) -> None:
    late = assignments(["a", "b"], [1, 0], send=pd.Timestamp("2024-06-15", tz="UTC"))
    with pytest.raises(
        UpliftDataError,
        match=r"the log is observed through 2024-06-30 \(up to 2024-07-01, exclusive; .*"
        r"--observed-until DAY\)",
    ):
        uplift_training_set(hand_log, late, 30)
