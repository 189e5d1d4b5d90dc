"""What a worker loads before it answers: the model and the feature snapshot.

``retain serve`` calls :func:`load_model_and_snapshot` before it starts BentoML, so a model
or snapshot that cannot load is an exit with one line there; a worker started by
``bentoml serve`` reports the same line through ``/readyz`` instead (see
:mod:`serving.http.service`).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from serving.http.schemas import ModelInfo
from serving.http.settings import ServiceSettings, SettingsError
from serving.http.snapshot import FeatureSnapshot, model_columns
from serving.model_source import resolved_artifact

if TYPE_CHECKING:
    from serving.http.history_source import HistorySource
    from serving.scorer import ScoringModel


def resolve_model(settings: ServiceSettings) -> tuple[Any, ModelInfo]:
    """Load the configured model (artifact directory or registry URI) into memory.

    Registry downloads are hash-checked, loaded, then deleted.
    """
    from serving.scorer import ScoringModel
    from training.artifact import load_artifact

    with resolved_artifact(settings.model_uri, settings.tracking_uri) as (path, source):
        model = ScoringModel.from_artifact(load_artifact(path))
    return model, ModelInfo(name=source.name, version=source.version, uri=source.uri)


YOUNG_GENERATION_THRESHOLD = 100_000
"""Net allocations between young collections in a worker (Python's default is 700). A
100-customer request holds about 3,000 objects at its peak, and a worker serves several at
once; at 100,000 a collection comes every few dozen such requests, and the cyclic garbage
waiting for it is at most a few MB."""


def freeze_startup_heap() -> None:
    """Take everything loaded so far out of the cyclic garbage collector's scans, and let
    the young generation grow to ``YOUNG_GENERATION_THRESHOLD`` objects between collections.

    Why: a worker holds a few hundred thousand long-lived objects (the model, its compiled
    trees, BentoML, pandas); every full collection walks them all, and a request that
    allocates many objects (a hundred customers' parsed histories) triggers one now and then:
    a request that paid for it took about 1.5x the usual time. Frozen objects are never
    collected, which is right for what lives as long as the worker. With Python's default
    threshold (700 allocations) a 100-customer request, whose parsed body alone is a few
    thousand objects, still ran several young collections and, every tenth, a middle one,
    each walking that request's live objects; what a request leaves behind is almost never
    cyclic garbage, so the scans found nothing. Called once, at the end of a worker's start-up.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def load_model_and_snapshot(settings: ServiceSettings) -> tuple[Any, ModelInfo, FeatureSnapshot]:
    """Everything a worker loads at start-up; ``retain serve`` calls it first, to fail fast.

    The snapshot must hold every column the model reads, so a snapshot of another model's
    features stops start-up rather than failing each ``/score/ids`` request.
    """
    model, info = resolve_model(settings)
    snapshot = (
        FeatureSnapshot.load(settings.feature_snapshot, model_columns(model))
        if settings.feature_snapshot
        else FeatureSnapshot.empty()
    )
    return model, info, snapshot


def open_history(
    settings: ServiceSettings, model: ScoringModel, *, strict: bool
) -> HistorySource | None:
    """The database history source of ``/score/ids`` (None without ``RETAIN_HISTORY_URL``),
    its table and columns checked.

    A table or column that does not exist raises :class:`HistoryConfigError`. A database
    that does not answer raises too when ``strict`` (``retain serve`` checks before it
    starts); a worker instead starts and answers ``/score/ids`` with 503 until it does.
    """
    if settings.history_url is None:
        return None
    from serving.http.history_source import HistorySettings, HistorySource, HistoryUnavailable

    where = HistorySettings(settings.history_url, settings.history_table, settings.history_query)
    source = HistorySource(where, model.log_config)
    try:
        source.probe()
    except HistoryUnavailable:
        if strict:
            raise
        return source
    return source


def index_warning(source: HistorySource) -> str | None:
    """One line naming the ``CREATE INDEX`` to run when the history table lacks an index
    on its customer column (every ``/score/ids`` request would read the whole table)."""
    statement = source.missing_index()
    if statement is None:
        return None
    return (
        f"{source.settings.label} has no index on its customer column, so every /score/ids "
        f"request reads the whole table; run: {statement};"
    )


def expected_startup_errors() -> tuple[type[BaseException], ...]:
    """Errors of configuration or of a model/snapshot (reported in one line, no traceback).

    Anything else raised while starting is a bug and is logged with its traceback.
    """
    import lightgbm

    errors: list[type[BaseException]] = [ValueError, OSError, RuntimeError]
    errors.append(lightgbm.basic.LightGBMError)
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # an image without mlflow serves local artifacts only
        pass
    else:
        errors.append(MlflowException)
    return tuple(errors)


def startup_failure(exc: BaseException) -> str:
    """One line saying why the service cannot start, with URI passwords redacted."""
    from features.redaction import redact

    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return redact(first if isinstance(exc, SettingsError) else f"{type(exc).__name__}: {first}")
