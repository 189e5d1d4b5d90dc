"""The model combined with BG/NBD per output, chosen on past windows, and the planner's total.

The boosters start from the BG/NBD prediction and correct it; on a new season the
correction can overshoot the level (issue 25). So each output a planner acts on is a blend
of the boosted model and plain BG/NBD. The model's weight is chosen where the model had to
forecast a window it never saw: the shadow fit (``training.models.shadow``) forecasting the latest
training window out of time; on a log too short for one, the held-out customers of the
latest three training cutoffs (the newest weighs most). Never the test window:

- count: ``w * model + (1 - w) * BG/NBD``, ``w`` minimising the Poisson deviance;
- spend: ``w * model + (1 - w) * BG/NBD x Gamma-Gamma spend per purchase day``, ``w``
  minimising the squared error;
- churn: ``sigmoid(a * (w * logit(model) + (1 - w) * logit(BG/NBD)) + b)``, ``w`` minimising
  the log loss and ``(a, b)`` a Platt map refitted on the latest window's held-out
  customers, so the level is the latest season's (the calibrator's ECE on those rows is
  recorded beside the weights); then the even average with BG/NBD's probability where
  the shadow's out-of-time window says it calibrates better, and on a log too short for a
  shadow (``training.models.churn_average``).

A weight below 1 must beat the model alone by :data:`MIN_GAIN` of its loss on that window.
Thin evidence pulls the count and spend weights toward BG/NBD: with fewer than
:data:`FULL_EVIDENCE_SNAPSHOTS` snapshots behind the choice, ``w`` is scaled by
``n / FULL_EVIDENCE_SNAPSHOTS`` (the churn weight is not: its level is set by the Platt map
on the latest window, and shrinking it gave up the model's ranking on Complete Journey
2017-04-01, AUC 0.8726 against Pareto/NBD's 0.8731). The planner's total
(sum of a population's predictions) carries a 90 % interval
(``training.models.total_interval``). The count's level (its total) is chosen apart
from its shape by ``training.models.level`` (``count_level``). Everything is plain floats
(JSON in the artifact), applied by :meth:`Combination.apply` on every scoring path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from training.baselines.gammagamma import GammaGamma
from training.evaluation import metrics
from training.models.boosters import Table, input_column
from training.models.btyd_features import classic_bgnbd_outputs
from training.models.calibration import logit
from training.models.churn_average import CHURN_AVERAGE, choose_churn_average
from training.models.level import choose_count_level
from training.models.total_interval import DEFAULT_LOG_SPREAD, past_totals, totals_with_interval

if TYPE_CHECKING:
    from training.models.shadow import Shadow

FloatArray = NDArray[np.float64]

GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))
RECENT_CUTOFFS = 3  # the latest cutoffs the weights are chosen on
DECAY = 0.5  # each older cutoff weighs this much of the next newer one
FULL_EVIDENCE_SNAPSHOTS = 6
# a blend replaces the model only when it beats the model's loss by this share on the
# window: smaller gains (0.39 % for the synthetic July churn blend, which then doubled the
# test ECE) are within one window's noise
MIN_GAIN = 0.01
# the shadow's window starts a horizon before the forecast's; when that puts it in another
# season (more than a month apart in the calendar, e.g. every 90-day horizon), its weights
# are not the forecast's evidence and the model is kept: on synthetic October the July
# shadow chose count 0.40, churn 0.45 and the test's aggregate error went 0.044 -> 0.247
SAME_SEASON_DAYS = 31.0
YEAR_DAYS = 365.25
_EPS = 1e-6


def btyd_outputs(
    x: Table, spend_state: dict[str, Any] | None = None, bgnbd_state: dict[str, Any] | None = None
) -> dict[str, FloatArray]:
    """BG/NBD's churn probability, expected purchases and spend from the model inputs.

    With ``bgnbd_state`` (:func:`training.models.btyd_features.classic_bgnbd_state`) the classic
    BG/NBD the backtest fits at the scoring cutoff, on its RFM summary; without it, the
    boosters' own BG/NBD input columns (fitted per snapshot, as the training windows saw it).
    Spend is expected purchase days times the Gamma-Gamma spend per purchase day
    (``spend_state``, :func:`fit_spend`), as the backtest's BTYD baselines; without it, the
    customer's own spend per purchase day.
    """
    if bgnbd_state is not None:
        classic = classic_bgnbd_outputs(x, bgnbd_state)
        churn, count = classic["churn"], classic["count"]
    else:
        churn = np.asarray(input_column(x, "bgnbd_p_no_purchase_h"), dtype=np.float64)
        count = np.asarray(input_column(x, "bgnbd_expected_purchases_h"), dtype=np.float64)
    return {"churn": churn, "count": count, "spend": count * spend_per_day(x, spend_state)}


def _spend_inputs(x: Table) -> tuple[FloatArray, FloatArray]:
    """(repeat purchase days, spend per purchase day) from the feature columns."""
    freq = np.nan_to_num(input_column(x, "n_repeat_days"))
    days = np.nan_to_num(input_column(x, "n_purchase_days"))
    total = np.nan_to_num(input_column(x, "monetary_total"))
    return freq, np.maximum(np.where(days > 0, total / np.maximum(days, 1.0), 0.0), 0.0)


def fit_spend(x: Table) -> dict[str, Any] | None:
    """Gamma-Gamma on the repeat buyers' spend per purchase day (None without enough)."""
    freq, m = _spend_inputs(x)
    use = (freq > 0) & (m > 0)
    if int(use.sum()) < 10:
        return None
    try:
        gg = GammaGamma().fit(freq[use], m[use])
    except (ValueError, FloatingPointError):
        return None
    return {"gammagamma": gg.to_dict(), "population_mean": float(m[use].mean())}


def spend_per_day(x: Table, state: dict[str, Any] | None) -> FloatArray:
    """Expected spend per purchase day: Gamma-Gamma's conditional mean, or the own mean."""
    freq, m = _spend_inputs(x)
    if state is None:
        return m
    gg = GammaGamma.from_dict(state["gammagamma"])
    with np.errstate(all="ignore"):
        if gg.params_["q"] <= 1.0:  # no population mean: the sample mean for x = 0
            per = np.where(
                freq > 0,
                gg.conditional_expected_average_profit(np.maximum(freq, 1.0), m),
                state["population_mean"],
            )
        else:
            per = gg.conditional_expected_average_profit(freq, m)
    return np.maximum(np.nan_to_num(per), 0.0)


def _poisson_deviance(mu: FloatArray, y: FloatArray, w: FloatArray) -> float:
    mu = np.maximum(mu, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(np.average(2.0 * (term - (y - mu)), weights=w))


def _log_loss(p: FloatArray, y: FloatArray, w: FloatArray) -> float:
    # np.clip without its Python wrapper: the same values for bounds that are not zero
    q = np.minimum(np.maximum(p, _EPS), 1 - _EPS)
    return float(np.average(-(y * np.log(q) + (1 - y) * np.log1p(-q)), weights=w))


def _platt(z: FloatArray, y: FloatArray, w: FloatArray) -> tuple[float, float]:
    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
    lr.fit(z[:, None], y, sample_weight=w)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


@dataclass
class Combination:
    """Per-output model weights, the churn Platt map, and the past errors of the total."""

    count_weight: float = 1.0
    spend_weight: float = 1.0
    churn_weight: float = 1.0
    churn_platt: tuple[float, float] = (1.0, 0.0)
    spend_state: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # the classic BG/NBD at the scoring cutoff (weight 0 is the backtest's BG/NBD); None:
    # the boosters' BG/NBD input columns (models saved before it)
    bgnbd_state: dict[str, Any] | None = None
    # the count forecast's level: the factor bringing its total at the cutoff to the classic
    # total where the shadow window chose it (``training.models.level``); 1: the model's level
    count_level: float = 1.0
    # the model's share of the final churn probability, averaged with BG/NBD's after the
    # map (1: the mapped model alone; models saved before it)
    churn_average: float = 1.0

    def apply(
        self, x: Table, churn: FloatArray, count: FloatArray, spend: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The combined (churn probability, expected purchases, expected spend)."""
        if self.details.get("identity"):
            return churn, count, spend
        a, b = self.churn_platt
        alone = self.churn_weight == 1.0 and self.churn_average == 1.0
        if alone and self.count_weight == 1.0 and self.spend_weight == 1.0:
            # the model alone (the season rule, or a shadow that chose it): the classic
            # BG/NBD would be multiplied by 0, so a request does not pay for it
            return 1.0 / (1.0 + np.exp(-(a * logit(churn) + b))), self._level(count), spend
        base = btyd_outputs(x, self.spend_state, self.bgnbd_state)
        z = self.churn_weight * logit(churn) + (1 - self.churn_weight) * logit(base["churn"])
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        if self.churn_average != 1.0:
            p = self.churn_average * p + (1 - self.churn_average) * base["churn"]
        c = self.count_weight * count + (1 - self.count_weight) * base["count"]
        s = self.spend_weight * spend + (1 - self.spend_weight) * base["spend"]
        return p, self._level(c), s

    def _level(self, count: FloatArray) -> FloatArray:
        return count if self.count_level == 1.0 else count * self.count_level

    def total_interval(
        self, purchases: FloatArray, spend: FloatArray
    ) -> dict[str, dict[str, float]]:
        """The planner's totals over a population with their 90 % intervals."""
        spreads = self.total_spreads() or {}
        return totals_with_interval(float(np.sum(purchases)), float(np.sum(spend)), spreads)

    def total_spreads(self) -> dict[str, float] | None:
        """The past cutoffs' log-error spread of each total (None: not recorded).

        What a scorer writes beside its scores, so a report on them can draw the interval
        of their totals (:func:`totals_with_interval`) without the model.
        """
        past = self.details.get("totals")
        if past is None:
            return None
        return {
            name: float(past.get(name, {}).get("log_spread", DEFAULT_LOG_SPREAD))
            for name in ("purchases", "spend")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "count_weight": self.count_weight,
            "spend_weight": self.spend_weight,
            "churn_weight": self.churn_weight,
            "churn_platt": list(self.churn_platt),
            "spend_state": self.spend_state,
            "bgnbd_state": self.bgnbd_state,
            "count_level": self.count_level,
            "churn_average": self.churn_average,
            **self.details,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Combination:
        known = (
            "count_weight",
            "spend_weight",
            "churn_weight",
            "churn_platt",
            "spend_state",
            "bgnbd_state",
            "count_level",
            "churn_average",
        )
        return cls(
            float(state["count_weight"]),
            float(state["spend_weight"]),
            float(state["churn_weight"]),
            (float(state["churn_platt"][0]), float(state["churn_platt"][1])),
            state.get("spend_state"),
            {k: v for k, v in state.items() if k not in known},
            state.get("bgnbd_state"),
            float(state.get("count_level", 1.0)),
            float(state.get("churn_average", 1.0)),
        )


def identity_combination(why: str) -> Combination:
    """The model alone (no BG/NBD inputs to combine with)."""
    return Combination(details={"identity": True, "why": why})


def fit_combination(
    frame: pd.DataFrame,
    model: dict[str, FloatArray],
    x: Table,
    n_snapshots: int,
    shadow: Shadow | None = None,
    horizon_days: int = 0,
) -> Combination:
    """Weights chosen out of time (``shadow``), the churn map on the latest held-out rows.

    ``frame`` holds the held-out rows of every training cutoff (labels and ``cutoff``),
    ``model`` the real model's ``churn`` (calibrated), ``count`` and ``spend`` predictions
    for them and ``x`` their inputs (the BG/NBD columns); ``n_snapshots`` counts the
    training cutoffs. The weights come from the shadow's out-of-time forecast of the latest
    window when there is one (evidence: its snapshots), else from these held-out rows of the
    latest cutoffs (evidence: ``n_snapshots``), and shrink toward BG/NBD with thin evidence.
    A shadow window of another season than the forecast's (``horizon_days`` apart in the
    calendar, more than :data:`SAME_SEASON_DAYS`) is no evidence for the forecast's
    weights: the model is kept (and the shadow's choice recorded).
    """
    cutoffs = sorted(pd.unique(frame["cutoff"]))
    recent = cutoffs[-RECENT_CUTOFFS:]
    age = {c: len(recent) - 1 - i for i, c in enumerate(recent)}
    cut = frame["cutoff"].to_numpy()
    use = np.isin(cut, recent)
    w = np.array([DECAY ** age.get(c, 0) for c in cut[use]], dtype=np.float64)
    latest = cut == recent[-1]
    # Gamma-Gamma on the latest cutoff's customers (their history only, no labels)
    spend_state = fit_spend(x.loc[latest] if isinstance(x, pd.DataFrame) else x)
    if shadow is not None:
        evidence = len(shadow.trained_on)
        weights, chosen = _choose_weights(
            shadow.frame, shadow.predictions, btyd_outputs(shadow.frame, spend_state), None
        )
        gap = season_gap_days(horizon_days)
        source = {
            "out_of_time": True,
            "trained_on": shadow.trained_on,
            "scored_at": shadow.scored_at,
            "season_gap_days": gap,
        }
        if gap > SAME_SEASON_DAYS:
            source["another_season"] = True  # recorded, and the model kept
            weights = dict.fromkeys(weights, 1.0)
        by_weight = chosen["count"]["aggregate_by_weight"]
        e_model, e_btyd = by_weight.get("1.0"), by_weight.get("0.0")
        level = choose_count_level(
            None if e_model is None or e_btyd is None else (e_model, e_btyd),
            gap > SAME_SEASON_DAYS,
        )
    else:
        evidence = n_snapshots
        sub = {k: v[use] for k, v in model.items()}
        base = {k: v[use] for k, v in btyd_outputs(x, spend_state).items()}
        weights, chosen = _choose_weights(frame.loc[use], sub, base, w)
        source = {
            "out_of_time": False,
            "held_out_cutoffs": [pd.Timestamp(c).isoformat() for c in recent],
        }
        level = choose_count_level(None, False)
    shrink = min(1.0, evidence / FULL_EVIDENCE_SNAPSHOTS)
    # thin evidence shrinks the levels (count, spend) toward BG/NBD; the churn blend is
    # chosen on the log loss and recalibrated below, so its level is the latest window's
    combo = Combination(weights["count"] * shrink, weights["spend"] * shrink, weights["churn"])
    combo.spend_state = spend_state
    # the churn map: Platt on the blend, on the latest window's held-out rows (the season
    # nearest the forecast)
    base_all = btyd_outputs(x, spend_state)
    y_churn = frame["churn"].to_numpy(dtype=np.float64)
    z = combo.churn_weight * logit(model["churn"]) + (1 - combo.churn_weight) * logit(
        base_all["churn"]
    )
    # the latest windows, each older one weighing DECAY of the next: the latest season leads
    combo.churn_platt = _platt(z[use], y_churn[use], w)
    averaged: dict[str, Any] = {"why": "no out-of-time window"}
    if shadow is None:  # thin evidence: toward BG/NBD
        combo.churn_average = CHURN_AVERAGE
    else:
        p_sh, _, _ = combo.apply(
            shadow.frame,
            shadow.predictions["churn"],
            shadow.predictions["count"],
            shadow.predictions["spend"],
        )
        combo.churn_average, averaged = choose_churn_average(
            shadow.frame["churn"].to_numpy(dtype=np.float64),
            p_sh,
            btyd_outputs(shadow.frame, spend_state)["churn"],
            bool(source.get("another_season", False)),
        )
        averaged["scored_at"] = shadow.scored_at
    p_fit, c_all, s_all = combo.apply(x, model["churn"], model["count"], model["spend"])
    if combo.churn_average != 1.0:  # the calibrator's own ECE is the map's, before the average
        averaged["ece_latest_window_averaged"] = float(
            metrics.expected_calibration_error(y_churn[latest], p_fit[latest])
        )
        p_fit = 1.0 / (1.0 + np.exp(-(combo.churn_platt[0] * z + combo.churn_platt[1])))
    fit_ece = float(metrics.expected_calibration_error(y_churn[latest], p_fit[latest]))
    shadow_totals = None
    if shadow is not None:
        _, c_sh, s_sh = combo.apply(
            shadow.frame,
            shadow.predictions["churn"],
            shadow.predictions["count"],
            shadow.predictions["spend"],
        )
        shadow_totals = (shadow.scored_at, c_sh, s_sh, shadow.frame)
    combo.details = {
        "weights_from": source,
        "evidence_snapshots": int(evidence),
        "evidence_shrink": shrink,
        "chosen_before_shrink": chosen,
        "calibrated_on": {
            "cutoff": pd.Timestamp(recent[-1]).isoformat(),
            "cutoffs": [pd.Timestamp(c).isoformat() for c in recent],
            "decay": DECAY,
            "rows": int(latest.sum()),
        },
        "calibration_ece_latest_window": fit_ece,
        # whose total the count forecast takes (the factor is set at the cutoff by
        # ``training.models.level.fit_count_level``)
        "count_level_choice": level,
        "churn_average_chosen_on": averaged,
        "totals": past_totals(
            cut,
            cutoffs,
            c_all,
            s_all,
            frame["n_purchase_days_h"].to_numpy(dtype=np.float64),
            frame["spend_h"].to_numpy(dtype=np.float64),
            shadow_totals,
        ),
    }
    return combo


def season_gap_days(horizon_days: int) -> float:
    """Calendar distance (days, 0 .. half a year) between a window and the one a horizon
    later: how far the shadow's season is from the forecast's."""
    d = float(horizon_days) % YEAR_DAYS
    return min(d, YEAR_DAYS - d)


def _choose_weights(
    frame: pd.DataFrame,
    model: dict[str, FloatArray],
    base: dict[str, FloatArray],
    w: FloatArray | None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The model's weight per output on a grid, by each output's own loss on ``frame``.

    Also records the aggregate error of the count and spend blends at every grid weight:
    what the window said about the level, beside what the loss chose.
    """
    w = np.ones(len(frame)) if w is None else w
    y_count = frame["n_purchase_days_h"].to_numpy(dtype=np.float64)
    y_spend = frame["spend_h"].to_numpy(dtype=np.float64)
    y_churn = frame["churn"].to_numpy(dtype=np.float64)
    lm, lb = logit(model["churn"]), logit(base["churn"])

    def churn_loss(g: float) -> float:
        z = g * lm + (1 - g) * lb
        a, b = _platt(z, y_churn, w)
        return _log_loss(1.0 / (1.0 + np.exp(-(a * z + b))), y_churn, w)

    losses = {
        "count": lambda g: _poisson_deviance(
            g * model["count"] + (1 - g) * base["count"], y_count, w
        ),
        "spend": lambda g: float(
            np.average((g * model["spend"] + (1 - g) * base["spend"] - y_spend) ** 2, weights=w)
        ),
        "churn": churn_loss,
    }
    weights: dict[str, float] = {}
    info: dict[str, Any] = {}
    for name, loss in losses.items():
        scores = {g: loss(g) for g in GRID}
        best = min(scores, key=lambda g: (scores[g], -g))
        if scores[best] > (1.0 - MIN_GAIN) * scores[1.0]:
            best = 1.0  # one window's noise: keep the model unless the gain is material
        weights[name] = float(best)
        info[name] = {
            "weight": float(best),
            "loss": scores[best],
            "loss_model": scores[1.0],
            "loss_btyd": scores[0.0],
        }
    for name, y in (("count", y_count), ("spend", y_spend)):
        total = float(np.sum(w * y))
        info[name]["aggregate_by_weight"] = {
            str(g): float(np.sum(w * (g * model[name] + (1 - g) * base[name])) / total - 1.0)
            if total > 0
            else None
            for g in GRID
        }
    return weights, info
