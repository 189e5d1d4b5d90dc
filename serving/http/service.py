"""The HTTP scoring service: a thin BentoML shell around :mod:`serving.scorer`.

``bentoml serve serving.service:RetainService`` (or ``retain serve``). Each worker process
loads the model once in ``RetainService.__init__`` (a local artifact directory or an MLflow
registry alias, hash-checked by :func:`training.artifact.load_artifact`); requests are
validated by the pydantic models in :mod:`serving.schemas` and scored by the one scoring
function. Configuration is read from the environment once, at start-up (see
:class:`ServiceSettings`).

Why a micro-batcher: one ``score`` call costs a few milliseconds of fixed pandas/LightGBM
overhead whatever the number of customers, so concurrent requests of one worker are gathered
for ``RETAIN_BATCH_WINDOW_MS`` and scored in one call per (as_of, campaign) group. BentoML's
adaptive batching is not used (it answered 503 under load in earlier tests).

Why a guard middleware: size limits, content types and the API key are checked before
BentoML reads the body, so an oversized or pickled body is refused without being parsed, and
a body that does not arrive within ``RETAIN_BODY_TIMEOUT_SECONDS`` gets 408 and a closed
connection instead of holding the worker.

Why a worker that cannot start stays up: BentoML respawns a worker whose ``__init__`` raises,
forever, with the port open and every request hanging. A worker whose settings, model or
snapshot cannot be loaded logs one line, answers ``/readyz`` with 503 and the reason, and
every API request with 503 at once. ``retain serve`` loads the same things before it starts
BentoML (:func:`load_model_and_snapshot`), so there the same fault is an exit with the
reason instead.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np
import pandas as pd
from starlette.responses import Response

from features.atomic import pinned
from features.builders import FeatureBlock
from features.log_arrays import LogArrays, canonical_log_arrays
from features.redaction import install_log_redaction
from features.schema import LogConfig, PurchaseLogError
from serving.model_source import default_model_uri, resolved_artifact
from serving.offers import ScoresError
from serving.schemas import (
    EARLIEST,
    LATEST,
    CustomerIn,
    IdsRequest,
    ModelInfo,
    NoopRequest,
    NoopResponse,
    PurchaseIn,
    ScoreRequest,
    ScoreResponse,
    SnapshotInfo,
)

if TYPE_CHECKING:  # the scorer (LightGBM) is imported by workers, not by the supervisor
    from serving.scorer import ScoredCustomers

logger = logging.getLogger("retain.service")

DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_CUSTOMERS = 1000
DEFAULT_BATCH_WINDOW_MS = 2.0
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0
MAX_BATCH_CUSTOMERS = 2000
PICKLE_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        "application/python-pickle",
        "application/x-python-pickle",
        "application/pickle",
        "application/x-pickle",
        "application/vnd.bentoml+pickle",
    }
)
JSON_MEDIA_TYPE = "application/json"
INPUT_ERRORS: tuple[type[Exception], ...] = (PurchaseLogError, ScoresError)
PICKLE_MAGIC = 0x80

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# ---- configuration -----------------------------------------------------------------------


class SettingsError(ValueError):
    """A setting in the service's environment that cannot be used (one line naming it)."""


def _env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be > 0")
    return value


def _env_float(
    name: str, default: float, environ: Mapping[str, str] | None = None, *, positive: bool = False
) -> float:
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SettingsError(f"{name}={raw!r} must be a number {'>' if positive else '>='} 0")
    return value


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service reads from the environment, read once per process."""

    model_uri: str
    registered_model: str = "retain"
    tracking_uri: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_customers: int = DEFAULT_MAX_CUSTOMERS
    api_key: str | None = None
    feature_snapshot: str | None = None
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Read and check every setting; :class:`SettingsError` names the first bad one.

        ``environ`` defaults to this process's; ``retain serve`` passes the environment it
        is about to start BentoML with, so a bad value stops it before any worker starts.
        """
        env = os.environ if environ is None else environ
        name = env.get("RETAIN_REGISTERED_MODEL", "").strip() or "retain"
        return cls(
            model_uri=env.get("RETAIN_MODEL_URI", "").strip() or default_model_uri(name),
            registered_model=name,
            tracking_uri=env.get("MLFLOW_TRACKING_URI", "").strip() or None,
            max_body_bytes=_env_int("RETAIN_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, env),
            max_customers=_env_int("RETAIN_MAX_CUSTOMERS", DEFAULT_MAX_CUSTOMERS, env),
            api_key=env.get("RETAIN_API_KEY") or None,
            feature_snapshot=env.get("RETAIN_FEATURE_SNAPSHOT", "").strip() or None,
            batch_window_ms=_env_float("RETAIN_BATCH_WINDOW_MS", DEFAULT_BATCH_WINDOW_MS, env),
            body_timeout_seconds=_env_float(
                "RETAIN_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_SECONDS, env, positive=True
            ),
        )


def configure_process_env() -> None:
    """Telemetry opt-outs, and one OpenMP thread: per-request LightGBM calls are tiny and
    OpenMP's thread pool costs more than it saves (3x slower on 2 busy cores).

    BentoML's worker logging passes WARNING and up only; retain's own logger passes INFO,
    so the start-up line saying which model and snapshot were loaded is shown.
    """
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    own = logging.getLogger("retain")
    if own.level == logging.NOTSET:
        own.setLevel(logging.INFO)
    logger.disabled = False  # BentoML's dictConfig disables loggers created before it


# ---- model resolution --------------------------------------------------------------------


def resolve_model(settings: ServiceSettings) -> tuple[Any, ModelInfo]:
    """Load the configured model (artifact directory or registry URI) into memory.

    Registry downloads are hash-checked, loaded, then deleted.
    """
    from serving.scorer import ScoringModel
    from training.artifact import load_artifact

    with resolved_artifact(settings.model_uri, settings.tracking_uri) as (path, source):
        model = ScoringModel.from_artifact(load_artifact(path))
    return model, ModelInfo(name=source.name, version=source.version, uri=source.uri)


def load_model_and_snapshot(settings: ServiceSettings) -> tuple[Any, ModelInfo, FeatureSnapshot]:
    """Everything a worker loads at start-up; ``retain serve`` calls it first, to fail fast."""
    model, info = resolve_model(settings)
    snapshot = (
        FeatureSnapshot.load(settings.feature_snapshot)
        if settings.feature_snapshot
        else FeatureSnapshot.empty()
    )
    return model, info, snapshot


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


# ---- feature snapshot (/score/ids) -------------------------------------------------------


def _snapshot_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise FileNotFoundError(f"feature snapshot directory {path} has no .parquet files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"feature snapshot {path} does not exist")
    return [path]


def snapshot_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """File names, sizes and mtimes: changes when the batch job rewrites the snapshot."""
    return tuple(
        (str(p), st.st_size, st.st_mtime_ns) for p in _snapshot_files(path) if (st := p.stat())
    )


@dataclass(frozen=True)
class FeatureSnapshot:
    """Per-customer features written by the batch job, as the block the scorer reads.

    ``as_of`` is indexed by ``customer_id`` in the block's row order, so a request only
    looks rows up and slices the block (converted from Parquet once, at load). A customer
    present in several files keeps its row with the latest ``as_of``.
    """

    path: Path | None
    features: FeatureBlock
    as_of: pd.Series
    signature: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def empty(cls) -> FeatureSnapshot:
        return cls(
            None,
            FeatureBlock(np.empty(0, dtype=object), np.empty((0, 0)), ()),
            pd.Series(dtype="datetime64[us, UTC]", index=pd.Index([], dtype="str")),
        )

    @classmethod
    def load(cls, path: str | Path) -> FeatureSnapshot:
        root = Path(path)
        signature = snapshot_signature(root)
        # files of one version, even if `retain score` switches the link meanwhile
        frames = [pd.read_parquet(p) for p in _snapshot_files(pinned(root))]
        frame = pd.concat(frames) if len(frames) > 1 else frames[0]
        if "customer_id" not in frame.columns:
            if frame.index.name != "customer_id":
                raise ValueError(f"feature snapshot {root}: no customer_id column or index")
            frame = frame.reset_index()
        if "as_of" not in frame.columns:
            raise ValueError(f"feature snapshot {root}: no as_of column")
        as_of = pd.to_datetime(frame["as_of"], utc=True)
        if as_of.isna().any():
            raise ValueError(f"feature snapshot {root}: {int(as_of.isna().sum())} empty as_of")
        frame = frame.assign(as_of=as_of, customer_id=frame["customer_id"].astype("str"))
        frame = frame.sort_values("as_of", kind="stable").drop_duplicates(
            "customer_id", keep="last"
        )
        frame = frame.set_index("customer_id")
        block = FeatureBlock.from_frame(frame.drop(columns=["as_of"]))
        return cls(root, block, frame["as_of"], signature)

    def info(self, model: ModelInfo) -> SnapshotInfo:
        has = len(self.as_of) > 0
        return SnapshotInfo(
            model=model,
            path=None if self.path is None else str(self.path),
            customers=len(self.features),
            as_of_min=self.as_of.min().to_pydatetime() if has else None,
            as_of_max=self.as_of.max().to_pydatetime() if has else None,
        )


# ---- scoring -----------------------------------------------------------------------------


class RequestError(ValueError):
    """A request that is well-formed JSON but cannot be scored; becomes HTTP 400."""

    def __init__(self, message: str, loc: Sequence[str | int]) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


@dataclass
class ScoreJob:
    """One ``/score`` request waiting in the micro-batcher."""

    customers: list[CustomerIn]
    campaign: str | None
    results: list[dict[str, Any] | None] = field(default_factory=list)
    error: RequestError | None = None


def history_log(customers: Sequence[CustomerIn], config: LogConfig | None = None) -> LogArrays:
    """The canonical log of many customers' history rows, as arrays (no DataFrame).

    Columns are built attribute by attribute (the per-row Python is the cost here); an
    optional column is passed only when some row has a value, as a source file without that
    column would be, so the defaults (quantity 1, no discount, order ids from the time) are
    applied in one place: :func:`features.log_arrays.canonical_log_arrays`. ``config`` is the
    model's log config (its counting rules apply; a request has no source column names).
    """
    rows = [row for customer in customers for row in customer.history]
    ids = [c.customer_id for c in customers for _ in c.history]
    n = len(rows)
    quantity = [r.quantity for r in rows]
    discount = [r.discount for r in rows]
    text = {
        name: values if values.count(None) != n else None
        for name, values in (
            ("order_id", [r.order_id for r in rows]),
            ("product_id", [r.product_id for r in rows]),
            ("category", [r.category for r in rows]),
            ("channel", [r.channel for r in rows]),
        )
    }
    return canonical_log_arrays(
        ids,
        _utc_micros([r.timestamp for r in rows]),
        np.array([r.amount for r in rows], dtype=np.float64),
        quantity=(
            np.array([1.0 if q is None else q for q in quantity], dtype=np.float64)
            if quantity.count(None) != n
            else None
        ),
        discount=np.array([bool(d) for d in discount], dtype=bool) if any(discount) else None,
        config=config,
        **text,
    )


_EARLIEST_S = EARLIEST.timestamp()
_LATEST_S = LATEST.timestamp()


def _utc_micros(stamps: list[datetime]) -> np.ndarray:
    """Datetimes (naive ones are UTC) as int64 UTC microseconds, exactly, bounds checked.

    ``pd.to_datetime`` on aware datetime objects took 3.5 ms for the 1,000 rows of a
    100-customer request, datetime arithmetic per row 2 ms; ``timestamp()`` is C. Its float
    is within a microsecond, so whole seconds are rounded from it and the microseconds
    taken from the datetime itself: exact.
    """
    seconds = np.array(
        [
            t.timestamp() if t.tzinfo is not None else t.replace(tzinfo=UTC).timestamp()
            for t in stamps
        ],
        dtype=np.float64,
    )
    fraction = np.array([t.microsecond for t in stamps], dtype=np.int64)
    whole = np.round(seconds - fraction / 1e6)
    bad = ~((whole >= _EARLIEST_S) & (whole < _LATEST_S))
    if bad.any():
        row = int(np.argmax(bad))
        raise PurchaseLogError(
            f"history[{row}].timestamp must lie between {EARLIEST.date()} and {LATEST.date()} (UTC)"
        )
    return whole.astype(np.int64) * 1_000_000 + fraction


def _floats(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def _days(values: np.ndarray) -> list[str | None]:
    """datetime64 values as ISO dates (UTC), None for NaT."""
    days = values.astype("datetime64[D]")
    text = np.datetime_as_string(days).tolist()
    return [None if nat else t for t, nat in zip(text, np.isnat(days).tolist(), strict=True)]


def _texts(values: np.ndarray) -> list[str | None]:
    return [v if v else None for v in values.tolist()]


def score_records(scored: ScoredCustomers) -> dict[str, dict[str, Any]]:
    """Scorer output -> response dicts keyed by customer id, built from its arrays."""
    if len(scored) == 0:
        return {}
    ids = scored.customer_id.tolist()
    as_of = scored.as_of.isoformat()
    numbers = scored.numbers
    churn = _floats(numbers["churn_probability"])
    p30 = _floats(numbers["p_purchase_30d"])
    p_h = _floats(numbers["p_purchase_horizon"])
    spend_h = _floats(numbers["expected_spend_horizon"])
    spend_y = _floats(numbers["expected_spend_365d"])
    uplift = _floats(numbers["uplift"])
    offers = scored.offers
    value = _floats(offers.expected_value)
    band = scored.risk_band.tolist()
    segment = scored.segment.tolist()
    offer = offers.texts("offer").tolist()
    channel = _texts(offers.texts("channel"))
    reason = _texts(offers.texts("reason"))
    rule = _texts(offers.texts("rule"))
    suppressed_reason = _texts(offers.texts("suppressed_reason"))
    reasons = scored.reasons.tolist()
    next_date = _days(scored.next_purchase)
    send_date = _days(offers.send_day)
    holdout = offers.holdout.tolist()
    suppressed = offers.suppressed.tolist()
    out: dict[str, dict[str, Any]] = {}
    for i, customer_id in enumerate(ids):
        out[customer_id] = {
            "customer_id": customer_id,
            "status": "scored",
            "as_of": as_of,
            "churn_probability": churn[i],
            "risk_band": band[i],
            "expected_next_purchase_date": next_date[i],
            "p_purchase_30d": p30[i],
            "p_purchase_horizon": p_h[i],
            "expected_spend_horizon": spend_h[i],
            "expected_spend_365d": spend_y[i],
            "uplift": uplift[i],
            "segment": segment[i],
            "reasons": [r for r in reasons[i] if r],
            "offer": {
                "code": offer[i],
                "channel": channel[i],
                "send_date": send_date[i],
                "expected_value": value[i],
                "reason": reason[i],
                "rule": rule[i],
                "holdout": holdout[i],
                "suppressed": suppressed[i],
                "suppressed_reason": suppressed_reason[i],
            },
        }
    return out


def _unscored(customer_id: str, status: str, as_of: pd.Timestamp | None) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "status": status,
        "as_of": None if as_of is None else as_of.isoformat(),
        "reasons": [],
        "offer": None,
    }


def _score_group(
    model: Any, customers: list[CustomerIn], as_of: pd.Timestamp, campaign: str | None
) -> dict[str, dict[str, Any]]:
    """One canonical log and one score call for customers sharing as_of and campaign."""
    from serving.scorer import score_log

    log = history_log(customers, model.log_config)
    if len(log) == 0:
        return {}
    return score_records(score_log(model, log, as_of, campaign=campaign))


def _locate_error(model: Any, job: ScoreJob, now: pd.Timestamp) -> RequestError:
    """Error path only: find the first customer the scorer rejects, and why."""
    for index, customer in enumerate(job.customers):
        where = f"customers[{index}] (customer_id {customer.customer_id!r})"
        try:
            history_log([customer], model.log_config)
        except PurchaseLogError as exc:
            return RequestError(f"{where}.history: {exc}", ("customers", index, "history"))
        try:
            as_of = now if customer.as_of is None else pd.Timestamp(customer.as_of)
            _score_group(model, [customer], as_of, job.campaign)
        except INPUT_ERRORS as exc:
            return RequestError(f"{where}: {exc}", ("customers", index))
    return RequestError("the request could not be scored", ("customers",))


def score_jobs(model: Any, jobs: Sequence[ScoreJob], now: pd.Timestamp) -> None:
    """Score every customer of every job, one scorer call per (as_of, campaign) group.

    Within a group customer ids must be unique (the offer policy's holdout draw hashes the
    id), so a customer id sent by two requests of one batch goes to a second group. Results
    are written into each job; a job whose history canonicalize rejects gets ``error``.
    """
    groups: dict[tuple[pd.Timestamp, str | None], list[tuple[set[str], list[tuple[int, int]]]]]
    groups = {}
    for j, job in enumerate(jobs):
        job.results = [None] * len(job.customers)
        for i, customer in enumerate(job.customers):
            as_of = now if customer.as_of is None else pd.Timestamp(customer.as_of)
            slots = groups.setdefault((as_of, job.campaign), [])
            slot = next((s for s in slots if customer.customer_id not in s[0]), None)
            if slot is None:
                slot = (set(), [])
                slots.append(slot)
            ids, members = slot
            ids.add(customer.customer_id)
            members.append((j, i))

    failed: set[int] = set()
    for (as_of, campaign), slots in groups.items():
        for _, members in slots:
            live = [(j, i) for j, i in members if j not in failed]
            try:
                rows = _score_group(model, [jobs[j].customers[i] for j, i in live], as_of, campaign)
            except INPUT_ERRORS:
                if len({j for j, _ in live}) == 1:
                    failed.add(live[0][0])
                    continue
                # Several requests shared the group: score them one by one to blame one.
                for j in sorted({j for j, _ in live}):
                    mine = [i for jj, i in live if jj == j]
                    try:
                        own = _score_group(
                            model, [jobs[j].customers[i] for i in mine], as_of, campaign
                        )
                    except INPUT_ERRORS:
                        failed.add(j)
                        continue
                    for i in mine:
                        cid = jobs[j].customers[i].customer_id
                        jobs[j].results[i] = own.get(cid) or _unscored(
                            cid, "no_purchases_before_as_of", as_of
                        )
                continue
            for j, i in live:
                cid = jobs[j].customers[i].customer_id
                jobs[j].results[i] = rows.get(cid) or _unscored(
                    cid, "no_purchases_before_as_of", as_of
                )
    for j in failed:
        jobs[j].error = _locate_error(model, jobs[j], now)
        jobs[j].results = []


def score_ids(
    model: Any, snapshot: FeatureSnapshot, customer_ids: Sequence[str], campaign: str | None
) -> list[dict[str, Any]]:
    """Score ids from the feature snapshot: one scorer call per snapshot ``as_of``."""
    from serving.scorer import score_block

    unique = pd.Index(list(dict.fromkeys(customer_ids)), dtype="str")
    rows: dict[str, dict[str, Any]] = {}
    positions = snapshot.as_of.index.get_indexer(unique)
    positions = positions[positions >= 0]
    if len(positions):
        stamps = snapshot.as_of.iloc[positions]
        for stamp in np.unique(stamps.to_numpy()):
            picked = positions[(stamps == stamp).to_numpy()]
            block = snapshot.features.take(picked)
            rows.update(score_records(score_block(model, block, stamp, campaign=campaign)))
    out = []
    for cid in customer_ids:
        if cid in rows:
            out.append(rows[cid])
        elif cid in snapshot.as_of.index:
            out.append(_unscored(cid, "no_purchases_before_as_of", snapshot.as_of.loc[cid]))
        else:
            out.append(_unscored(cid, "unknown_customer_id", None))
    return out


class MicroBatcher:
    """Gathers concurrent ``/score`` jobs of one worker and scores them in one thread call.

    One batch is scored at a time (a worker has one core's worth of Python); requests that
    arrive meanwhile form the next batch, so batches grow with load and a lone request only
    waits ``window`` seconds.
    """

    def __init__(self, run: Callable[[list[ScoreJob]], None], window: float) -> None:
        self._run = run
        self._window = window
        self._queue: asyncio.Queue[tuple[ScoreJob, asyncio.Future[None]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, job: ScoreJob) -> ScoreJob:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop(self._queue))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, done))
        await done
        return job

    async def _loop(self, queue: asyncio.Queue[tuple[ScoreJob, asyncio.Future[None]]]) -> None:
        import anyio.to_thread

        while True:
            batch = [await queue.get()]
            if self._window > 0:
                await asyncio.sleep(self._window)
            n = len(batch[0][0].customers)
            while not queue.empty() and n < MAX_BATCH_CUSTOMERS:
                item = queue.get_nowait()
                batch.append(item)
                n += len(item[0].customers)
            jobs = [job for job, _ in batch]
            try:
                await anyio.to_thread.run_sync(self._run, jobs)
            except Exception as exc:  # a bug, not bad input: every waiter gets it
                logger.exception("scoring batch of %d request(s) failed", len(jobs))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


# ---- HTTP helpers ------------------------------------------------------------------------

_REQUEST_FIELDS: frozenset[str] = frozenset(
    name
    for model in (ScoreRequest, CustomerIn, PurchaseIn, IdsRequest, NoopRequest)
    for name in model.model_fields
)
_BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"


def client_error_summary(exc: BaseException) -> str | None:
    """One line for a request BentoML refused with a 4xx; None for a server error.

    Only field names this API defines, list indices and pydantic's error types are shown:
    nothing the client sent (an unknown key shows as ``?``).
    """
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        shown = []
        for error in exc.errors(include_url=False, include_context=False, include_input=False):
            loc = ".".join(
                str(part) if isinstance(part, int) or part in _REQUEST_FIELDS else "?"
                for part in error["loc"]
            )
            shown.append(f"{loc or '(body)'} {error['type']}")
        more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
        return f"{exc.error_count()} validation error(s): {'; '.join(shown[:3])}{more}"
    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return f"{type(exc).__name__} ({int(exc.error_code)})"
    return None


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs every refused request at ERROR with a ~30-line traceback that quotes
    parts of the body; this turns a 4xx into one WARNING line without body contents.

    Server errors (5xx, bugs) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        summary = None if exc is None else client_error_summary(exc)
        if summary is not None:
            args = record.args if isinstance(record.args, tuple) else ()
            path, method = (*args, "?", "?")[:2]
            record.msg = "refused %s [%s]: %s"
            record.args = (path, method, summary)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorLogFilter` on BentoML's error logger (once per process)."""
    target = logging.getLogger(_BENTOML_ERROR_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in target.filters):
        target.addFilter(ClientErrorLogFilter())


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(),
        status_code=status,
        media_type=JSON_MEDIA_TYPE,
    )


def _error(status: int, message: str, loc: Sequence[str | int] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if loc is not None:
        body["detail"] = [{"loc": list(loc), "msg": message}]
    return _json(status, body)


_CLOSE = ((b"connection", b"close"),)


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """API key, content type and body size checks in front of every POST.

    The body is read here (bounded by ``RETAIN_MAX_BODY_BYTES``, whatever Content-Length
    claims, and by ``RETAIN_BODY_TIMEOUT_SECONDS``) and replayed to BentoML, so an oversized
    or stalled body is refused (413, 408) before any parsing, and the connection is closed
    so the rest is never read. ``GET /readyz`` is answered here with the model's name and
    version, or 503 and the reason the service did not start; while not ready every POST
    gets that 503 at once. Only POSTs (the API and admin endpoints) need the key: GET
    health, metrics and docs stay open.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.failure: str | None = None
        try:
            settings = ServiceSettings.from_env()
        except SettingsError as exc:  # the service instance reports it too, in one line
            self.failure = str(exc)
            settings = ServiceSettings(model_uri="")
        self.max_body = settings.max_body_bytes
        self.api_key = settings.api_key
        self.body_timeout = settings.body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        if method == "GET" and path == "/readyz":
            await self._readyz(send)
            return
        if method in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if self.api_key is not None:
            refused = self._auth(headers)
            if refused is not None:
                status, message = refused
                extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
                await _send_json(send, status, {"error": message}, extra)
                return
        failure = self._failure()
        if failure is not None:
            await _send_json(send, 503, {"error": f"service not ready: {failure}"}, _CLOSE)
            return
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media != JSON_MEDIA_TYPE:
            what = (
                "pickle is never accepted"
                if media in PICKLE_MEDIA_TYPES
                else (f"only {JSON_MEDIA_TYPE} is accepted")
            )
            await _send_json(
                send, 415, {"error": f"unsupported content type {media or '(none)'!r}: {what}"}
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body
            except ValueError:
                await _send_json(send, 400, {"error": "Content-Length is not an integer"})
                return
            if too_big:
                await self._too_big(send)
                return
        try:
            async with asyncio.timeout(self.body_timeout):  # one timer, not a task per chunk
                body = await self._read_body(receive)
        except TimeoutError:
            message = f"request body not received within {self.body_timeout:g} s"
            await _send_json(send, 408, {"error": message}, _CLOSE)
            return
        if body is None:  # the client went away
            return
        if len(body) > self.max_body:
            await self._too_big(send)
            return
        if body[:1] == bytes([PICKLE_MAGIC]):
            await _send_json(send, 415, {"error": "body looks like a pickle; never accepted"})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The body, or its first chunks once they pass the limit; None on disconnect."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body or not message.get("more_body", False):
                return b"".join(chunks)

    def _auth(self, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        if not given:
            return 401, "missing API key: send X-API-Key or Authorization: Bearer <key>"
        assert self.api_key is not None
        if not hmac.compare_digest(given, self.api_key.encode()):
            return 403, "API key not accepted"
        return None

    async def _too_big(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            {"error": f"request body exceeds the limit of {self.max_body} bytes"},
            _CLOSE,
        )

    def _failure(self) -> str | None:
        """Why the service cannot answer (bad settings, model or snapshot), else None."""
        if self.failure is not None:
            return self.failure
        from _bentoml_sdk.service import get_current_service

        instance = get_current_service()
        return getattr(instance, "failure", None)

    async def _readyz(self, send: Send) -> None:
        from _bentoml_sdk.service import get_current_service

        failure = self._failure()
        instance = get_current_service()
        info = instance.readiness() if instance is not None and failure is None else None
        if info is None:
            await _send_json(
                send, 503, {"status": "not ready", "reason": failure or "still starting"}
            )
        else:
            await _send_json(send, 200, {"status": "ready", **info})


# ---- the service -------------------------------------------------------------------------


@bentoml.service(
    name="retain",
    workers=_env_int("RETAIN_WORKERS", 1),
    traffic={"timeout": 60},
    threads=1,
)
class RetainService:
    """Churn / next-purchase scores and offers over HTTP."""

    def __init__(self) -> None:
        configure_process_env()
        quiet_client_errors()
        install_log_redaction()
        self.ready = False
        self.failure: str | None = None
        started = time.perf_counter()
        try:
            self.settings = ServiceSettings.from_env()
            self.model, self.model_info, self.snapshot = load_model_and_snapshot(self.settings)
        except Exception as exc:  # never raise: BentoML would respawn this worker forever
            self.failure = startup_failure(exc)
            if isinstance(exc, expected_startup_errors()):
                logger.error("retain service not ready: %s", self.failure)
            else:
                logger.exception("retain service not ready (a bug): %s", self.failure)
            return
        self.batcher = MicroBatcher(self._score_batch, self.settings.batch_window_ms / 1000)
        self.ready = True
        logger.info(
            "model %s version %s loaded from %s in %.1fs; snapshot %s of %d customers",
            self.model_info.name,
            self.model_info.version,
            self.model_info.uri,
            time.perf_counter() - started,
            self.snapshot.path or "(none)",
            len(self.snapshot.features),
        )

    def __is_ready__(self) -> bool:
        return self.ready

    def readiness(self) -> dict[str, Any] | None:
        """What ``/readyz`` reports; None until the model is loaded and hash-checked."""
        if not self.ready:
            return None
        return {
            "model": self.model_info.model_dump(),
            "horizon_days": self.model.horizon_days,
            "snapshot_path": None if self.snapshot.path is None else str(self.snapshot.path),
            "snapshot_customers": len(self.snapshot.features),
        }

    def _score_batch(self, jobs: list[ScoreJob]) -> None:
        score_jobs(self.model, jobs, pd.Timestamp.now(tz="UTC"))

    def _envelope(self, results: list[dict[str, Any]]) -> Response:
        return _json(
            200,
            {
                "model": self.model_info.model_dump(),
                "horizon_days": self.model.horizon_days,
                "results": results,
            },
        )

    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /) -> ScoreResponse:
        """Score customers from the purchase histories in the request."""
        customers = request.customers
        if len(customers) > self.settings.max_customers:
            return _error(  # type: ignore[return-value]
                413,
                f"too many customers: {len(customers)} > limit {self.settings.max_customers} "
                "per request (RETAIN_MAX_CUSTOMERS); split the request",
                ("customers",),
            )
        seen: dict[tuple[str, Any], int] = {}
        for index, customer in enumerate(customers):
            key = (customer.customer_id, customer.as_of)
            if key in seen:
                return _error(  # type: ignore[return-value]
                    400,
                    f"customers[{index}]: customer_id {customer.customer_id!r} repeats "
                    f"customers[{seen[key]}] with the same as_of",
                    ("customers", index, "customer_id"),
                )
            seen[key] = index
        job = await self.batcher.submit(ScoreJob(customers, request.campaign))
        if job.error is not None:
            return _error(400, str(job.error), job.error.loc)  # type: ignore[return-value]
        return self._envelope(job.results)  # type: ignore[arg-type,return-value]

    @bentoml.api(route="/score/ids")
    async def score_ids(self, request: IdsRequest, /) -> ScoreResponse:
        """Score customers by id from the batch job's feature snapshot."""
        import anyio.to_thread

        if len(request.customer_ids) > self.settings.max_customers:
            return _error(  # type: ignore[return-value]
                413,
                f"too many customer_ids: {len(request.customer_ids)} > limit "
                f"{self.settings.max_customers} per request (RETAIN_MAX_CUSTOMERS)",
                ("customer_ids",),
            )
        await anyio.to_thread.run_sync(self._refresh_snapshot_if_changed)
        snapshot = self.snapshot
        results = await anyio.to_thread.run_sync(
            score_ids, self.model, snapshot, request.customer_ids, request.campaign
        )
        return self._envelope(results)  # type: ignore[return-value]

    def _refresh_snapshot_if_changed(self) -> None:
        """Every worker picks up a rewritten snapshot, not only the one that got the reload."""
        current = self.snapshot
        if current.path is None:
            return
        try:
            signature = snapshot_signature(current.path)
        except FileNotFoundError:
            return
        if signature != current.signature:
            self.snapshot = FeatureSnapshot.load(current.path)

    @bentoml.api(route="/admin/reload-snapshot")
    async def reload_snapshot(self) -> SnapshotInfo:
        """Re-read ``RETAIN_FEATURE_SNAPSHOT`` (the batch job wrote a new one)."""
        import anyio.to_thread

        path = self.settings.feature_snapshot
        if not path:
            return _error(  # type: ignore[return-value]
                409, "no feature snapshot configured (set RETAIN_FEATURE_SNAPSHOT)"
            )
        try:
            self.snapshot = await anyio.to_thread.run_sync(FeatureSnapshot.load, path)
        except (OSError, ValueError) as exc:
            return _error(409, f"snapshot not reloaded: {exc}")  # type: ignore[return-value]
        return _json(  # type: ignore[return-value]
            200, self.snapshot.info(self.model_info).model_dump(mode="json")
        )

    @bentoml.api(route="/noop")
    async def noop(self, request: NoopRequest, /) -> NoopResponse:
        """Validates a tiny body and answers at once: the framework's own cost."""
        return _json(  # type: ignore[return-value]
            200,
            {"model": self.model_info.model_dump(), "customers": len(request.customers)},
        )


RetainService.add_asgi_middleware(GuardMiddleware)
