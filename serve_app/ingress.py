"""The ingress: an OpenAI-compatible HTTP API (FastAPI on Ray Serve) in front of the routing pipelines.

``model`` picks the router, RouteLLM-style: ``router-hybrid``, ``router-automix:0.6`` (with a threshold),
``router-hybrid:share=0.3`` (the threshold that sends 30% of queries to the large model, from the router's
reference score distribution), an N-model router with a selection rule (``router-<name>:cost=0.5``, among
all the models its ``model_map`` names), or an answer model by name to bypass routing (see ``serve_app.api``).
Every answer carries a ``routing`` object saying which model answered and why. This module holds the FastAPI
``app`` and the ``RouterIngress`` deployment with its endpoints; the guard in front of them is
``serve_app.guard``, error bodies and the schema ``serve_app.errors``, hot swap ``serve_app.hot_swap`` and
streaming ``serve_app.sse``.
"""

# No ``from __future__ import annotations`` here: Serve rebuilds the route methods into FastAPI endpoints and
# FastAPI must see their real parameter types, not strings.
# Serve pickles the ingress class by value, so its methods never set the guard's state directly (that would
# change a pickled copy): ``__init__`` calls the module-level ``configure_guard``, which sets this replica's
# ``serve_app.guard.GUARD``, the settings the guard middleware reads.
import functools
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import ray
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import serve

from routers.engines import SamplingParams
from serve_app import sse
from serve_app.adapters import RouterUnavailable
from serve_app.answer_clients import answer_client
from serve_app.answers import Answers, OpenStream
from serve_app.api import (
    ApiError,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
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
from serve_app.budgets import Admission, KeyBudgets, budget_routing, estimate_reservation
from serve_app.config import ANONYMOUS_KEY, AppConfig
from serve_app.errors import ERROR_RESPONSES, SERVER_ERROR, STREAMING_RESPONSES, RouterAPI, install_error_handlers
from serve_app.guard import IngressGuard, configure_guard, load_named_keys
from serve_app.hot_swap import merged_config
from serve_app.observability import RouterMetrics, log_event
from serve_app.openai_shapes import Answer, AnswerRequest, ApiKind
from serve_app.pipelines import Pipelines, router_unavailable
from serve_app.routing import ModelCall, Routing

app = RouterAPI(
    title="ray-llm-router",
    description="Routes each query to the cheapest model that will answer it well (OpenAI-compatible).",
    version="0.1.0",
)
install_error_handlers(app)
# No settings object here: Serve pickles the app, so the guard reads the replica's module-level GUARD.
app.add_middleware(IngressGuard)


def replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - not running inside a replica
        return None


def key_of(request: Request) -> str:
    """The id (name, or ``key-<8 hex>``) of the API key the guard authenticated; never the secret."""
    return getattr(request.state, "key_id", None) or ANONYMOUS_KEY


async def settled_stream(chunks: AsyncIterator[str], budgets: KeyBudgets, admission: Admission) -> AsyncIterator[str]:
    """A stream's chunks; a stream that ends without its usage (failure, disconnect) releases its reservation."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        budgets.settle(admission, 0.0)


def remember(request: Request, **fields: str) -> None:
    """Note the router / model on the request, so the guard can tag error metrics with them."""
    for key, value in fields.items():
        setattr(request.state, key, value)


def answer_body(answer: Answer, info: dict[str, Any], api: ApiKind) -> dict[str, Any]:
    """The model's completion as it gave it (tool calls, logprobs, finish reasons), under this response's id
    and the answering model's public name, with the ``routing`` object added."""
    text = api == "completions"
    body = dict(answer.body)
    body.update({"id": completion_id("cmpl" if text else "chatcmpl"),
                 "object": "text_completion" if text else "chat.completion",
                 "created": now(), "model": info["model"], "usage": answer.usage, "routing": info})
    return body


@serve.deployment(name="Ingress")
@serve.ingress(app)
class RouterIngress:
    def __init__(self, config: dict[str, Any], answer: dict[str, Any], embedder: Any | None = None,
                 causal: Any | None = None, policy: Any | None = None, bert: Any | None = None,
                 router_lms: dict[str, Any] | None = None) -> None:
        # The config the app was started with; user_config overrides always merge onto this one.
        self.base_config = AppConfig.model_validate(config)
        self.config = self.base_config
        # Endpoint models are called over HTTP from here; hosted ones through their deployment (vLLM answer
        # models are Ray Serve LLM servers, the others our AnswerModel deployment): one interface.
        clients = {key: answer_client(key, spec, answer.get(key)) for key, spec in self.config.models.items()}
        self.metrics = RouterMetrics()
        self.pipelines = Pipelines(self.config, clients, embedder, causal, policy, bert, router_lms)
        self.answers = Answers(self.config, clients, self.metrics)
        self.model_names = self.config.public_model_names()
        keys, key_ids = load_named_keys(self.config.auth)
        configure_guard(keys, self.config.limits.max_body_bytes, self.metrics, key_ids)
        # Per-key budgets and rate limits: the cluster's one ledger actor (None: off, nothing is checked).
        self.budgets = None if self.config.budgets is None else KeyBudgets(self.config.budgets, self.metrics)
        if self.budgets is not None and ray.is_initialized():
            self.budgets.connect()

    # --- config -----------------------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Swap router artifacts / thresholds without a restart (see ``serve_app.hot_swap``)."""
        new_config = merged_config(self.base_config, user_config or {})
        self.pipelines.load_routers(new_config)  # loads everything before swapping anything
        self.answers.config = new_config
        self.config = new_config
        log_event("ingress_reconfigured", overrides=(user_config or {}).get("routers") or {})

    # --- request translation ------------------------------------------------------------------------
    def choose(self, model: str, request: Request) -> RouterChoice:
        choice = parse_model_field(model, self.config.enabled_routers(), self.model_names, self.config.default_router,
                                   self.config.multimodel_routers())
        remember(request, router=choice.kind)
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
        if choice.direct_model is not None:
            return Routing.direct(choice.direct_model, choice.direct_model == self.config.large_model), 0.0
        if choice.kind == "automix" and params.n > 1:
            raise ApiError(400, "router-automix answers with n=1 (it verifies one small-model answer)", param="n")
        threshold = await self.pipelines.resolve_threshold(choice)
        try:
            routing = await self.pipelines.route(choice.kind, query, messages, params, threshold.value, choice.rule)
            routing.threshold = threshold
        except RouterUnavailable as exc:
            routing = self.fallback_routing(choice.kind, str(exc))
        return routing, time.perf_counter() - started

    def fallback_routing(self, kind: str, why: str) -> Routing:
        model = self.config.fallback_model
        if model is None:
            raise router_unavailable(kind, why)
        log_event("router_fallback", router=kind, reason=why, model=model)
        return Routing.fallback_to(kind, model, model == self.config.large_model, why)

    # --- budgets and rate limits -----------------------------------------------------------------------------
    async def admit(self, request: Request, choice: RouterChoice, messages: list[dict[str, str]] | None = None,
                    params: SamplingParams | None = None) -> Admission:
        """Before routing: may the request's key spend now (``messages``/``params`` given) or, route-only, call
        at all? One ledger call when the key has limits; raises the 429 that refuses it."""
        key_id = key_of(request)
        if self.budgets is None:
            return Admission(key_id)
        spends = messages is not None and params is not None

        def reservation(policy: Any) -> float:
            assert messages is not None and params is not None
            return estimate_reservation(self.config, policy, messages, params, choice.direct_model)

        return await self.budgets.admit(key_id, reservation, spends)

    def release(self, admission: Admission | None) -> None:
        """A request that ends without its cost known (it failed) holds nothing any more."""
        if admission is not None and self.budgets is not None:
            self.budgets.settle(admission, 0.0)

    def finish_routing(self, routing: Routing, final: ModelCall, router_latency: float,
                       admission: Admission | None = None) -> dict[str, Any]:
        """Fill the model, cost and cost-saved fields of the routing object; record metrics (and settle the
        request's reservation with its key's budget)."""
        calls = [*routing.calls, final] if routing.answer is None else routing.calls
        specs = self.config.models
        cost = sum(specs[c.model_key].call_cost(c.prompt_tokens, c.completion_tokens) for c in calls)
        large_cost = specs[self.config.large_model].call_cost(final.prompt_tokens, final.completion_tokens)
        info = {**routing.info, "model": specs[routing.model_key].public_name(), "model_key": routing.model_key,
                "cost": cost, "cost_saved": large_cost - cost, "router_latency_ms": round(1000 * router_latency, 2)}
        self.metrics.record(routing.router, routing.model_key, info, router_latency)
        for call in calls:
            self.metrics.record_model_usage(call.model_key, call.prompt_tokens, call.completion_tokens,
                                            specs[call.model_key].call_cost(call.prompt_tokens, call.completion_tokens))
        if admission is not None:
            self.metrics.record_key(admission.key_id, info)
            if self.budgets is not None:
                self.budgets.settle(admission, cost)
        return info

    # --- endpoints ---------------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, responses=SERVER_ERROR)
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "routers": self.config.enabled_routers(), "models": sorted(self.config.models),
                "replica": replica_id()}

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
    async def models(self) -> dict[str, Any]:
        served = {spec.public_name(): key for key, spec in self.config.models.items()}
        names = available_models(self.config.enabled_routers(), served,
                                 self.config.default_router)
        cards = [{"id": n, "object": "model", "created": 0, "owned_by": "llmrouter"} for n in names]
        return {"object": "list", "data": cards}

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=STREAMING_RESPONSES)
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        """Chat completions: the whole request (tools, response_format, logprobs, ...) reaches the model."""
        params = self.sampling(body)
        answer_request = AnswerRequest.chat(body.raw_messages(), params, body.passthrough())
        return await self._complete(body, request, body.query(), answer_request)

    @app.post("/v1/completions", response_model=CompletionResponse, responses=STREAMING_RESPONSES)
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        """Text completions; a chat model gets the prompt as one user turn."""
        if body.echo:
            raise ApiError(400, "echo is not supported", param="echo")
        params = self.sampling(body)
        return await self._complete(body, request, body.text(),
                                    AnswerRequest.completion(body.text(), params, body.passthrough()))

    @app.post("/v1/route", response_model=RouteResponse, responses=ERROR_RESPONSES)
    async def route(self, body: RouteRequest, request: Request) -> dict[str, Any]:
        """Route-only: the decision for one query or a batch, no answer generated."""
        choice = self.choose(body.model, request)
        if choice.kind == "direct":
            raise ApiError(400, "route-only needs a router model such as 'router-hybrid'", param="model")
        texts = body.texts()
        if len(texts) > self.config.limits.max_batch_route:
            raise ApiError(400, f"{len(texts)} queries is over the cap of {self.config.limits.max_batch_route}",
                           param="queries")
        self.check_queries(texts, batched=body.queries is not None)
        await self.admit(request, choice)  # route-only spends nothing, but counts for the rate limit
        threshold = await self.pipelines.resolve_threshold(choice)
        try:
            decisions = await self.pipelines.route_only(choice.kind, texts, threshold.value, choice.rule)
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
    async def _complete(self, body: SamplingFields, request: Request, query: str, answer_request: AnswerRequest) -> Any:
        """Both generation endpoints: pick the router, check the prompt, route (with fallback), then stream or
        answer in the endpoint's shape."""
        choice = self.choose(body.model, request)
        params = answer_request.params
        texts = answer_request.text_messages()
        self.check_prompt([m["content"] for m in texts], len(texts))
        admission = await self.admit(request, choice, texts, params)
        streaming = False
        try:
            if admission.mode == "small":  # the key's budget is spent: the small model, no routing
                routing, latency = budget_routing(choice.kind, self.config.small_model), 0.0
            else:
                routing, latency = await self.routing_for(choice, query, texts, params)
            remember(request, model=routing.model_key)
            if body.stream:
                response = await self.streaming_response(routing, answer_request, latency, body, request,
                                                         admission=admission)
                streaming = True
                return response
            answer, info = await self.answer(routing, answer_request, latency, request, admission)
            return JSONResponse(answer_body(answer, info, answer_request.api))
        finally:
            if not streaming:  # answered: already settled (a no-op); failed: release the reservation
                self.release(admission)

    async def answer(self, routing: Routing, answer_request: AnswerRequest, latency: float, request: Request,
                     admission: Admission | None = None) -> tuple[Answer, dict[str, Any]]:
        """A non-streamed answer: the model's completion and the finished routing object."""
        answer = await self.answers.generate(routing, answer_request)
        remember(request, model=routing.model_key)  # a fallback may have moved it
        usage = answer.usage
        final = ModelCall(model_key=routing.model_key, prompt_tokens=usage["prompt_tokens"],
                          completion_tokens=usage["completion_tokens"], purpose="final")
        return answer, self.finish_routing(routing, final, latency, admission)

    async def streaming_response(self, routing: Routing, answer_request: AnswerRequest, latency: float,
                                 body: SamplingFields, request: Request,
                                 admission: Admission | None = None) -> StreamingResponse:
        """Wait for the model's first chunk before committing to a 200 stream: a model that is down gets the
        same fallback / 503 as a plain request."""
        opened = await self.answers.open_stream(routing, answer_request)
        remember(request, model=routing.model_key)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = self.stream_chunks(routing, opened, answer_request, latency, include_usage,
                                    request.state.request_id, admission)
        if admission is not None and self.budgets is not None:
            chunks = settled_stream(chunks, self.budgets, admission)
        return StreamingResponse(chunks, media_type="text/event-stream")

    def stream_chunks(self, routing: Routing, opened: OpenStream, answer_request: AnswerRequest, latency: float,
                      include_usage: bool, request_id: str, admission: Admission | None = None) -> AsyncIterator[str]:
        """The SSE events of an opened stream (see ``serve_app.sse``), finished and counted by this ingress."""
        served = self.config.models[opened.model_key].public_name()
        finish = functools.partial(self.finish_routing, admission=admission)
        return sse.stream_chunks(self.answers, self.metrics, finish, served, routing, opened, answer_request,
                                 latency, include_usage, request_id)
