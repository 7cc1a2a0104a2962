"""The ingress: an OpenAI-compatible HTTP API (FastAPI on Ray Serve) in front of the routing pipelines.

``model`` picks the router, RouteLLM-style: ``router-hybrid``, ``router-automix:0.6`` (with a threshold),
or an answer model by name to bypass routing. Every answer carries a ``routing`` object saying which
model answered and why.
"""


import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve

from routers.engines import SamplingParams
from serve_app.api import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    RouteRequest,
    RouterChoice,
    SamplingFields,
    available_models,
    completion_id,
    now,
    parse_model_field,
)
from serve_app.config import AppConfig
from serve_app.observability import RouterMetrics, log_event
from serve_app.pipelines import ModelCall, Pipelines, Routing, RouterUnavailable, with_timeout

REQUEST_ID_HEADER = "X-Request-ID"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request (OpenAI-style error body)"},
    401: {"description": "missing or wrong API key"},
    404: {"description": "unknown model or router"},
    413: {"description": "request body too large"},
    503: {"description": "models unavailable; retry after the Retry-After header"},
}
# Set by the ingress replica at start (one ingress per replica process); read by the middleware.
BODY_LIMIT = {"bytes": 1_000_000}

app = FastAPI(
    title="ray-llm-router",
    description="Routes each query to the cheapest model that will answer it well (OpenAI-compatible).",
    version="0.1.0",
)


def error_response(error: ApiError, request_id: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=error.status, content=error.body(), headers=dict(error.headers))


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc, getattr(request.state, "request_id", None))


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    param = None
    for err in exc.errors():
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        param = param or location or None
        problems.append(f"{location or 'body'}: {err.get('msg')}")
    error = ApiError(400, "invalid request: " + "; ".join(problems), param=param)
    return error_response(error, getattr(request.state, "request_id", None))


def current_request_id(request: Request) -> str:
    """Serve's id of this request: the client's ``X-Request-ID`` if it sent one, else generated.

    Serve's proxy echoes it in the ``X-Request-ID`` response header; our logs carry the same id.
    """
    from ray.serve.context import _get_serve_request_context

    served = _get_serve_request_context().request_id
    return served or request.headers.get(REQUEST_ID_HEADER, "") or uuid.uuid4().hex


@app.middleware("http")
async def _request_id_and_limits(request: Request, call_next: Any) -> Response:
    request_id = current_request_id(request)
    request.state.request_id = request_id
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > BODY_LIMIT["bytes"]):
        return error_response(ApiError(413, f"request body over {BODY_LIMIT['bytes']} bytes", code="body_too_large"), request_id)
    started = time.perf_counter()
    response = await call_next(request)
    log_event("http_request", request_id=request_id, method=request.method, path=request.url.path,
              status=response.status_code, latency_ms=round(1000 * (time.perf_counter() - started), 1))
    return response


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


@serve.deployment(name="Ingress")
@serve.ingress(app)
class RouterIngress:
    def __init__(self, config: dict[str, Any], answer: dict[str, Any], embedder: Any | None = None,
                 causal: Any | None = None, policy: Any | None = None) -> None:
        self.config = AppConfig.model_validate(config)
        BODY_LIMIT["bytes"] = self.config.limits.max_body_bytes
        self.pipelines = Pipelines(self.config, answer, embedder, causal, policy)
        self.answer = answer
        self.api_keys = self.load_api_keys()
        self.metrics = RouterMetrics()
        self.model_names = self.config.public_model_names()

    # --- config -----------------------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Swap router artifacts / thresholds (``user_config: {routers: {...}}``) without a restart."""
        if not user_config:
            return
        merged = self.config.model_dump()
        for kind, spec in (user_config.get("routers") or {}).items():
            if kind not in merged["routers"] or merged["routers"][kind] is None:
                raise ValueError(f"user_config.routers.{kind}: router not enabled in this app")
            merged["routers"][kind].update(spec)
        new_config = AppConfig.model_validate(merged).resolved()
        self.pipelines.load_routers(new_config)
        self.pipelines.config = new_config
        self.config = new_config

    def load_api_keys(self) -> list[bytes]:
        keys = list(self.config.auth.api_keys)
        if self.config.auth.api_keys_env:
            keys += [k.strip() for k in os.environ.get(self.config.auth.api_keys_env, "").split(",") if k.strip()]
        return [k.encode() for k in keys]

    def authorize(self, authorization: str | None) -> None:
        """Bearer keys, compared in constant time; no keys configured = open (local use)."""
        if not self.api_keys:
            return
        scheme, _, token = (authorization or "").partition(" ")
        supplied = token.strip().encode() if scheme.lower() == "bearer" else b""
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(supplied, key)
        if not matched:
            raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                           kind="authentication_error", code="invalid_api_key")

    # --- request translation ------------------------------------------------------------------------
    def choose(self, model: str) -> RouterChoice:
        return parse_model_field(model, self.config.enabled_routers(), self.model_names)

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
        limits = self.config.limits
        if messages > limits.max_messages:
            raise ApiError(400, f"{messages} messages is over the cap of {limits.max_messages}", param="messages")
        size = sum(len(t) for t in texts)
        if size > limits.max_prompt_chars:
            raise ApiError(400, f"prompt of {size} characters is over the cap of {limits.max_prompt_chars}",
                           param="messages", code="context_length_exceeded")

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
        try:
            routing = await self.pipelines.route(choice.kind, query, messages, params, choice.threshold)
        except RouterUnavailable as exc:
            routing = self.fallback_routing(choice.kind, str(exc))
        return routing, time.perf_counter() - started

    def fallback_routing(self, kind: str, why: str) -> Routing:
        model = self.config.fallback_model
        if model is None:
            raise ApiError(503, f"router {kind!r} is unavailable: {why}", kind="server_error",
                           code="router_unavailable", headers={"Retry-After": "5"})
        log_event("router_fallback", router=kind, reason=why, model=model)
        info = {"router": kind, "fallback": True, "use_large": model == self.config.large_model,
                "reason": f"router failed ({why}); answered by fallback model {model!r}",
                "score": None, "threshold": None, "verification_score": None, "escalated": None, "policy": None}
        return Routing(kind, model, info)

    def other_model(self, model_key: str) -> str | None:
        small, large = self.config.small_model, self.config.large_model
        return {small: large, large: small}.get(model_key)

    async def generate(self, routing: Routing, messages: list[dict[str, str]], params: SamplingParams) -> dict[str, Any]:
        """The answer: reuse AutoMix's kept answer, else call the model; on failure retry the other model once."""
        if routing.answer is not None and params.n == 1:
            return routing.answer
        tried: list[str] = []
        for model_key in [routing.model_key, self.other_model(routing.model_key)]:
            if model_key is None:
                continue
            try:
                result = await with_timeout(self.answer[model_key].generate.remote(messages, params.model_dump()),
                                            self.config.timeouts.answer_s, f"answer model {model_key}")
            except Exception as exc:
                tried.append(f"{model_key}: {type(exc).__name__}: {exc}")
                log_event("answer_model_failed", model=model_key, error=str(exc)[:500])
                continue
            if model_key != routing.model_key:
                routing.info["retried_on"] = model_key
                routing.info["reason"] += f"; {routing.model_key!r} failed, answered by {model_key!r}"
                routing.model_key = model_key
            return result
        raise ApiError(503, "answer models unavailable: " + " | ".join(tried), kind="server_error",
                       code="model_unavailable", headers={"Retry-After": "5"})

    def finish_routing(self, routing: Routing, final: ModelCall, router_latency: float) -> dict[str, Any]:
        """Fill the model, cost and cost-saved fields of the routing object; record metrics."""
        calls = [*routing.calls, final] if routing.answer is None else routing.calls
        specs = self.config.models
        cost = sum(specs[c.model_key].call_cost(c.prompt_tokens, c.completion_tokens) for c in calls)
        large_cost = specs[self.config.large_model].call_cost(final.prompt_tokens, final.completion_tokens)
        info = dict(routing.info)
        info.update({"model": specs[routing.model_key].public_name(), "model_key": routing.model_key,
                     "cost": cost, "cost_saved": large_cost - cost, "router_latency_ms": round(1000 * router_latency, 2)})
        router = routing.router if routing.router != "direct" else "direct"
        self.metrics.record(router, routing.model_key, "ok", info, router_latency)
        return info

    # --- endpoints ---------------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "routers": self.config.enabled_routers(), "models": sorted(self.config.models)}

    @app.get("/v1/models", responses=ERROR_RESPONSES)
    async def models(self, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        self.authorize(authorization)
        names = available_models(self.config.enabled_routers(), {self.config.models[k].public_name(): k for k in self.config.models})
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "llmrouter"} for n in names]}

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    async def chat_completions(self, body: ChatCompletionRequest, request: Request,
                               authorization: str | None = Header(default=None)) -> Any:
        self.authorize(authorization)
        choice = self.choose(body.model)
        params = self.sampling(body)
        messages = body.chat()
        self.check_prompt([m["content"] for m in messages], len(messages))
        routing, latency = await self.routing_for(choice, body.query(), messages, params)
        request_id = request.state.request_id
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(self.stream_chat(routing, messages, params, latency, include_usage, request_id),
                                     media_type="text/event-stream")
        result = await self.generate(routing, messages, params)
        completions = result["completions"]
        usage = self.usage(result)
        info = self.finish_routing(routing, ModelCall(routing.model_key, usage["prompt_tokens"], usage["completion_tokens"], "final"), latency)
        return {
            "id": completion_id(), "object": "chat.completion", "created": now(), "model": info["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": c["text"]},
                         "finish_reason": c["finish_reason"], "logprobs": None} for i, c in enumerate(completions)],
            "usage": usage, "routing": info,
        }

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(self, body: CompletionRequest, request: Request,
                          authorization: str | None = Header(default=None)) -> Any:
        """Text completions; the prompt is sent to the chosen model as one user turn."""
        self.authorize(authorization)
        if body.echo:
            raise ApiError(400, "echo is not supported", param="echo")
        choice = self.choose(body.model)
        params = self.sampling(body)
        self.check_prompt([body.text()])
        messages = [{"role": "user", "content": body.text()}]
        routing, latency = await self.routing_for(choice, body.text(), messages, params)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                self.stream_chat(routing, messages, params, latency, include_usage, request.state.request_id, text=True),
                media_type="text/event-stream")
        result = await self.generate(routing, messages, params)
        usage = self.usage(result)
        info = self.finish_routing(routing, ModelCall(routing.model_key, usage["prompt_tokens"], usage["completion_tokens"], "final"), latency)
        return {
            "id": completion_id("cmpl"), "object": "text_completion", "created": now(), "model": info["model"],
            "choices": [{"index": i, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None}
                        for i, c in enumerate(result["completions"])],
            "usage": usage, "routing": info,
        }

    @app.post("/v1/route", responses=ERROR_RESPONSES)
    async def route(self, body: RouteRequest, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """Route-only: the decision for one query or a batch, no answer generated."""
        self.authorize(authorization)
        choice = self.choose(body.model)
        if choice.kind == "direct":
            raise ApiError(400, "route-only needs a router model such as 'router-hybrid'", param="model")
        texts = body.texts()
        if len(texts) > self.config.limits.max_batch_route:
            raise ApiError(400, f"{len(texts)} queries is over the cap of {self.config.limits.max_batch_route}", param="queries")
        self.check_prompt(texts)
        try:
            decisions = await self.pipelines.route_only(choice.kind, texts, choice.threshold)
        except RouterUnavailable as exc:
            raise ApiError(503, f"router {choice.kind!r} unavailable: {exc}", kind="server_error",
                           code="router_unavailable", headers={"Retry-After": "5"}) from exc
        return {"object": "route", "router": choice.kind, "data": decisions}

    @app.get("/chat", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page(self) -> HTMLResponse:
        page = resources.files("serve_app").joinpath("static/chat.html").read_text()
        return HTMLResponse(page)

    # --- helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def usage(result: dict[str, Any]) -> dict[str, int]:
        completion_tokens = sum(c["completion_tokens"] for c in result["completions"])
        prompt_tokens = int(result["prompt_tokens"])
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    async def stream_chat(self, routing: Routing, messages: list[dict[str, str]], params: SamplingParams,
                          latency: float, include_usage: bool, request_id: str, text: bool = False) -> AsyncIterator[str]:
        """SSE chunks: the first carries the routing object, then token deltas, then finish (and usage)."""
        cid = completion_id("cmpl" if text else "chatcmpl")
        created = now()
        obj = "text_completion" if text else "chat.completion.chunk"
        served = self.config.models[routing.model_key].public_name()

        def chunk(delta: str | None, finish: str | None = None, first: bool = False) -> dict[str, Any]:
            if text:
                choice: dict[str, Any] = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
            else:
                d: dict[str, Any] = {}
                if first:
                    d["role"] = "assistant"
                if delta is not None:
                    d["content"] = delta
                choice = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
            return {"id": cid, "object": obj, "created": created, "model": served, "choices": [choice]}

        pieces: list[str] = []
        try:
            if routing.answer is not None:
                stream_source = None
                pieces.append(routing.answer["completions"][0]["text"])
            else:
                handle = self.answer[routing.model_key]
                stream_source = handle.options(stream=True).stream.remote(messages, params.model_dump())
            head = chunk("", first=True)
            head["routing"] = {**routing.info, "model": served, "model_key": routing.model_key,
                               "router_latency_ms": round(1000 * latency, 2)}
            yield sse(head)
            if stream_source is None:
                yield sse(chunk(pieces[0]))
            else:
                async for delta in stream_source:
                    pieces.append(delta)
                    yield sse(chunk(delta))
            counted = await self.answer[routing.model_key].usage.remote(messages, "".join(pieces))
            finish = "length" if counted["completion_tokens"] >= params.max_tokens else "stop"
            yield sse(chunk(None, finish=finish))
            info = self.finish_routing(routing, ModelCall(routing.model_key, counted["prompt_tokens"], counted["completion_tokens"], "final"), latency)
            if include_usage:
                yield sse({"id": cid, "object": obj, "created": created, "model": served, "choices": [],
                           "usage": {**counted, "total_tokens": counted["prompt_tokens"] + counted["completion_tokens"]},
                           "routing": info})
        except Exception as exc:  # a stream cannot change its status code once started: report in-band
            log_event("stream_failed", request_id=request_id, model=routing.model_key, error=str(exc)[:500])
            self.metrics.requests.inc(tags={"router": routing.router, "model": routing.model_key, "status": "error"})
            yield sse({"error": {"message": f"answer model {routing.model_key!r} failed mid-stream: {type(exc).__name__}",
                                 "type": "server_error", "param": None, "code": "model_unavailable"}})
        yield sse("[DONE]")
