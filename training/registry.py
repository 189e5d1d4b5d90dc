"""The model registry workflow: challenger -> (gate) -> champion, and rollback.

A registered model (default name ``retain``) has two aliases: ``challenger`` (the newest
candidate) and ``champion`` (what serving loads via ``models:/retain@champion``). Nothing
here ever picks "the latest version" or "the best run": every decision names an alias or an
explicit version, so what is served only changes through :func:`promote` or
:func:`rollback`.

The promotion gate compares like with like: the two versions must have been backtested at
the same cutoff, horizon and data fingerprint, or the comparison is meaningless and is
refused (unless forced). Champion history lives in the registered model's
``champion_history`` tag (JSON list of versions, oldest first), which is what rollback uses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

DEFAULT_MODEL_NAME = "retain"
CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
MODEL_URI_TAG = "retain.model_uri"
KEY_METRICS: tuple[str, ...] = (
    "model.churn_auc",
    "model.count_mae",
    "model.brier",
    "model.timing_cindex",
    "model.spend_mae",
    "bgnbd.churn_auc",
    "paretonbd.churn_auc",
    "recency.churn_auc",
)
# data.fingerprint: features.fingerprint.log_fingerprint of the log (runs logged before it
# existed carry data.sha256 instead and are not comparable with newer ones)
BACKTEST_KEYS: tuple[str, ...] = ("backtest.as_of", "backtest.horizon_days", "data.fingerprint")


class RegistryError(RuntimeError):
    """A registry operation cannot proceed; the message says what is missing."""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger became champion, and every reason for that outcome."""

    promoted: bool
    challenger_version: str | None
    champion_version: str | None
    reasons: list[str] = field(default_factory=list)
    forced: bool = False


@dataclass(frozen=True)
class VersionRow:
    """One registered version as listed by ``retain models``."""

    version: str
    aliases: list[str]
    run_id: str | None
    created: str
    metrics: dict[str, float]
    backtest: dict[str, str]


def _client(client: MlflowClient | None) -> MlflowClient:
    return client or MlflowClient()


def _version_metrics(mv: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in KEY_METRICS:
        raw = mv.tags.get(key)
        if raw is None:
            continue
        try:
            out[key] = float(raw)
        except ValueError:
            continue
    return out


def _version_backtest(mv: Any) -> dict[str, str]:
    return {k: mv.tags[k] for k in BACKTEST_KEYS if k in mv.tags}


def register_challenger(
    run_id: str,
    *,
    name: str = DEFAULT_MODEL_NAME,
    client: MlflowClient | None = None,
) -> str:
    """Register the run's logged model as a new version and point ``challenger`` at it.

    The version's tags carry the key metrics and backtest identity, copied from the run,
    so the gate never has to re-read runs (and a deleted run cannot change a decision).
    """
    c = _client(client)
    run = c.get_run(run_id)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise RegistryError(
            f"run {run_id} has no {MODEL_URI_TAG!r} tag; log it with "
            "training.tracking.log_training_run"
        )
    missing = [k for k in BACKTEST_KEYS if k not in run.data.params]
    if missing:
        raise RegistryError(f"run {run_id} lacks backtest param(s) {missing}")
    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name, description="retain churn / next-purchase models")
        except MlflowException:
            c.get_registered_model(name)  # created concurrently; fine if it exists now
    tags = {k: run.data.params[k] for k in BACKTEST_KEYS}
    tags.update({k: repr(run.data.metrics[k]) for k in KEY_METRICS if k in run.data.metrics})
    model_id = run.data.tags.get("retain.model_id")
    mv = c.create_model_version(
        name,
        source=model_uri,
        run_id=run_id,
        tags=tags,
        model_id=model_id,
    )
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def _alias_version(c: MlflowClient, name: str, alias: str) -> Any | None:
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _history(c: MlflowClient, name: str) -> list[str]:
    raw = c.get_registered_model(name).tags.get(HISTORY_TAG)
    if not raw:
        return []
    history = json.loads(raw)
    if not isinstance(history, list):
        raise RegistryError(f"registered model {name!r} tag {HISTORY_TAG} is not a JSON list")
    return [str(v) for v in history]


def _gate(challenger: Any, champion: Any | None, tolerance: float) -> list[str]:
    """Reasons the challenger fails the gate; empty when it passes."""
    failures: list[str] = []
    cm = _version_metrics(challenger)
    auc = cm.get("model.churn_auc", math.nan)
    baselines = {k: cm[k] for k in ("bgnbd.churn_auc", "paretonbd.churn_auc") if k in cm}
    if not math.isfinite(auc):
        failures.append(f"challenger v{challenger.version} has no finite model.churn_auc")
        return failures
    if not baselines:
        failures.append(f"challenger v{challenger.version} has no baseline churn_auc recorded")
    else:
        best_name, best = max(baselines.items(), key=lambda kv: kv[1])
        if not auc > best:
            failures.append(
                f"challenger churn_auc {auc:.4f} does not beat baseline {best_name} {best:.4f}"
            )
    if champion is None:
        return failures
    pm = _version_metrics(champion)
    champ_auc = pm.get("model.churn_auc", math.nan)
    if auc - champ_auc < -tolerance or not math.isfinite(champ_auc):
        failures.append(
            f"challenger churn_auc {auc:.4f} is worse than champion v{champion.version} "
            f"{champ_auc:.4f} (tolerance {tolerance})"
        )
    mae, champ_mae = cm.get("model.count_mae", math.nan), pm.get("model.count_mae", math.nan)
    if not (mae <= champ_mae):
        failures.append(
            f"challenger count_mae {mae:.4f} is worse than champion v{champion.version} "
            f"{champ_mae:.4f}"
        )
    return failures


def promote(
    *,
    name: str = DEFAULT_MODEL_NAME,
    tolerance: float = 0.0,
    force: bool = False,
    client: MlflowClient | None = None,
) -> PromotionDecision:
    """Make the challenger the champion if it passes the gate; refusals change nothing."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    c = _client(client)
    challenger = _alias_version(c, name, CHALLENGER)
    champion = _alias_version(c, name, CHAMPION)
    champ_v = str(champion.version) if champion is not None else None
    if challenger is None:
        return PromotionDecision(
            False, None, champ_v, [f"registered model {name!r} has no {CHALLENGER!r} alias"]
        )
    chal_v = str(challenger.version)
    if champion is not None and champ_v == chal_v:
        return PromotionDecision(False, chal_v, champ_v, [f"v{chal_v} is already champion"])

    reasons: list[str] = []
    comparable = champion
    if champion is not None:
        mine, theirs = _version_backtest(challenger), _version_backtest(champion)
        diffs = [
            f"{k}: challenger {mine.get(k)!r} vs champion {theirs.get(k)!r}"
            for k in BACKTEST_KEYS
            if mine.get(k) != theirs.get(k)
        ]
        if diffs:
            reasons.append(
                "not the same backtest, so the metrics are not comparable: " + "; ".join(diffs)
            )
            comparable = None
    gate = _gate(challenger, comparable, tolerance)
    reasons.extend(gate)
    if reasons and not force:
        return PromotionDecision(False, chal_v, champ_v, reasons)

    history = _history(c, name)
    if champ_v is not None and (not history or history[-1] != champ_v):
        history.append(champ_v)  # champion set outside this workflow: keep it rollback-able
    history.append(chal_v)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    c.set_registered_model_alias(name, CHAMPION, chal_v)
    c.delete_registered_model_alias(name, CHALLENGER)
    c.set_model_version_tag(name, chal_v, "promoted_at", datetime.now(UTC).isoformat())
    summary = [f"v{chal_v} is now champion" + (f" (was v{champ_v})" if champ_v else "")]
    if force and reasons:
        summary.append("FORCED despite: " + " | ".join(reasons))
    elif champion is not None:
        cm, pm = _version_metrics(challenger), _version_metrics(champion)
        summary.append(
            f"churn_auc {cm.get('model.churn_auc', math.nan):.4f} vs "
            f"{pm.get('model.churn_auc', math.nan):.4f}; count_mae "
            f"{cm.get('model.count_mae', math.nan):.4f} vs "
            f"{pm.get('model.count_mae', math.nan):.4f}"
        )
    else:
        summary.append("no previous champion; challenger beats the baselines")
    return PromotionDecision(True, chal_v, champ_v, summary, forced=force and bool(reasons))


def rollback(*, name: str = DEFAULT_MODEL_NAME, client: MlflowClient | None = None) -> str:
    """Point ``champion`` back at the previous champion version; return that version."""
    c = _client(client)
    try:
        c.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"registered model {name!r} does not exist") from exc
    champion = _alias_version(c, name, CHAMPION)
    history = _history(c, name)
    if champion is not None and history and history[-1] == str(champion.version):
        history = history[:-1]
    if not history:
        current = f"v{champion.version}" if champion is not None else "none"
        raise RegistryError(
            f"nothing to roll back to: {name!r} has no previous champion (current: {current})"
        )
    previous = history[-1]
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    c.set_registered_model_alias(name, CHAMPION, previous)
    return previous


def list_versions(
    *, name: str = DEFAULT_MODEL_NAME, client: MlflowClient | None = None
) -> list[VersionRow]:
    """Every registered version, newest first, with aliases and key metrics."""
    c = _client(client)
    try:
        model = c.get_registered_model(name)
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in c.search_model_versions(f"name='{name}'"):
        rows.append(
            VersionRow(
                version=str(mv.version),
                aliases=sorted(aliases.get(str(mv.version), [])),
                run_id=mv.run_id,
                created=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                metrics=_version_metrics(mv),
                backtest=_version_backtest(mv),
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)
