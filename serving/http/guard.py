"""The ASGI guard in front of every request: API key, content type, body size and time.

Size limits, content types and the API key are checked before BentoML reads the body, so
an oversized or pickled body is refused without being parsed, and a body that does not
arrive within ``RETAIN_BODY_TIMEOUT_SECONDS`` gets 408 and a closed connection instead of
holding the worker. ``/readyz`` is answered here too, from the service instance BentoML
reports through :func:`bentoml.get_current_service`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import bentoml

from serving.http.responses import CLOSE_CONNECTION, JSON_MEDIA_TYPE, send_json
from serving.http.settings import ServiceSettings, SettingsError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

PICKLE_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        "application/python-pickle",
        "application/x-python-pickle",
        "application/pickle",
        "application/x-pickle",
        "application/vnd.bentoml+pickle",
    }
)
PICKLE_MAGIC = 0x80

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _current_service() -> Any:
    """This worker's service instance; None before BentoML has made it."""
    from bentoml.exceptions import BentoMLException

    try:
        return bentoml.get_current_service()
    except BentoMLException:
        return None


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

    def __init__(self, app: ASGIApp) -> None:
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
                await send_json(send, status, {"error": message}, extra)
                return
        failure = self._failure()
        if failure is not None:
            message = f"service not ready: {failure}"
            await send_json(send, 503, {"error": message}, CLOSE_CONNECTION)
            return
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media != JSON_MEDIA_TYPE:
            what = (
                "pickle is never accepted"
                if media in PICKLE_MEDIA_TYPES
                else (f"only {JSON_MEDIA_TYPE} is accepted")
            )
            await send_json(
                send, 415, {"error": f"unsupported content type {media or '(none)'!r}: {what}"}
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body
            except ValueError:
                await send_json(send, 400, {"error": "Content-Length is not an integer"})
                return
            if too_big:
                await self._too_big(send)
                return
        try:
            async with asyncio.timeout(self.body_timeout):  # one timer, not a task per chunk
                body = await self._read_body(receive)
        except TimeoutError:
            message = f"request body not received within {self.body_timeout:g} s"
            await send_json(send, 408, {"error": message}, CLOSE_CONNECTION)
            return
        if body is None:  # the client went away
            return
        if len(body) > self.max_body:
            await self._too_big(send)
            return
        if body[:1] == bytes([PICKLE_MAGIC]):
            await send_json(send, 415, {"error": "body looks like a pickle; never accepted"})
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
        message = f"request body exceeds the limit of {self.max_body} bytes"
        await send_json(send, 413, {"error": message}, CLOSE_CONNECTION)

    def _failure(self) -> str | None:
        """Why the service cannot answer (bad settings, model or snapshot), else None."""
        if self.failure is not None:
            return self.failure
        return getattr(_current_service(), "failure", None)

    async def _readyz(self, send: Send) -> None:
        failure = self._failure()
        instance = _current_service()
        info = instance.readiness() if instance is not None and failure is None else None
        if info is None:
            reason = failure or "still starting"
            await send_json(send, 503, {"status": "not ready", "reason": reason})
        else:
            await send_json(send, 200, {"status": "ready", **info})
