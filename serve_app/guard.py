"""The ASGI guard in front of every route, which runs before FastAPI reads the body, in this order: the request
id, the API key (``/v1/*``), the body-size cap, then the route. It also writes the access log line, counts
error responses, and is the catch-all that turns an unexpected exception into an OpenAI-style 500 carrying the
request id; the traceback goes to the replica log only. What it enforces is this replica's ``GUARD``."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from routers.errors import ConfigError
from serve_app.api import ApiError
from serve_app.config import ANONYMOUS_KEY, AuthSettings
from serve_app.errors import PROTECTED_PREFIX, error_response
from serve_app.observability import RouterMetrics, log_event

REQUEST_ID_HEADER = "X-Request-ID"
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
logger = logging.getLogger("ray.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- what the guard enforces (set by the replica; one ingress per replica process) -----------------------
@dataclass
class GuardSettings:
    api_keys: list[bytes] = field(default_factory=list)
    max_body_bytes: int = 1_000_000
    metrics: RouterMetrics | None = None
    #: the non-secret id of each of ``api_keys`` (same order); missing ones are ``key_id_of`` the key
    key_ids: list[str] = field(default_factory=list)

    def authorized(self, authorization: str | None) -> bool:
        """Bearer keys, compared in constant time against every key; no keys configured = open (local use)."""
        return self.identify(authorization)[0]

    def identify(self, authorization: str | None) -> tuple[bool, str | None]:
        """Whether the caller is authorized and the id of the key it sent (``anonymous`` on an open server)."""
        if not self.api_keys:
            return True, ANONYMOUS_KEY
        scheme, _, token = (authorization or "").partition(" ")
        supplied = token.strip().encode() if scheme.lower() == "bearer" else b""
        matched = False
        which = -1
        for index, key in enumerate(self.api_keys):  # no early exit: the time says nothing about which nearly matched
            hit = hmac.compare_digest(supplied, key)
            matched |= hit
            which = index if hit else which
        if not matched:
            return False, None
        ids = self.key_ids
        return True, ids[which] if which < len(ids) else key_id_of(self.api_keys[which])


GUARD = GuardSettings()


def configure_guard(api_keys: list[bytes], max_body_bytes: int, metrics: RouterMetrics,
                    key_ids: list[str] | None = None) -> None:
    """Set this replica's guard. A module-level function on purpose: Serve pickles the ingress class by
    value, so a direct ``GUARD.x = ...`` in its methods would change a pickled copy, not this module's."""
    GUARD.api_keys = api_keys
    GUARD.max_body_bytes = max_body_bytes
    GUARD.metrics = metrics
    GUARD.key_ids = list(key_ids or [])


def key_id_of(secret: bytes) -> str:
    """The non-secret id of an unnamed key, for metrics, logs and budgets: 32 bits of its sha256."""
    return f"key-{hashlib.sha256(secret).hexdigest()[:8]}"


def load_api_keys(auth: AuthSettings) -> list[bytes]:
    keys = list(auth.api_keys)
    if auth.api_keys_env:
        keys += [k.strip() for k in os.environ.get(auth.api_keys_env, "").split(",") if k.strip()]
    return [k.encode() for k in keys]


def load_named_keys(auth: AuthSettings) -> tuple[list[bytes], list[str]]:
    """Every key (``api_keys``, ``api_keys_env``, then ``keys``) and its id: its name, else ``key_id_of``.

    A named key's env var that is unset or empty is a ConfigError (a key silently missing would lock its
    team out); so is one secret under two names (which name would its spend count under?)."""
    keys: dict[bytes, str] = {}
    for name, spec in auth.keys.items():
        secret = spec.key if spec.key is not None else os.environ.get(spec.key_env or "", "").strip()
        if not secret:
            raise ConfigError(f"auth.keys.{name}: env var {spec.key_env!r} is unset or empty")
        if secret.encode() in keys:
            raise ConfigError(f"auth.keys.{name}: the same key as auth.keys.{keys[secret.encode()]}")
        keys[secret.encode()] = name
    unnamed = [k for k in load_api_keys(auth) if k not in keys]
    ordered = list(dict.fromkeys(unnamed)) + list(keys)
    return ordered, [keys.get(k) or key_id_of(k) for k in ordered]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def request_id_of(scope: Scope) -> str:
    """Serve's id of this request: the client's ``X-Request-ID`` if it sent one, else generated.

    Serve's proxy echoes it in the ``X-Request-ID`` response header; our logs carry the same id.
    """
    try:
        from ray.serve.context import _get_serve_request_context

        served = _get_serve_request_context().request_id
    except Exception:  # noqa: BLE001 - outside a replica (unit tests) there is no Serve context
        served = ""
    return served or header(scope, REQUEST_ID_HEADER.lower().encode()) or uuid.uuid4().hex


# --- reading the body under the cap ---------------------------------------------------------------------
class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def read_capped_body(receive: Receive, limit: int) -> bytes:
    """The whole body, counting the bytes that actually arrive (chunked uploads carry no Content-Length)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the already-read body, then defers to the real one (disconnects)."""
    pending = True

    async def receive_again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


# --- the middleware -----------------------------------------------------------------------------------------
class IngressGuard:
    """Pure ASGI middleware in front of every route; it runs before FastAPI reads or validates the body, so
    an unauthenticated caller gets 401 and never schema details, and an oversized body is cut off while it
    streams in. It also writes the access log line, counts error responses, and is the catch-all that turns
    an unexpected exception into an OpenAI-style 500 (no traceback in the response)."""

    def __init__(self, app: ASGIApp, settings: GuardSettings | None = None) -> None:
        self.app = app
        self.own_settings = settings

    @property
    def settings(self) -> GuardSettings:
        return self.own_settings if self.own_settings is not None else GUARD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 0}

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.guarded(scope, receive, tracked_send)
        except ClientGone:
            pass
        except Exception as exc:  # the catch-all: whatever it is, answer a clean 500
            log_event("unhandled_error", request_id=request_id, path=scope.get("path"),
                      error=f"{type(exc).__name__}: {exc}"[:500])
            logger.error("unhandled error in request %s", request_id, exc_info=exc)
            if status["code"]:
                raise  # the response has started: only the server can end it (it drops the connection)
            error = ApiError(500, f"internal server error (request id {request_id})", kind="server_error",
                             code="internal_error")
            await error_response(error)(scope, receive, tracked_send)
        finally:
            self.account(scope, request_id, status["code"], started)

    async def guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith(PROTECTED_PREFIX):
            authorized, key_id = self.settings.identify(header(scope, b"authorization"))
            if not authorized:
                error = ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                                 kind="authentication_error", code="invalid_api_key")
                await error_response(error)(scope, receive, send)
                return
            scope["state"]["key_id"] = key_id  # the key's name or id, never the secret (budgets, metrics)
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        too_large = ApiError(413, f"request body over {limit} bytes", code="body_too_large")
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            error = too_large if length.isdigit() else ApiError(400, "invalid Content-Length header")
            await error_response(error)(scope, receive, send)
            return
        try:
            body = await read_capped_body(receive, limit)
        except BodyTooLarge:
            await error_response(too_large)(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)

    def account(self, scope: Scope, request_id: str, status: int, started: float) -> None:
        path = scope.get("path", "")
        log_event("http_request", request_id=request_id, method=scope.get("method"), path=path,
                  status=status or "disconnected", latency_ms=round(1000 * (time.perf_counter() - started), 1))
        if self.settings.metrics is not None and path.startswith(PROTECTED_PREFIX) and status >= 400:
            state = scope.get("state") or {}
            self.settings.metrics.record_error(state.get("router"), state.get("model"), status)
