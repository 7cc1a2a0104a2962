"""The ingress: an OpenAI-compatible HTTP API (FastAPI on Ray Serve) in front of the routing pipelines.

``model`` picks the router, RouteLLM-style: ``router-hybrid``, ``router-automix:0.6`` (with a threshold),
``router-hybrid:share=0.3`` (the threshold that sends 30% of queries to the large model, from the router's
reference score distribution), or an answer model by name to bypass routing (see ``serve_app.api``).
Every answer carries a ``routing`` object saying which model answered and why.

Request handling order (``IngressGuard``, before FastAPI reads the body): request id, API key (``/v1/*``),
body size cap, then the route. Unexpected exceptions become an OpenAI-style 500 with the request id, and
the traceback goes to the replica log only.

Hot swap: the Ingress ``user_config`` is ``{routers: {hybrid: {artifact, threshold}, automix: {artifact,
threshold}, causal: {threshold}}}`` (every embedding router, ``knn`` / ``mf`` / ``sw_ranking``, takes what
``hybrid`` takes), merged onto the config the app was started with, so dropping a key
reverts it (deploy ``user_config: {}`` to drop them all: Serve does not call ``reconfigure`` when
``user_config`` is removed). Router-model artifacts and the policy map belong to the ``user_config`` of the
``CausalLMRouter`` / ``PolicyRouter`` deployments; the ingress rejects them rather than ignore them.
"""

# No ``from __future__ import annotations`` here: Serve rebuilds the route methods into FastAPI endpoints and
# FastAPI must see their real parameter types, not strings.
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from routers.engines import SamplingParams
from serve_app.answer_clients import answer_client
from serve_app.api import (
    ApiError,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    Health,
    ModelList,
    RouterChoice,
    RouteRequest,
    RouteResponse,
    SamplingFields,
    available_models,
    completion_id,
    now,
    parse_model_field,
)
from serve_app.config import EMBEDDING_ROUTER_KINDS, ROUTER_DEPLOYMENTS, AppConfig, AuthSettings
from serve_app.observability import RouterMetrics, log_event
from serve_app.pipelines import (
    Answers,
    ModelCall,
    OpenStream,
    Pipelines,
    RouterUnavailable,
    Routing,
    router_unavailable,
)

REQUEST_ID_HEADER = "X-Request-ID"
PROTECTED_PREFIX = "/v1/"
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
logger = logging.getLogger("ray.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


SERVER_ERROR: dict[int | str, dict[str, Any]] = {500: _error_doc("unexpected server error (no details leaked)")}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_doc("invalid request (OpenAI-style error body naming the field)"),
    401: _error_doc("missing or wrong API key"),
    404: _error_doc("unknown model or router"),
    413: _error_doc("request body too large"),
    **SERVER_ERROR,
    503: _error_doc("models unavailable; retry after the Retry-After header"),
}
# Generation endpoints answer JSON, or Server-Sent Events when the request says ``stream: true``.
STREAMING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the completion (JSON), or SSE chunks when stream is true",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **ERROR_RESPONSES,
}


# --- what the guard enforces (set by the replica; one ingress per replica process) -----------------------
@dataclass
class GuardSettings:
    api_keys: list[bytes] = field(default_factory=list)
    max_body_bytes: int = 1_000_000
    metrics: RouterMetrics | None = None

    def authorized(self, authorization: str | None) -> bool:
        """Bearer keys, compared in constant time against every key; no keys configured = open (local use)."""
        if not self.api_keys:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        supplied = token.strip().encode() if scheme.lower() == "bearer" else b""
        matched = False
        for key in self.api_keys:  # no early exit: the time taken says nothing about which key nearly matched
            matched |= hmac.compare_digest(supplied, key)
        return matched


GUARD = GuardSettings()


def configure_guard(api_keys: list[bytes], max_body_bytes: int, metrics: RouterMetrics) -> None:
    """Set this replica's guard. A module-level function on purpose: Serve pickles the ingress class by
    value, so a direct ``GUARD.x = ...`` in its methods would change a pickled copy, not this module's."""
    GUARD.api_keys = api_keys
    GUARD.max_body_bytes = max_body_bytes
    GUARD.metrics = metrics


def load_api_keys(auth: AuthSettings) -> list[bytes]:
    keys = list(auth.api_keys)
    if auth.api_keys_env:
        keys += [k.strip() for k in os.environ.get(auth.api_keys_env, "").split(",") if k.strip()]
    return [k.encode() for k in keys]


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content=error.body(), headers=dict(error.headers))


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
        if scope["path"].startswith(PROTECTED_PREFIX) and not self.settings.authorized(header(scope, b"authorization")):
            error = ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                             kind="authentication_error", code="invalid_api_key")
            await error_response(error)(scope, receive, send)
            return
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


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    param = None
    for err in exc.errors():
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        param = param or location or None
        problems.append(f"{location or 'body'}: {err.get('msg')}")
    return error_response(ApiError(400, "invalid request: " + "; ".join(problems), param=param))


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = "not_found" if exc.status_code == 404 else None
    return error_response(ApiError(exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {})))


def install_error_handlers(target: FastAPI) -> None:
    """OpenAI-style bodies for every error FastAPI/Starlette would otherwise answer in their own shape.

    Module-level handlers: Serve pickles the app into each replica, and these then pickle by reference.
    """
    target.add_exception_handler(ApiError, handle_api_error)
    target.add_exception_handler(RequestValidationError, handle_validation_error)
    target.add_exception_handler(StarletteHTTPException, handle_http_error)


def openapi_schema(target: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, corrected: validation errors are 400s here (never 422), and /v1 takes a bearer key."""
    if target.openapi_schema is None:
        schema = get_openapi(title=target.title, version=target.version, description=target.description,
                             routes=target.routes)
        for path, item in schema.get("paths", {}).items():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
                if path.startswith(PROTECTED_PREFIX):
                    operation["security"] = [{"bearer": []}]
        components = schema.setdefault("components", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(unused, None)
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        target.openapi_schema = schema
    return target.openapi_schema


class RouterAPI(FastAPI):
    """FastAPI with the corrected schema (a subclass, so it survives Serve pickling the app)."""

    def openapi(self) -> dict[str, Any]:
        return openapi_schema(self)


app = RouterAPI(
    title="ray-llm-router",
    description="Routes each query to the cheapest model that will answer it well (OpenAI-compatible).",
    version="0.1.0",
)
install_error_handlers(app)
# No settings object here: Serve pickles the app, so the guard reads the replica's module-level GUARD.
app.add_middleware(IngressGuard)


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


def replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - not running inside a replica
        return None


def remember(request: Request, **fields: str) -> None:
    """Note the router / model on the request, so the guard can tag error metrics with them."""
    for key, value in fields.items():
        setattr(request.state, key, value)


# --- hot swap: what the Ingress user_config may hold -------------------------------------------------------
# Routers that score in the ingress (the embedding routers, AutoMix) swap their artifacts here too.
INGRESS_ROUTER_KEYS = {**{kind: {"artifact", "threshold"} for kind in EMBEDDING_ROUTER_KINDS},
                       "automix": {"artifact", "threshold"}, "causal": {"threshold"}, "policy": set(),
                       "bert": {"threshold"}}


def check_ingress_user_config(user_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``routers`` overrides, after rejecting anything the ingress cannot apply (never ignore it)."""
    if not isinstance(user_config, dict):
        raise TypeError(f"Ingress user_config must be a mapping, got {type(user_config).__name__}")
    unknown = sorted(set(user_config) - {"routers"})
    if unknown:
        raise ValueError(f"Ingress user_config: unknown key(s) {unknown}; it takes only 'routers'")
    routers = user_config.get("routers") or {}
    if not isinstance(routers, dict):
        raise TypeError("Ingress user_config.routers must be a mapping of router kind -> overrides")
    for kind, spec in routers.items():
        if kind not in INGRESS_ROUTER_KEYS:
            raise ValueError(f"Ingress user_config.routers.{kind}: unknown router; known: {sorted(INGRESS_ROUTER_KEYS)}")
        if not isinstance(spec, dict):
            raise TypeError(f"Ingress user_config.routers.{kind} must be a mapping")
        rejected = sorted(set(spec) - INGRESS_ROUTER_KEYS[kind])
        if kind == "policy" and "threshold" in rejected:
            raise ValueError("Ingress user_config.routers.policy.threshold: the policy router takes no threshold "
                             "(it decides by policy label and policy map)")
        if rejected and kind in ROUTER_DEPLOYMENTS:
            raise ValueError(f"Ingress user_config.routers.{kind}: {rejected} cannot be applied by the ingress; set "
                             f"them in the user_config of the {ROUTER_DEPLOYMENTS[kind]} deployment")
        if rejected:
            raise ValueError(f"Ingress user_config.routers.{kind}: unknown key(s) {rejected}; "
                             f"allowed: {sorted(INGRESS_ROUTER_KEYS[kind])}")
    return routers


def merged_config(base: AppConfig, user_config: dict[str, Any]) -> AppConfig:
    """``base`` (the config the app started with) with the user_config overrides on top, paths resolved."""
    merged = base.model_dump()
    for kind, spec in check_ingress_user_config(user_config).items():
        if merged["routers"].get(kind) is None:
            raise ValueError(f"Ingress user_config.routers.{kind}: router not enabled in this app")
        merged["routers"][kind].update(spec)
    return AppConfig.model_validate(merged).resolved()


def make_chunk(meta: dict[str, Any], delta: str | None, finish: str | None = None, first: bool = False) -> dict[str, Any]:
    """One SSE chunk, chat (``delta``) or text-completion (``text``) shaped."""
    if meta["text"]:
        choice: dict[str, Any] = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
    else:
        d: dict[str, Any] = {"role": "assistant"} if first else {}
        if delta is not None:
            d["content"] = delta
        choice = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
    return {"id": meta["id"], "object": meta["object"], "created": meta["created"], "model": meta["model"],
            "choices": [choice]}


@serve.deployment(name="Ingress")
@serve.ingress(app)
class RouterIngress:
    def __init__(self, config: dict[str, Any], answer: dict[str, Any], embedder: Any | None = None,
                 causal: Any | None = None, policy: Any | None = None, bert: Any | None = None) -> None:
        # The config the app was started with; user_config overrides always merge onto this one.
        self.base_config = AppConfig.model_validate(config)
        self.config = self.base_config
        # vLLM answer models are Ray Serve LLM servers, the others our AnswerModel deployment: one interface.
        clients = {key: answer_client(self.config.models[key], handle) for key, handle in answer.items()}
        self.pipelines = Pipelines(self.config, clients, embedder, causal, policy, bert)
        self.answers = Answers(self.config, clients)
        self.metrics = RouterMetrics()
        self.model_names = self.config.public_model_names()
        configure_guard(load_api_keys(self.config.auth), self.config.limits.max_body_bytes, self.metrics)

    # --- config -----------------------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Swap router artifacts / thresholds without a restart (see the module docstring)."""
        new_config = merged_config(self.base_config, user_config or {})
        self.pipelines.load_routers(new_config)  # loads everything before swapping anything
        self.answers.config = new_config
        self.config = new_config
        log_event("ingress_reconfigured", overrides=(user_config or {}).get("routers") or {})

    # --- request translation ------------------------------------------------------------------------
    def choose(self, model: str, request: Request) -> RouterChoice:
        choice = parse_model_field(model, self.config.enabled_routers(), self.model_names, self.config.default_router)
        remember(request, router=choice.kind if choice.kind != "direct" else "direct")
        return choice

    def sampling(self, req: SamplingFields) -> SamplingParams:
        limits = self.config.limits
        max_tokens = req.requested_max_tokens() or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's cap of {limits.max_tokens}",
                           param="max_tokens")
        if req.n > limits.max_n:
            raise ApiError(400, f"n {req.n} is over this server's cap of {limits.max_n}", param="n")
        if req.stream and req.n > 1:
            raise ApiError(400, "streaming supports n=1 only", param="n")
        return SamplingParams(n=req.n, temperature=req.temperature, top_p=req.top_p, max_tokens=max_tokens,
                              stop=req.stop_list(), seed=req.seed)

    def check_prompt(self, texts: list[str], messages: int = 1) -> None:
        """One prompt: its parts together (they are sent as one) within the character cap."""
        limits = self.config.limits
        if messages > limits.max_messages:
            raise ApiError(400, f"{messages} messages is over the cap of {limits.max_messages}", param="messages")
        size = sum(len(t) for t in texts)
        if size > limits.max_prompt_chars:
            raise ApiError(400, f"prompt of {size} characters is over the cap of {limits.max_prompt_chars}",
                           param="messages", code="context_length_exceeded")

    def check_queries(self, texts: list[str], batched: bool) -> None:
        """Route-only: each query is routed on its own, so each one (not their total) is capped."""
        cap = self.config.limits.max_prompt_chars
        for index, text in enumerate(texts):
            if len(text) > cap:
                where = f"queries.{index}" if batched else "query"
                raise ApiError(400, f"{where} has {len(text)} characters, over the cap of {cap}", param=where,
                               code="context_length_exceeded")

    # --- routing with fallback -------------------------------------------------------------------------
    async def routing_for(self, choice: RouterChoice, query: str, messages: list[dict[str, str]],
                          params: SamplingParams) -> tuple[Routing, float]:
        started = time.perf_counter()
        if choice.kind == "direct":
            assert choice.direct_model is not None
            info = {"router": None, "reason": "model requested by name; no routing", "fallback": False,
                    "use_large": choice.direct_model == self.config.large_model}
            return Routing("direct", choice.direct_model, info), 0.0
        if choice.kind == "automix" and params.n > 1:
            raise ApiError(400, "router-automix answers with n=1 (it verifies one small-model answer)", param="n")
        threshold = await self.pipelines.resolve_threshold(choice)
        try:
            routing = await self.pipelines.route(choice.kind, query, messages, params, threshold.value)
        except RouterUnavailable as exc:
            routing = self.fallback_routing(choice.kind, str(exc))
        if not routing.info.get("fallback"):
            routing.info.update(threshold.info)
        return routing, time.perf_counter() - started

    def fallback_routing(self, kind: str, why: str) -> Routing:
        model = self.config.fallback_model
        if model is None:
            raise router_unavailable(kind, why)
        log_event("router_fallback", router=kind, reason=why, model=model)
        info = {"router": kind, "fallback": True, "use_large": model == self.config.large_model,
                "reason": f"router failed ({why}); answered by fallback model {model!r}",
                "score": None, "threshold": None, "verification_score": None, "escalated": None, "policy": None}
        return Routing(kind, model, info)

    def finish_routing(self, routing: Routing, final: ModelCall, router_latency: float) -> dict[str, Any]:
        """Fill the model, cost and cost-saved fields of the routing object; record metrics."""
        calls = [*routing.calls, final] if routing.answer is None else routing.calls
        specs = self.config.models
        cost = sum(specs[c.model_key].call_cost(c.prompt_tokens, c.completion_tokens) for c in calls)
        large_cost = specs[self.config.large_model].call_cost(final.prompt_tokens, final.completion_tokens)
        info = dict(routing.info)
        info.update({"model": specs[routing.model_key].public_name(), "model_key": routing.model_key,
                     "cost": cost, "cost_saved": large_cost - cost, "router_latency_ms": round(1000 * router_latency, 2)})
        self.metrics.record(routing.router, routing.model_key, info, router_latency)
        return info

    # --- endpoints ---------------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, responses=SERVER_ERROR)
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "routers": self.config.enabled_routers(), "models": sorted(self.config.models),
                "replica": replica_id()}

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
    async def models(self) -> dict[str, Any]:
        names = available_models(self.config.enabled_routers(), {self.config.models[k].public_name(): k for k in self.config.models},
                                 self.config.default_router)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "llmrouter"} for n in names]}

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=STREAMING_RESPONSES)
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        choice = self.choose(body.model, request)
        params = self.sampling(body)
        messages = body.chat()
        self.check_prompt([m["content"] for m in messages], len(messages))
        routing, latency = await self.routing_for(choice, body.query(), messages, params)
        remember(request, model=routing.model_key)
        if body.stream:
            return await self.streaming_response(routing, messages, params, latency, body, request, text=False)
        result, usage, info = await self.answer(routing, messages, params, latency, request)
        return {
            "id": completion_id(), "object": "chat.completion", "created": now(), "model": info["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": c["text"]},
                         "finish_reason": c["finish_reason"], "logprobs": None} for i, c in enumerate(result["completions"])],
            "usage": usage, "routing": info,
        }

    @app.post("/v1/completions", response_model=CompletionResponse, responses=STREAMING_RESPONSES)
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        """Text completions; the prompt is sent to the chosen model as one user turn."""
        if body.echo:
            raise ApiError(400, "echo is not supported", param="echo")
        choice = self.choose(body.model, request)
        params = self.sampling(body)
        self.check_prompt([body.text()])
        messages = [{"role": "user", "content": body.text()}]
        routing, latency = await self.routing_for(choice, body.text(), messages, params)
        remember(request, model=routing.model_key)
        if body.stream:
            return await self.streaming_response(routing, messages, params, latency, body, request, text=True)
        result, usage, info = await self.answer(routing, messages, params, latency, request)
        return {
            "id": completion_id("cmpl"), "object": "text_completion", "created": now(), "model": info["model"],
            "choices": [{"index": i, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None}
                        for i, c in enumerate(result["completions"])],
            "usage": usage, "routing": info,
        }

    @app.post("/v1/route", response_model=RouteResponse, responses=ERROR_RESPONSES)
    async def route(self, body: RouteRequest, request: Request) -> dict[str, Any]:
        """Route-only: the decision for one query or a batch, no answer generated."""
        choice = self.choose(body.model, request)
        if choice.kind == "direct":
            raise ApiError(400, "route-only needs a router model such as 'router-hybrid'", param="model")
        texts = body.texts()
        if len(texts) > self.config.limits.max_batch_route:
            raise ApiError(400, f"{len(texts)} queries is over the cap of {self.config.limits.max_batch_route}", param="queries")
        self.check_queries(texts, batched=body.queries is not None)
        threshold = await self.pipelines.resolve_threshold(choice)
        try:
            decisions = await self.pipelines.route_only(choice.kind, texts, threshold.value)
        except RouterUnavailable as exc:
            raise router_unavailable(choice.kind, str(exc)) from exc
        for decision in decisions:
            decision.update(threshold.info)
        return {"object": "route", "router": choice.kind, "data": decisions}

    @app.get("/chat", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page(self) -> HTMLResponse:
        page = resources.files("serve_app").joinpath("static/chat.html").read_text()
        return HTMLResponse(page)

    # --- helpers ----------------------------------------------------------------------------------------
    async def answer(self, routing: Routing, messages: list[dict[str, str]], params: SamplingParams, latency: float,
                     request: Request) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
        """A non-streamed answer: the model's result, its usage and the finished routing object."""
        result = await self.answers.generate(routing, messages, params)
        remember(request, model=routing.model_key)  # a retry may have moved it
        usage = self.usage(result)
        final = ModelCall(routing.model_key, usage["prompt_tokens"], usage["completion_tokens"], "final")
        return result, usage, self.finish_routing(routing, final, latency)

    @staticmethod
    def usage(result: dict[str, Any]) -> dict[str, int]:
        completion_tokens = sum(c["completion_tokens"] for c in result["completions"])
        prompt_tokens = int(result["prompt_tokens"])
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    async def streaming_response(self, routing: Routing, messages: list[dict[str, str]], params: SamplingParams,
                                 latency: float, body: SamplingFields, request: Request, text: bool) -> StreamingResponse:
        """Wait for the model's first token before committing to a 200 stream: a model that is down gets the
        same retry / 503 as a plain request."""
        opened = await self.answers.open_stream(routing, messages, params)
        remember(request, model=routing.model_key)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = self.stream_chunks(routing, opened, messages, params, latency, include_usage,
                                    request.state.request_id, text)
        return StreamingResponse(chunks, media_type="text/event-stream")

    async def stream_chunks(self, routing: Routing, opened: OpenStream, messages: list[dict[str, str]],
                            params: SamplingParams, latency: float, include_usage: bool, request_id: str,
                            text: bool = False) -> AsyncIterator[str]:
        """SSE chunks: the first carries the routing object, then token deltas, then finish (and usage)."""
        served = self.config.models[routing.model_key].public_name()
        meta = {"id": completion_id("cmpl" if text else "chatcmpl"), "created": now(), "model": served, "text": text,
                "object": "text_completion" if text else "chat.completion.chunk"}
        head = make_chunk(meta, "", first=True)
        head["routing"] = {**routing.info, "model": served, "model_key": routing.model_key,
                           "router_latency_ms": round(1000 * latency, 2)}
        yield sse(head)
        pieces: list[str] = []
        try:
            async for delta in self.answers.deltas(opened):
                pieces.append(delta)
                yield sse(make_chunk(meta, delta))
            counted = await self.answers.usage(opened, messages, "".join(pieces))
            finish = "length" if counted["completion_tokens"] >= params.max_tokens else "stop"
            yield sse(make_chunk(meta, None, finish=finish))
            info = self.finish_routing(routing, ModelCall(routing.model_key, counted["prompt_tokens"], counted["completion_tokens"], "final"), latency)
            if include_usage:
                usage = {**counted, "total_tokens": counted["prompt_tokens"] + counted["completion_tokens"]}
                yield sse({**{k: meta[k] for k in ("id", "object", "created", "model")}, "choices": [],
                           "usage": usage, "routing": info})
        except Exception as exc:  # noqa: BLE001 - a started stream cannot change its status: report in-band
            log_event("stream_failed", request_id=request_id, model=routing.model_key,
                      error=f"{type(exc).__name__}: {exc}"[:500])
            self.metrics.record_error(routing.router, routing.model_key, "stream_error")
            yield sse({"error": {"message": f"answer model {routing.model_key!r} failed mid-stream: {type(exc).__name__}",
                                 "type": "server_error", "param": None, "code": "model_unavailable"}})
        yield sse("[DONE]")
