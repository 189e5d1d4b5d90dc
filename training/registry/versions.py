"""The model registry workflow: challenger -> (gate) -> champion, and rollback.

A registered model (default name ``retain``) has two aliases: ``challenger`` (the newest
candidate) and ``champion`` (what serving loads via ``models:/retain@champion``). Nothing
here ever picks "the latest version" or "the best run": every decision names an alias or an
explicit version, so what is served only changes through :func:`promote` or
:func:`rollback`.

Each version carries, as tags, its backtest metrics and identity (cutoff, horizon, data
fingerprint) and the sha256 of its artifact's manifest: the digest lives in the registry,
outside the artifact it protects, and every load from the registry checks it.

The promotion gate compares like with like. Before any metric is compared the challenger is
loaded and scores a few customers (:func:`promote`'s ``smoke_test``; never skippable). Its
metrics are then compared with the champion's *on the challenger's backtest*: the champion's
own tags when both were backtested identically, else the champion's configuration re-fitted
at the challenger's cutoff on the challenger's data (:mod:`training.registry.gate` says why not its
registered model; recorded on the challenger by ``retain train`` with what the figures are,
or computed at promotion time). Each check has a name (:data:`training.registry.gate.CHECKS`); one
that fails refuses the promotion unless the operator skips it by name, and the skip is
recorded on the version. Champion history lives in the registered model's
``champion_history`` tag (JSON list of versions, oldest first), which is what rollback uses.

Promote and rollback change aliases and history under one lock per registered model
(:mod:`training.registry.registry_lock`); promote re-reads the champion once it holds the lock and
refuses if it changed since the gate judged it. The champion alias moves before history is
written, so history only names versions that were champion, and rollback derives its target
from where the current champion stands in it (:func:`rollback_history`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeGuard

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features.errors import UserError
from features.redaction import redact
from training.registry import gate
from training.registry.registry_lock import RegistryLockTimeout, registry_lock

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

DEFAULT_MODEL_NAME = "retain"
CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
MODEL_URI_TAG = "retain.model_uri"
MANIFEST_TAG = "retain.manifest_sha256"
SKIPPED_TAG = "retain.skipped_checks"
RESCORED_VERSION_TAG = "gate.champion_version"
RESCORED_PREFIX = "gate.champion."
RESCORED_BASIS_TAG = "gate.champion_basis"  # what the recorded champion figures are
_MISSING_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
_SHA256_HEX = frozenset("0123456789abcdef")

SmokeTest = Callable[[str], None]
# (challenger, champion) -> (the champion configuration's metrics on the challenger's
# backtest, one sentence saying how they were obtained)
Rescore = Callable[[Any, Any], tuple[Mapping[str, float | None], str]]


class RegistryError(UserError, RuntimeError):
    """A registry operation cannot proceed; the message says what is missing."""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger became champion, and every reason for that outcome."""

    promoted: bool
    challenger_version: str | None
    champion_version: str | None
    reasons: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why it would have failed


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


def _is_missing(exc: MlflowException) -> bool:
    """True when MLflow says "no such model/alias", False for a failure to ask at all."""
    return getattr(exc, "error_code", None) in _MISSING_CODES


def is_sha256(value: object) -> TypeGuard[str]:
    """A lower-case hex sha256 digest (what :data:`MANIFEST_TAG` must hold)."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= _SHA256_HEX


def register_challenger(
    run_id: str,
    *,
    name: str = DEFAULT_MODEL_NAME,
    client: MlflowClient | None = None,
) -> str:
    """Register the run's logged model as a new version and point ``challenger`` at it.

    The version's tags carry the key metrics, the backtest identity and the artifact's
    manifest digest, copied from the run, so the gate never has to re-read runs (a deleted
    run cannot change a decision) and every load can check the artifact against the
    registry. The alias may be moved by a concurrent run right after; callers report
    :func:`alias_version` rather than assume.
    """
    c = _client(client)
    run = c.get_run(run_id)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise RegistryError(
            f"run {run_id} has no {MODEL_URI_TAG!r} tag; log it with "
            "training.registry.tracking.log_training_run"
        )
    digest = run.data.tags.get(MANIFEST_TAG)
    if not is_sha256(digest):
        raise RegistryError(
            f"run {run_id} has no valid {MANIFEST_TAG!r} tag (got {digest!r}); without it "
            "a tampered artifact could not be told from this one"
        )
    missing = [k for k in gate.BACKTEST_KEYS if k not in run.data.params]
    if missing:
        raise RegistryError(f"run {run_id} lacks backtest param(s) {missing}")
    try:
        c.get_registered_model(name)
    except MlflowException as exc:
        if not _is_missing(exc):
            raise
        try:
            c.create_registered_model(name, description="retain churn / next-purchase models")
        except MlflowException:
            c.get_registered_model(name)  # created concurrently; fine if it exists now
    tags = {k: run.data.params[k] for k in gate.BACKTEST_KEYS}
    tags.update({k: repr(run.data.metrics[k]) for k in gate.KEY_METRICS if k in run.data.metrics})
    tags[MANIFEST_TAG] = digest
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


def alias_version(
    alias: str, *, name: str = DEFAULT_MODEL_NAME, client: MlflowClient | None = None
) -> str | None:
    """The version an alias points at *now* (None if unset), read back from the store."""
    mv = _alias_version(_client(client), name, alias)
    return None if mv is None else str(mv.version)


def manifest_digest(
    version: str, *, name: str = DEFAULT_MODEL_NAME, client: MlflowClient | None = None
) -> str:
    """The manifest sha256 recorded when ``version`` was registered (what loads check)."""
    mv = _client(client).get_model_version(name, version)
    digest = mv.tags.get(MANIFEST_TAG)
    if not is_sha256(digest):
        raise RegistryError(
            f"{name!r} version {version} has no recorded {MANIFEST_TAG!r}, so its artifact "
            "cannot be verified; it was registered by an older retain: retrain it with "
            "`retain train`"
        )
    return str(digest)


def run_manifest_digest(run_id: str, *, client: MlflowClient | None = None) -> str:
    """The manifest sha256 the tracking store recorded for ``run_id``'s logged model.

    What a load that only knows the run (``mlflow.pyfunc.load_model``, which hands the
    model its files but not the registered version) checks against. Every registered
    version of the run carries a copy made at registration; a copy that disagrees with the
    run's is refused rather than silently preferred.
    """
    c = _client(client)
    digest = c.get_run(run_id).data.tags.get(MANIFEST_TAG)
    if not is_sha256(digest):
        raise RegistryError(
            f"run {run_id} has no recorded {MANIFEST_TAG!r}, so its model cannot be "
            "verified; it was logged by an older retain: retrain it with `retain train`"
        )
    for mv in c.search_model_versions(f"run_id='{run_id}'"):
        recorded = mv.tags.get(MANIFEST_TAG)
        if recorded is not None and recorded != digest:
            raise RegistryError(
                f"{mv.name!r} version {mv.version} records manifest sha256 {recorded}, but "
                f"its run {run_id} records {digest}"
            )
    return str(digest)


def record_champion_rescore(
    version: str,
    champion_version: str,
    metrics: Mapping[str, float | None],
    basis: str,
    *,
    name: str = DEFAULT_MODEL_NAME,
    client: MlflowClient | None = None,
) -> None:
    """Tag ``version`` with the champion's figures on ``version``'s own backtest.

    ``metrics`` are keyed like the version's own (``model.churn_auc``); ``basis`` says what
    they are (:data:`RESCORED_BASIS_TAG`, e.g. the champion's configuration re-fitted at
    this version's cutoff). The gate compares against them while ``champion_version`` is
    still champion.
    """
    c = _client(client)
    for key, value in metrics.items():
        if value is not None and math.isfinite(value):
            c.set_model_version_tag(name, version, RESCORED_PREFIX + key, repr(float(value)))
    c.set_model_version_tag(name, version, RESCORED_BASIS_TAG, basis)
    c.set_model_version_tag(name, version, RESCORED_VERSION_TAG, str(champion_version))


def _alias_version(c: MlflowClient, name: str, alias: str) -> Any | None:
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def _history(c: MlflowClient, name: str) -> list[str]:
    raw = c.get_registered_model(name).tags.get(HISTORY_TAG)
    if not raw:
        return []
    history = json.loads(raw)
    if not isinstance(history, list):
        raise RegistryError(f"registered model {name!r} tag {HISTORY_TAG} is not a JSON list")
    return [str(v) for v in history]


def _champion_metrics(
    challenger: ModelVersion,
    champion: ModelVersion,
    rescore: Rescore | None,
    name: str,
    c: MlflowClient,
) -> tuple[dict[str, float], str, str | None]:
    """The champion's metrics to compare with, where they come from, and why not comparable.

    Preference: identical backtests (the champion's own tags), then the champion's
    configuration re-fitted on the challenger's backtest as recorded on the challenger
    (with its :data:`RESCORED_BASIS_TAG`), then ``rescore`` now. Otherwise the champion's own
    metrics are returned with the reason they are not comparable (check ``same_backtest``).
    """
    mine, theirs = gate.version_backtest(challenger), gate.version_backtest(champion)
    diffs = [
        f"{k}: challenger {mine.get(k)!r} vs champion {theirs.get(k)!r}"
        for k in gate.BACKTEST_KEYS
        if mine.get(k) != theirs.get(k)
    ]
    champ_v = str(champion.version)
    if not diffs:
        return gate.version_metrics(champion), "its own backtest (identical)", None
    basis = challenger.tags.get(RESCORED_BASIS_TAG)
    # figures recorded without a basis re-scored the champion's production model, which saw
    # this backtest's outcomes: not comparable, so they are ignored
    if challenger.tags.get(RESCORED_VERSION_TAG) == champ_v and basis:
        rescored = gate.float_tags(challenger.tags, gate.KEY_METRICS, RESCORED_PREFIX)
        return rescored, basis, None
    if rescore is not None:
        figures, basis = rescore(challenger, champion)
        rescored = {k: float(v) for k, v in figures.items() if v is not None and math.isfinite(v)}
        record_champion_rescore(
            str(challenger.version), champ_v, rescored, basis, name=name, client=c
        )
        return rescored, basis, None
    return (
        gate.version_metrics(champion),
        "its own, different backtest",
        f"champion v{champ_v} was backtested differently ({'; '.join(diffs)}) and has not "
        f"been re-fitted on challenger v{challenger.version}'s backtest; run `retain "
        "promote --data <the challenger's purchase log>` to re-fit its configuration there",
    )


def promote(
    *,
    smoke_test: SmokeTest,
    name: str = DEFAULT_MODEL_NAME,
    tolerance: float = 0.0,
    skip: Collection[str] = (),
    rescore: Rescore | None = None,
    client: MlflowClient | None = None,
) -> PromotionDecision:
    """Make the challenger the champion if it loads, scores and passes the gate.

    ``smoke_test(version)`` must load the registered artifact (digest-checked) and score a
    few customers, raising on any failure: a challenger that cannot serve is refused
    whatever its metrics, and this check cannot be skipped. ``skip`` names checks of
    :data:`training.registry.gate.CHECKS` to skip; they are recorded on the version (:data:`SKIPPED_TAG`) with
    the reason each would have failed. ``rescore(challenger, champion)`` returns the
    champion configuration's metrics on the challenger's backtest, and what they are, when
    none are recorded. Refusals
    change nothing.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    unknown = sorted(set(skip) - set(gate.CHECKS))
    if unknown:
        raise RegistryError(
            f"unknown check(s) {unknown} for --skip-check; choose from {sorted(gate.CHECKS)}"
        )
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

    try:
        smoke_test(chal_v)
    except Exception as exc:
        return PromotionDecision(
            False,
            chal_v,
            champ_v,
            [f"challenger v{chal_v} failed the load-and-score check: {redact(exc)}"],
        )
    failures: dict[str, str] = {}
    champion_metrics, source = None, ""
    if champion is not None:
        champion_metrics, source, not_comparable = _champion_metrics(
            challenger, champion, rescore, name, c
        )
        if not_comparable:
            failures["same_backtest"] = not_comparable
    failures.update(gate.failed_checks(challenger, champion, champion_metrics, tolerance))
    refused = [f"[{k}] {v}" for k, v in failures.items() if k not in skip]
    if refused:
        return PromotionDecision(False, chal_v, champ_v, refused)

    skipped = {k: failures.get(k, "passed anyway") for k in sorted(skip)}
    with _locked(c, name, "promote"):
        # the gate judged against champ_v; a rollback or promote since then voids that
        now_champion = _alias_version(c, name, CHAMPION)
        now_v = str(now_champion.version) if now_champion is not None else None
        if now_v != champ_v:
            return PromotionDecision(
                False,
                chal_v,
                now_v,
                [
                    f"the champion changed from v{champ_v or '-'} to v{now_v or '-'} while "
                    f"challenger v{chal_v} was being checked (a concurrent promote or "
                    "rollback); nothing was changed: run `retain promote` again"
                ],
            )
        history = _history(c, name)
        if champ_v is not None and (not history or history[-1] != champ_v):
            history.append(champ_v)  # champion set outside this workflow: keep it rollback-able
        history.append(chal_v)
        if skipped:
            c.set_model_version_tag(name, chal_v, SKIPPED_TAG, json.dumps(skipped))
        # the alias move is the commit point; history follows it, so a promotion killed in
        # between leaves a champion missing from history (rollback handles that), never a
        # history naming a version that was not champion
        c.set_registered_model_alias(name, CHAMPION, chal_v)
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        now = _alias_version(c, name, CHALLENGER)
        if now is not None and str(now.version) == chal_v:  # a newer challenger keeps its alias
            c.delete_registered_model_alias(name, CHALLENGER)
        c.set_model_version_tag(name, chal_v, "promoted_at", datetime.now(UTC).isoformat())
    summary = [f"v{chal_v} is now champion" + (f" (was v{champ_v})" if champ_v else "")]
    for check, why in skipped.items():
        summary.append(f"SKIPPED check {check!r} (recorded on v{chal_v}): {why}")
    if champion is not None and champion_metrics is not None:
        cm = gate.version_metrics(challenger)
        summary.append(
            f"churn_auc {cm.get('model.churn_auc', math.nan):.4f} vs "
            f"{champion_metrics.get('model.churn_auc', math.nan):.4f}; count_mae "
            f"{cm.get('model.count_mae', math.nan):.4f} vs "
            f"{champion_metrics.get('model.count_mae', math.nan):.4f} "
            f"(champion v{champ_v} on {source})"
        )
    elif champion is None:
        summary.append("no previous champion; challenger beats the baselines")
    return PromotionDecision(True, chal_v, champ_v, summary, skipped)


def rollback(*, name: str = DEFAULT_MODEL_NAME, client: MlflowClient | None = None) -> str:
    """Point ``champion`` back at the previous champion version; return that version."""
    c = _client(client)
    try:
        c.get_registered_model(name)
    except MlflowException as exc:
        if not _is_missing(exc):
            raise
        raise RegistryError(f"registered model {name!r} does not exist") from None
    with _locked(c, name, "rollback"):
        champion = _alias_version(c, name, CHAMPION)
        history = _history(c, name)
        earlier = rollback_history(history, str(champion.version) if champion else None)
        if not earlier:
            current = f"v{champion.version}" if champion is not None else "none"
            raise RegistryError(
                f"nothing to roll back to: {name!r} has no previous champion (current: {current})"
            )
        previous = earlier[-1]
        c.set_registered_model_alias(name, CHAMPION, previous)  # the commit point, as in promote
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(earlier))
    return previous


def rollback_history(history: list[str], champion: str | None) -> list[str]:
    """The history a rollback leaves: everything before the champion's last entry.

    History only ever names versions that were champion (the alias moves first), so the
    entry before the current champion is the one it replaced. A champion absent from
    history was set by a promotion killed before it wrote history (or outside retain): it
    replaced the last entry. A champion found earlier than the end is what a rollback
    killed before trimming history left: the entries after it were rolled back from.
    """
    if champion is None or champion not in history:
        return list(history)
    last = len(history) - 1 - history[::-1].index(champion)
    return history[:last]


@contextmanager
def _locked(c: MlflowClient, name: str, operation: str) -> Iterator[None]:
    """:func:`training.registry.registry_lock.registry_lock`, its timeout said as a registry error."""
    try:
        with registry_lock(c, name, operation):
            yield
    except RegistryLockTimeout as exc:
        raise RegistryError(str(exc)) from None


def list_versions(
    *, name: str = DEFAULT_MODEL_NAME, client: MlflowClient | None = None
) -> list[VersionRow]:
    """Every registered version, newest first, with aliases and key metrics."""
    c = _client(client)
    try:
        model = c.get_registered_model(name)
    except MlflowException as exc:
        if _is_missing(exc):
            return []
        raise RegistryError(f"cannot list versions of {name!r}: {redact(exc)}") from None
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
                metrics=gate.version_metrics(mv),
                backtest=gate.version_backtest(mv),
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)
