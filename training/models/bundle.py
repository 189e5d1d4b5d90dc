"""RetainModels: the estimator that fits and predicts churn, timing, count and spend together.

Every model is trained on stacked snapshots (``training.dataset.labels``): features at cutoff ``c``,
labels in ``[c, c + horizon)``, and every label window ends at or before the fit ``as_of``.
Twelve monthly cutoffs by default: a full year, so every season is in the training set
(with six, the synthetic Q4 backtest never saw a Q4 window). A random 20 % of *customers*
is held out of every snapshot for early stopping; calibration uses the held-out customers
of the latest cutoff (out of sample and the most recent behaviour).

Design choices:

- BG/NBD and Pareto/NBD are fitted per snapshot on that snapshot's history only, and their
  outputs (P(alive), expected purchases, P(no purchase) in H) are extra features. With
  ``baseline_offset`` the churn, count and spend boosters also *start* from the BG/NBD
  prediction (LightGBM ``init_score``), so the trees learn a correction and extrapolate
  like BG/NBD where training data run out (on CDNOW: tenures longer than any training
  snapshot saw).
- Timing is a discrete-time hazard over day bins; its survival curve is rescaled so that
  S(H) equals the calibrated churn probability (one answer to "will they buy in H?").
- Spend uses tweedie regression (zero mass and skewed positive spend in one model); the
  365-day spend comes from a model on 365-day labels when the history has them, else from
  the horizon spend times the per-customer BG/NBD ratio E[purchases in 365 d] / E[in H].
- ``total_tree_weight`` (default 1) scales the count and spend trees' correction of the
  BG/NBD start; 0 is the BG/NBD start alone.
- ``combine_outputs`` (default on) blends the churn, count and spend outputs with plain
  BG/NBD, with weights chosen on the held-out customers of the latest training cutoffs
  (``training.models.combine``), so a new season's level is never worse than the classic model's.
- ``num_threads`` None (the default) lets each booster take the cores this process may use
  (``training.threads``); the trees are the same for any count.
- Training rows are subsampled (``max_train_rows``, ``max_timing_rows``; histogram binning
  with ``max_bin=63``) so a million customers x 6 snapshots trains in minutes on 2 cores.

The model classes live beside it: ``training.models.churn``, ``training.models.timing``, ``training.models.spend``
(on ``training.models.boosters`` and ``training.models.compiled``), their BTYD inputs in
``training.models.btyd_features``, the reasons' path contributions in ``training.models.paths``.
``RetainModels`` is a scikit-learn estimator (``BaseEstimator``: ``get_params``,
``set_params`` and ``clone`` work; parameters are the dataclass fields, learned state ends in
``_``, ``NotFittedError`` before ``fit``). Persistence is LightGBM's text format plus JSON,
never pickle: each model class writes and reads its own state (``to_state`` / ``from_state``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator

from features.builders import FeatureConfig, build_features
from features.catalog import FEATURE_COLUMNS
from features.utc import to_utc_timestamp
from training.dataset.labels import snapshot_cutoffs
from training.dataset.snapshot_builder import LocalSnapshots, SnapshotBuilder, SnapshotSpec
from training.dataset.snapshots import snapshot_record
from training.evaluation.baseline_predictions import classic_bgnbd
from training.models.boosters import BoostConfig, ModelInput, booster_from_text, check_fitted
from training.models.btyd_features import (
    BASELINE_FEATURES,
    Offset,
    baseline_arrays,
    bgnbd_365_ratio,
)
from training.models.churn import ChurnModel
from training.models.combine import Combination, identity_combination
from training.models.compiled import compile_together
from training.models.level import fit_count_level
from training.models.model_text import check_model_texts
from training.models.shadow import combination_for
from training.models.spend import SpendModel
from training.models.timing import TimingModel, align_survival, survival_summaries

FloatArray = NDArray[np.float64]

PREDICTION_COLUMNS: tuple[str, ...] = (
    "churn_probability",
    "p_purchase_7d",
    "p_purchase_30d",
    "p_purchase_horizon",
    "expected_days_to_next",
    "median_days_to_next",
    "expected_next_purchase_date",
    "expected_purchases_horizon",
    "expected_spend_horizon",
    "expected_spend_365d",
)
_FORMAT_VERSION = 1


def days_after(as_of: pd.Timestamp, days: FloatArray) -> NDArray[np.datetime64]:
    """``as_of`` plus fractional days, as naive UTC datetime64[ns] (NaN days -> NaT)."""
    ns = np.rint(np.asarray(days, dtype=np.float64) * 86_400e9)  # np.round calls rint
    finite = np.isfinite(ns)
    if finite.all():  # the common case: no NaT to set
        return (ns.astype(np.int64) + as_of.value).view("datetime64[ns]")
    stamps = np.where(finite, ns, 0).astype(np.int64) + as_of.value  # .value is ns
    out = stamps.view("datetime64[ns]")
    out[~finite] = np.datetime64("NaT")
    return out


@lru_cache(maxsize=32)
def _input_layout(
    wanted: tuple[str, ...], names: tuple[str, ...], use_baselines: bool
) -> tuple[NDArray[np.intp], tuple[str, ...]]:
    """``RetainModels._input_layout``, once per (model columns, given columns): every
    request's block has the same columns. The positions are read-only."""
    given = {name: i for i, name in enumerate(names)}
    missing = [c for c in wanted if c not in given]
    if missing:
        raise KeyError(f"RetainModels: features lack column(s) {missing} seen at fit time")
    take = np.array([given[c] for c in wanted])
    take.setflags(write=False)
    return take, (*wanted, *(BASELINE_FEATURES if use_baselines else ()))


def prediction_frame(arrays: dict[str, Any], index: pd.Index) -> pd.DataFrame:
    """``predict_arrays`` output as the documented frame (dates tz-aware UTC)."""
    data = dict(arrays)
    data["expected_next_purchase_date"] = pd.DatetimeIndex(
        data["expected_next_purchase_date"]
    ).tz_localize("UTC")
    return pd.DataFrame({c: data[c] for c in PREDICTION_COLUMNS}, index=index)


# --------------------------------------------------------------------------------------
# the bundle
# --------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class RetainModels(BaseEstimator):
    """Churn, timing, count and spend models trained together on leak-free snapshots.

    ``fit(log, as_of)`` trains on cutoffs whose label windows end at or before ``as_of``
    (the latest one is the validation/calibration fold); ``predict(log, as_of)`` scores every
    customer known at ``as_of``. The timing curve is rescaled so that P(no purchase in H)
    is exactly the calibrated churn probability.

    The parameters are the fields below, written once: the dataclass writes ``__init__``
    (assignments only, as scikit-learn asks), ``BaseEstimator`` gives ``get_params`` /
    ``set_params`` / ``clone`` and the repr. Identity equality (``eq=False``), as for any
    estimator.
    """

    horizon_days: int = 90
    n_snapshots: int = 12
    step_days: int = 30
    lgb_params: dict[str, Any] | None = None
    seed: int = 0
    num_threads: int | None = None
    num_boost_round: int = 300
    early_stopping_rounds: int = 30
    use_baselines: bool = True
    calibration: Literal["platt", "isotonic", "none"] = "platt"
    holdout_share: float = 0.2
    min_history_days: int = 30
    max_train_rows: int = 500_000
    max_timing_rows: int = 500_000
    baseline_sample: int = 10_000
    # the L2 penalty of the classic BG/NBD the outputs are combined with (the backtest's)
    baseline_penalizer: float = 0.0
    n_snapshots_365: int = 3
    baseline_offset: bool = True
    recalibrate_totals: bool = False
    monotone_churn: bool = False
    total_tree_weight: float = 1.0
    combine_outputs: bool = True

    # ---- training --------------------------------------------------------------------

    def _config(self) -> BoostConfig:
        return BoostConfig(
            dict(self.lgb_params or {}),
            self.num_boost_round,
            self.early_stopping_rounds,
            self.seed,
            self.num_threads,
        )

    @property
    def feature_config(self) -> FeatureConfig:
        """What every snapshot and prediction is built with; the artifact stores this one."""
        return FeatureConfig.for_horizon(self.horizon_days)

    def snapshot(
        self, log: pd.DataFrame, cutoff: pd.Timestamp, include_365d: bool = False
    ) -> pd.DataFrame:
        """One training snapshot: features, baseline outputs and labels at ``cutoff``."""
        return self._snapshot(log, cutoff, include_365d)[0]

    def _snapshot(
        self, log: pd.DataFrame, cutoff: pd.Timestamp, include_365d: bool
    ) -> tuple[pd.DataFrame, dict[str, str]]:
        """:meth:`snapshot` and its degenerate baseline fits (name -> why)."""
        spec = self._snapshot_spec(self.horizon_days, include_365d)
        return next(LocalSnapshots().snapshots(log, [cutoff], spec))

    def _snapshot_spec(self, horizon: int, include_365d: bool) -> SnapshotSpec:
        return SnapshotSpec(
            self.feature_config,
            horizon,
            include_365d,
            self.horizon_days,
            self.use_baselines,
            self.baseline_sample,
            self.seed,
        )

    def _training_set(
        self,
        log: pd.DataFrame,
        as_of: pd.Timestamp,
        horizon: int,
        include_365d: bool,
        n_snapshots: int,
        builder: SnapshotBuilder,
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
        """(train, validation, calibration) frames from stacked snapshots, and their records.

        Validation holds a random ``holdout_share`` of *customers* in every snapshot (never
        in train at any cutoff): early stopping then sees every season the training rows
        see. On the latest fold alone (one season) it stopped the synthetic churn model after
        25 trees where the Q4 test needed about 1000. Calibration uses the held-out customers
        of the latest cutoff: out of sample and the most recent behaviour.
        """
        earliest = log["timestamp"].min() + pd.Timedelta(days=self.min_history_days)
        cutoffs = snapshot_cutoffs(as_of, horizon, n_snapshots, self.step_days, earliest)
        frames = []
        records: list[dict[str, Any]] = []
        spec = self._snapshot_spec(horizon, include_365d)
        built = builder.snapshots(log, cutoffs, spec)
        for cutoff, (frame, degenerate) in zip(cutoffs, built, strict=True):
            frames.append(frame)
            records.append(snapshot_record(cutoff, horizon, None, len(frame), degenerate))
        stacked = pd.concat(frames)
        rng = np.random.default_rng(self.seed)
        ids = stacked.index.unique()
        held = ids[rng.random(len(ids)) < self.holdout_share]
        in_holdout = stacked.index.isin(held)
        train, valid = stacked.loc[~in_holdout], stacked.loc[in_holdout]
        calib = valid.loc[valid["cutoff"] == cutoffs[-1]]
        if len(train) > self.max_train_rows:
            train = train.iloc[np.sort(rng.choice(len(train), self.max_train_rows, replace=False))]
        max_valid = max(self.max_train_rows // 2, 1)
        if len(valid) > max_valid:
            valid = valid.iloc[np.sort(rng.choice(len(valid), max_valid, replace=False))]
        return train, valid, calib, records

    def fit(
        self,
        log: pd.DataFrame,
        as_of: pd.Timestamp | str,
        *,
        snapshots: SnapshotBuilder | None = None,
    ) -> RetainModels:
        """Train every model on snapshots whose label windows end at or before ``as_of``.

        ``snapshots`` builds the training snapshots and BTYD fits (default: in this
        process; ``training.dataset.cluster_snapshots.ClusterSnapshots`` on a Dask cluster); the
        boosters are fitted here on what it returns, so the models are the same either way.
        """
        builder: SnapshotBuilder = LocalSnapshots() if snapshots is None else snapshots
        cutoff = to_utc_timestamp(as_of)
        config = self._config()
        earliest = log["timestamp"].min() + pd.Timedelta(days=self.min_history_days)
        records = self._dropped_snapshots(cutoff, self.horizon_days, self.n_snapshots, earliest)
        train, valid, calib, used = self._training_set(
            log, cutoff, self.horizon_days, False, self.n_snapshots, builder
        )
        records += used
        n_used = len(used)
        names = [c for c in train.columns if c in _input_columns(train.columns)]
        xt, xv = train[names], valid[names]
        use_offset = self.use_baselines and self.baseline_offset
        recal = self.recalibrate_totals
        self.churn_ = ChurnModel(
            self.calibration,
            config,
            "bgnbd_logit" if use_offset else "none",
            self.monotone_churn,
        ).fit(
            xt,
            train["churn"].to_numpy(),
            xv,
            valid["churn"].to_numpy(),
            calib[names],
            calib["churn"].to_numpy(),
        )
        self.timing_ = TimingModel(self.horizon_days, self.max_timing_rows, config).fit(
            xt,
            train["days_to_next"].to_numpy(),
            train["event"].to_numpy(),
            xv,
            valid["days_to_next"].to_numpy(),
            valid["event"].to_numpy(),
        )
        count_offset: Offset = "bgnbd_log_count" if use_offset else "none"
        spend_offset: Offset = "bgnbd_log_spend" if use_offset else "none"
        weight = self.total_tree_weight
        self.count_ = SpendModel(
            "poisson", config, count_offset, recalibrate=recal, tree_weight=weight
        ).fit(xt, train["n_purchase_days_h"].to_numpy(), xv, valid["n_purchase_days_h"].to_numpy())
        self.spend_ = SpendModel(
            "tweedie", config, spend_offset, recalibrate=recal, tree_weight=weight
        ).fit(xt, train["spend_h"].to_numpy(), xv, valid["spend_h"].to_numpy())
        self.spend_365_ = None
        if self.horizon_days < 365:
            records += self._dropped_snapshots(cutoff, 365, self.n_snapshots_365, earliest)
            try:
                t365, v365, _, used = self._training_set(
                    log, cutoff, 365, True, self.n_snapshots_365, builder
                )
                records += used
            except ValueError:
                t365 = None  # history too short for 365-day labels: extrapolate instead
            if t365 is not None:
                stretch = 365.0 / self.horizon_days
                self.spend_365_ = SpendModel(
                    "tweedie", config, spend_offset, stretch, recalibrate=recal, tree_weight=weight
                ).fit(
                    t365[names],
                    t365["spend_365d"].to_numpy(),
                    v365[names],
                    v365["spend_365d"].to_numpy(),
                )
        self.combination_ = combination_for(self, config, train, valid, names, n_used)
        spec = self._snapshot_spec(self.horizon_days, False)
        self.baselines_ = builder.baselines(log, cutoff, spec)
        if not self.combination_.details.get("identity"):
            self.combination_.bgnbd_state = classic_bgnbd(
                log, cutoff, self.horizon_days, self.baseline_penalizer
            )
        self.feature_names_in_ = [c for c in names if c not in BASELINE_FEATURES]
        self.fitted_as_of_ = cutoff
        self.n_train_rows_ = len(train)
        self.snapshots_ = sorted(records, key=lambda r: (r["horizon_days"], r["cutoff"]))
        fit_count_level(self, log, cutoff)
        return self

    def _dropped_snapshots(
        self, as_of: pd.Timestamp, horizon: int, n_snapshots: int, earliest: pd.Timestamp
    ) -> list[dict[str, Any]]:
        """Records of the requested cutoffs the log is too short for (not trained on)."""
        why = (
            f"before {earliest.date()} (the first order + min_history_days = "
            f"{self.min_history_days}): too little history"
        )
        return [
            snapshot_record(cutoff, horizon, why, 0, {})
            for cutoff in snapshot_cutoffs(as_of, horizon, n_snapshots, self.step_days)
            if cutoff < earliest
        ]

    # ---- prediction ------------------------------------------------------------------

    @property
    def input_names_(self) -> list[str]:
        """Every booster's input columns, in order: the features, then the BTYD outputs."""
        check_fitted(self, "churn_")
        extra = list(BASELINE_FEATURES) if self.use_baselines else []
        return [*self.feature_names_in_, *extra]

    def model_input(self, values: FloatArray, names: Sequence[str]) -> ModelInput:
        """Feature columns (any order, extra columns ignored) -> the boosters' input.

        Selects ``feature_names_in_`` by position and appends the BTYD baseline outputs, so
        every booster reads the result without reindexing or copying.
        """
        check_fitted(self, "churn_")
        take, names_out = self._input_layout(names)
        values = np.asarray(values, dtype=np.float64)
        n, k = values.shape[0], len(take)
        out = np.empty((n, len(names_out)))
        out[:, :k] = values[:, take]
        if self.use_baselines:
            base = baseline_arrays(
                ModelInput(out[:, :k], self.feature_names_in_), self.baselines_, self.horizon_days
            )
            for j, name in enumerate(BASELINE_FEATURES):
                out[:, k + j] = base[name]
        return ModelInput(out, names_out)

    def _input_layout(self, names: Sequence[str]) -> tuple[NDArray[np.intp], tuple[str, ...]]:
        """Positions of ``feature_names_in_`` among ``names``, and ``input_names_``."""
        return _input_layout(tuple(self.feature_names_in_), tuple(names), self.use_baselines)

    def _model_input(self, features: pd.DataFrame) -> pd.DataFrame:
        """``model_input`` of a feature frame, as a frame on the same index."""
        return self._frame_input(features).to_frame(features.index)

    def _frame_input(self, features: pd.DataFrame) -> ModelInput:
        check_fitted(self, "churn_")
        present = [c for c in self.feature_names_in_ if c in features.columns]
        x = features.loc[:, present].to_numpy(dtype=np.float64, na_value=np.nan)
        return self.model_input(x, present)  # names any missing column

    def predict(self, log: pd.DataFrame, as_of: pd.Timestamp | str) -> pd.DataFrame:
        """Scores for every customer with an order before ``as_of`` (index customer_id)."""
        cutoff = to_utc_timestamp(as_of)
        return self.predict_features(build_features(log, cutoff, self.feature_config), cutoff)

    def predict_features(self, features: pd.DataFrame, as_of: pd.Timestamp | str) -> pd.DataFrame:
        """Scores from a ready feature frame (columns in any order, extra columns ignored)."""
        arrays = self.predict_arrays(self._frame_input(features), to_utc_timestamp(as_of))
        return prediction_frame(arrays, features.index)

    def predict_arrays(
        self, x: ModelInput, as_of: pd.Timestamp, *, median: bool = True
    ) -> dict[str, FloatArray]:
        """``PREDICTION_COLUMNS`` as arrays (the next-purchase date as datetime64[ns], UTC);
        ``median=False`` leaves out ``median_days_to_next``, which the scorer never reads."""
        p_churn, count_h, spend_h = self.combination_.apply(
            x, self.churn_.predict_proba(x), self.count_.predict(x), self.spend_.predict(x)
        )
        surv = align_survival(self.timing_.survival(x), p_churn)
        summary = survival_summaries(surv, self.timing_.edges_, median=median)
        if self.spend_365_ is not None:
            spend_y = np.maximum(self.spend_365_.predict(x), spend_h)
        else:
            spend_y = spend_h * bgnbd_365_ratio(x, self.baselines_, self.horizon_days)
        expected_days = summary["expected_days_to_next"]
        return {
            "churn_probability": p_churn,
            **summary,
            "expected_next_purchase_date": days_after(to_utc_timestamp(as_of), expected_days),
            "expected_purchases_horizon": count_h,
            "expected_spend_horizon": spend_h,
            "expected_spend_365d": spend_y,
        }

    def feature_contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """Per-customer, per-input path contributions to the churn log-odds ('top reasons').

        One column per model input (catalog features, then baseline outputs), no bias or
        offset column: positive values push churn risk up. See
        ``ChurnModel.path_contributions``; ``ChurnModel.contributions`` has exact SHAP values.
        """
        x = self._frame_input(features)
        return ModelInput(self.reason_contributions(x), x.names).to_frame(features.index)

    def reason_contributions(self, x: ModelInput) -> FloatArray:
        """(n, len(input_names_)) churn path contributions, columns as ``x.names``."""
        return self.churn_.path_contributions(x)[0]

    # ---- persistence -----------------------------------------------------------------

    def compile(self) -> RetainModels:
        """Compile every booster with lleaves for scoring (a few seconds, once per process).

        Predictions then run about 10x faster, and ``path_contributions`` finds the churn
        trees' leaves in compiled code too. Training and the backtest never need it. When
        lleaves cannot compile, every booster scores with LightGBM's own predictor instead
        (same numbers; :func:`training.models.compiled.compile_together`).
        """
        check_fitted(self, "churn_")
        compile_together([model for model in self._boosters().values() if model is not None])
        return self

    @property
    def compiled(self) -> bool:
        """Whether any booster scores on compiled trees (False after a fallback)."""
        return any(m.compiled for m in self._boosters().values() if m is not None)

    def _boosters(self) -> dict[str, Any]:
        return {
            "churn": self.churn_,
            "timing": self.timing_,
            "count": self.count_,
            "spend": self.spend_,
            "spend_365": self.spend_365_,
        }

    def save(self, directory: str | Path) -> Path:
        """LightGBM text files plus ``retain_models.json``; no pickle anywhere."""
        check_fitted(self, "churn_")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        models: dict[str, Any] = {}
        for name, model in self._boosters().items():
            if model is None:
                models[name] = None
                continue
            path = out / f"{name}.lgb.txt"
            path.write_text(model.booster_.model_to_string(), encoding="utf-8")
            models[name] = {"file": path.name, **model.to_state()}
        meta = {
            "format_version": _FORMAT_VERSION,
            # in field (``__init__``) order, not get_params' sorted order: the file's bytes
            "params": {f.name: getattr(self, f.name) for f in fields(self)},
            "feature_names_in": self.feature_names_in_,
            "fitted_as_of": self.fitted_as_of_.isoformat(),
            "n_train_rows": self.n_train_rows_,
            "snapshots": self.snapshots_,
            "baselines": self.baselines_,
            "combination": self.combination_.to_dict(),
            "models": models,
            "versions": {"lightgbm": lgb.__version__, "numpy": np.__version__},
        }
        (out / "retain_models.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> RetainModels:
        """Rebuild a fitted bundle from :meth:`save` output; predicts identically."""
        src = Path(directory)
        meta_path = src / "retain_models.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no retain_models.json in {src}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported model format {meta.get('format_version')!r}")
        self = cls(**meta["params"])
        config = self._config()
        m = meta["models"]
        texts = {
            entry["file"]: (src / entry["file"]).read_text(encoding="utf-8")
            for entry in m.values()
            if entry is not None
        }
        check_model_texts(texts)  # a malformed text would abort this process in LightGBM

        def booster(entry: dict[str, Any]) -> lgb.Booster:
            return booster_from_text(texts[entry["file"]])

        self.churn_ = ChurnModel.from_state(
            m["churn"],
            booster(m["churn"]),
            calibration=self.calibration,
            config=config,
            monotone=self.monotone_churn,
        )
        self.timing_ = TimingModel.from_state(
            m["timing"],
            booster(m["timing"]),
            horizon_days=self.horizon_days,
            max_rows=self.max_timing_rows,
            config=config,
        )
        for name in ("count", "spend", "spend_365"):
            entry = m.get(name)
            model = None if entry is None else SpendModel.from_state(entry, booster(entry), config)
            setattr(self, f"{name}_", model)
        self.baselines_ = meta["baselines"]
        combination = meta.get("combination")  # absent in models saved before issue 25
        self.combination_ = (
            identity_combination("saved without a combination")
            if combination is None
            else Combination.from_dict(combination)
        )
        self.feature_names_in_ = list(meta["feature_names_in"])
        self.fitted_as_of_ = pd.Timestamp(meta["fitted_as_of"])
        self.n_train_rows_ = int(meta["n_train_rows"])
        self.snapshots_ = list(meta.get("snapshots", []))  # absent in models saved before
        return self


def _input_columns(columns: Sequence[str]) -> set[str]:
    """Model inputs: the feature catalog plus baseline outputs (never labels or cutoff)."""
    allowed = set(FEATURE_COLUMNS) | set(BASELINE_FEATURES)
    return {c for c in columns if c in allowed}
