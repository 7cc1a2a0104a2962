"""The routing pipelines the ingress runs, composed over deployment handles, and the answer-model calls.

Each pipeline turns a query into a ``Routing``: which answer model to call and why. The steps are the
router library's own (``route_embedding`` for every embedding router, ``verification_request`` / ``verification_score`` /
``decide_from_score``, the router deployments' ``route``), only spread over remote deployments.

Failure policy, in one place:

- any failure inside a router step (a remote call, a timeout, or the library raising on what came back,
  e.g. an embedding of the wrong dimension) is a ``RouterUnavailable``: the ingress answers with the
  fallback model and says so (``fallback: true``);
- an answer model that fails for an infrastructure reason (replica died or unavailable, backpressure,
  timeout) is retried once on the other model, else 503 with ``Retry-After``;
- an answer model that rejects the request (``ValueError``: bad sampling parameters) is a 400, and any
  other answer-model error a 500; neither is retried, since the other model would fail the same way.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from routers.base import RouteDecision
from routers.embedding import EmbeddingRouter
from routers.engines import SamplingParams
from routers.errors import ConfigError
from routers.evaluation.calibrate import threshold_for_large_share
from routers.evaluation.quality_target import QualityThreshold
from routers.evaluation.quantiles import ScoreWindow
from routers.registry import router_class
from serve_app.answer_clients import AnswerClient
from serve_app.api import ApiError, RouterChoice
from serve_app.config import (
    EMBEDDING_ROUTER_KINDS,
    ROUTER_DEPLOYMENTS,
    ROUTER_KINDS,
    AppConfig,
    EmbeddingRouterSpec,
)
from serve_app.observability import log_event

T = TypeVar("T")
Messages = list[dict[str, str]]
RETRY_AFTER = {"Retry-After": "5"}


@dataclass
class ModelCall:
    model_key: str
    prompt_tokens: int
    completion_tokens: int
    purpose: str


@dataclass
class Routing:
    """A routing outcome: the model to answer with, the metadata to report, what was already spent."""

    router: str
    model_key: str
    info: dict[str, Any]
    #: AutoMix keeps the small model's answer when verification accepts it
    answer: dict[str, Any] | None = None
    calls: list[ModelCall] = field(default_factory=list)


@dataclass(frozen=True)
class ResolvedThreshold:
    """The threshold a request's ``model`` field asks for (None: the router's own) and the routing-object
    keys that say how it was chosen (``large_share``, ``quality_target``, ``threshold_source``, ...)."""

    value: float | None
    info: dict[str, Any] = field(default_factory=dict)


class RouterUnavailable(Exception):
    """A router step failed or timed out; the ingress falls back to the configured model."""


class StepTimeout(RouterUnavailable, TimeoutError):
    """A remote call ran past its timeout (a router step, or an answer model: then it is transient)."""


async def with_timeout(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout=seconds)  # type: ignore[arg-type]
    except TimeoutError:
        cancel = getattr(awaitable, "cancel", None)
        if callable(cancel):
            cancel()
        raise StepTimeout(f"{what} timed out after {seconds:.1f}s") from None


@contextmanager
def router_step(what: str) -> Iterator[None]:
    """Turn any failure of a router step into ``RouterUnavailable`` (so the ingress falls back, not 500s).

    ``ApiError`` passes through: it is a decision about the request (e.g. a router that is not enabled).
    """
    try:
        yield
    except (RouterUnavailable, ApiError):
        raise
    except Exception as exc:
        raise RouterUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc


# --- classifying answer-model failures --------------------------------------------------------------------
# Infrastructure failures: the request itself was fine, so the other model (another replica, another
# deployment) may well answer it.
_TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError,  # asyncio's, StepTimeout, Ray's GetTimeoutError
    ray_errors.RayActorError,  # ActorDiedError, ActorUnavailableError
    ray_errors.WorkerCrashedError,
    ray_errors.NodeDiedError,
    ray_errors.LocalRayletDiedError,
    ray_errors.ObjectLostError,
    ray_errors.RaySystemError,
    ray_errors.OutOfMemoryError,
    ray_errors.ObjectStoreFullError,
    serve_errors.BackPressureError,
    serve_errors.DeploymentUnavailableError,
    serve_errors.ReplicaUnavailableError,
    MemoryError,
)


def root_cause(exc: BaseException) -> BaseException:
    """The exception a remote call really raised: Ray wraps it in (nested) ``RayTaskError``s."""
    for _ in range(8):
        cause = getattr(exc, "cause", None) if isinstance(exc, ray_errors.RayTaskError) else None
        if cause is None or cause is exc:
            break
        exc = cause
    return exc


def is_transient(exc: BaseException) -> bool:
    cause = root_cause(exc)
    # torch.OutOfMemoryError (CUDA OOM) without importing torch here.
    return isinstance(cause, _TRANSIENT) or type(cause).__name__ == "OutOfMemoryError"


def client_error_message(exc: BaseException) -> str | None:
    """The message of a ``ValueError`` a model raised on the request's parameters, else None."""
    cause = root_cause(exc)
    if isinstance(cause, ValueError) and not isinstance(cause, ray_errors.RayError):
        return str(cause)[:300]  # the cause's own message: no remote traceback
    return None


def decision_info(router: str, decision: RouteDecision, served: str) -> dict[str, Any]:
    """The routing object's fields from a library decision, for an answer from the model served as ``served``.

    A router artifact names the models of the data it was trained on (say Mixtral and GPT-4), while the app
    serves its own pair under other names: the reason names the served model, and ``decision_model`` keeps
    the artifact's name for the side it chose.
    """
    extra = decision.extra
    reason = decision.reason
    if decision.model_name and decision.model_name != served:
        reason = reason.replace(decision.model_name, f"{served} (the artifact's {decision.model_name})")
    return {
        "router": router,
        "decision_model": decision.model_name,
        "use_large": decision.use_large,
        "score": decision.score,
        "threshold": decision.threshold,
        "reason": reason,
        "verification_score": extra.get("verification_score"),
        "escalated": extra.get("route_to_llm") if router == "automix" else None,
        "policy": extra.get("policy"),
        "fallback": False,
    }


def load_embedding_router(kind: str, spec: EmbeddingRouterSpec) -> EmbeddingRouter:
    """The library router of an ``EMBEDDING_ROUTER_KINDS`` kind, loaded from its artifact.

    It scores in the ingress process (a few matrix products on one vector): only the embedder is remote.
    """
    router = router_class(EMBEDDING_ROUTER_KINDS[kind].registry_name).load(spec.artifact)
    if not isinstance(router, EmbeddingRouter):  # a registry entry that stopped deciding from embeddings
        raise ConfigError(f"routers.{kind}: {type(router).__name__} does not route from query embeddings")
    return router


class Pipelines:
    """Holds the handles and the in-ingress routers (the embedding routers, the AutoMix policy)."""

    def __init__(self, config: AppConfig, answer: dict[str, AnswerClient], embedder: Any | None, causal: Any | None,
                 policy: Any | None, bert: Any | None = None) -> None:
        self.config = config
        self.answer = answer
        self.embedder = embedder
        self.causal = causal
        self.policy = policy
        self.bert = bert
        #: kind -> library router, for the enabled kinds of ``EMBEDDING_ROUTER_KINDS``
        self.embedding_routers: dict[str, EmbeddingRouter] = {}
        self.automix_router: Any | None = None
        self.thresholds: dict[str, float | None] = {}
        self.reference: dict[str, Any | None] = {}
        #: kind -> the scores of its recent decisions (``share_calibration.source: traffic``)
        self.traffic: dict[str, ScoreWindow] = {}
        self.rng = random.Random()
        self.load_routers(config)

    # --- artifacts (hot-swappable) --------------------------------------------------------------
    def load_routers(self, config: AppConfig) -> None:
        """Load every artifact first, then swap all at once: a bad artifact leaves the old routers serving."""
        routers = config.routers
        embedding = {kind: load_embedding_router(kind, spec) for kind, spec in routers.embedding_routers().items()}
        automix = router_class("automix").load(routers.automix.artifact) if routers.automix is not None else None
        thresholds = {kind: None if getattr(routers, kind) is None else getattr(routers, kind).threshold
                      for kind in ROUTER_KINDS}
        self.embedding_routers, self.automix_router = embedding, automix
        self.thresholds = thresholds
        self.reference = {}
        self.traffic = {}  # scores of the old routers say nothing about the new ones
        self.config = config

    def model_for(self, use_large: bool) -> str:
        return self.config.large_model if use_large else self.config.small_model

    def served_name(self, model_key: str) -> str:
        return self.config.models[model_key].public_name()

    def routing_for_decision(self, kind: str, decision: RouteDecision) -> Routing:
        model_key = self.model_for(bool(decision.use_large))
        return Routing(kind, model_key, decision_info(kind, decision, self.served_name(model_key)))

    # --- threshold arguments of the model field: share=, quality= ------------------------------------
    async def resolve_threshold(self, choice: RouterChoice) -> ResolvedThreshold:
        """The threshold ``router-X:T`` / ``:share=S`` / ``:quality=Q`` asks for, and how it was chosen."""
        if choice.large_share is not None:
            threshold = await self.threshold_for_share(choice.kind, choice.large_share)
            return ResolvedThreshold(threshold, {"large_share": choice.large_share,
                                                 "threshold_source": self.share_source(choice.kind)})
        if choice.quality_target is not None:
            chosen, source = await self.threshold_for_quality(choice.kind, choice.quality_target)
            return ResolvedThreshold(chosen.threshold, {
                "quality_target": choice.quality_target, "quality_lower_bound": chosen.ratio_lower_bound,
                "quality_target_met": chosen.met, "calibration_large_share": chosen.large_share,
                "threshold_source": f"quality calibration ({source})"})
        if choice.routellm_threshold is not None:
            return ResolvedThreshold(choice.threshold, {"routellm_threshold": choice.routellm_threshold})
        return ResolvedThreshold(choice.threshold)

    async def threshold_for_share(self, kind: str, share: float) -> float:
        """The threshold that sends ``share`` of the router's reference queries (or, with
        ``share_calibration.source: traffic``, of its recent traffic) to the large model."""
        if kind == "random":
            return share  # the random router's threshold is its large share already
        window = self.usable_traffic_window(kind)
        if window is not None:
            return threshold_for_large_share(window.scores(), share)
        scores = await self.reference_scores(kind)
        if scores is None:
            raise ApiError(400, f"router {kind!r} has no reference score distribution in its artifact, so a "
                           f"large-model share cannot be turned into a threshold; give a threshold instead "
                           f"(router-{kind}:0.5), or add one with `llmrouter reference-scores`", param="model")
        return threshold_for_large_share(scores, share)

    def usable_traffic_window(self, kind: str) -> ScoreWindow | None:
        """The recent traffic's scores, when the config asks for them and enough have been seen."""
        settings = self.config.share_calibration
        window = self.traffic.get(kind)
        if settings.source != "traffic" or window is None or len(window) < settings.min_scores:
            return None
        return window

    def share_source(self, kind: str) -> str:
        if kind == "random":
            return "random draw"
        window = self.usable_traffic_window(kind)
        if window is not None:
            return f"traffic: the last {len(window)} scores"
        return "training score quantiles"

    def record_score(self, kind: str, routing: Routing) -> None:
        """Keep the score of a decision for traffic-quantile thresholds (``share_calibration``)."""
        score = routing.info.get("score")
        if self.config.share_calibration.source != "traffic" or score is None or routing.info.get("fallback"):
            return
        if kind not in self.traffic:
            self.traffic[kind] = ScoreWindow(self.config.share_calibration.window)
        self.traffic[kind].add(float(score))

    async def threshold_for_quality(self, kind: str, target: float) -> tuple[QualityThreshold, str]:
        """The quality-targeted threshold from the router's calibration queries, and where they came from."""
        router = self.automix_router if kind == "automix" else self.embedding_routers.get(kind)
        calibration = None if router is None else router.quality_calibration
        if calibration is None:
            where = ("its artifact has no quality calibration; add one with `llmrouter calibrate-quality`"
                     if router is not None else "it is not scored in the ingress (no calibration is served for it)")
            raise ApiError(400, f"router {kind!r} cannot take a quality target: {where}; give a threshold "
                           f"(router-{kind}:0.5) or a share (router-{kind}:share=0.3) instead", param="model")
        # The first request for a target runs the bootstrap (~0.1-1 s); off the event loop, then cached.
        chosen = await asyncio.to_thread(calibration.threshold, target)
        return chosen, calibration.source

    async def reference_scores(self, kind: str) -> Any | None:
        """The router's score distribution on its reference (training) queries, if its artifact stores one.

        Passed on as the router returns it: a quantile summary is a marked array that
        ``threshold_for_large_share`` interpolates instead of counting. The causal-LM router lives in its
        own deployment, which may be hot-swapped, so its quantiles are asked for each time (no cache).
        """
        if kind in ("causal", "bert"):
            return await self.deployment_reference_scores(kind)
        if kind not in self.reference:
            router = self.automix_router if kind == "automix" else self.embedding_routers.get(kind)
            method = getattr(router, "reference_scores", None)
            scores = method() if callable(method) else None
            self.reference[kind] = scores if scores is not None and len(scores) > 0 else None
        return self.reference[kind]

    async def deployment_reference_scores(self, kind: str) -> Any | None:
        handle = self.router_handle(kind)
        if handle is None:
            return None
        try:
            quantiles = await with_timeout(handle.reference_quantiles.remote(), self.config.timeouts.router_s,
                                           f"{kind} router")
        except Exception as exc:
            raise router_unavailable(kind, type(exc).__name__) from exc
        if not quantiles:
            return None
        from routers.evaluation.quantiles import ScoreQuantiles

        return ScoreQuantiles.from_values(np.asarray(quantiles, dtype=np.float64))

    # --- dispatch ----------------------------------------------------------------------------------
    async def route(self, kind: str, query: str, messages: Messages, params: SamplingParams,
                    threshold: float | None = None) -> Routing:
        routing = await self.dispatch(kind, query, messages, params, threshold)
        self.record_score(kind, routing)
        return routing

    async def dispatch(self, kind: str, query: str, messages: Messages, params: SamplingParams,
                       threshold: float | None) -> Routing:
        if threshold is None:
            threshold = self.thresholds.get(kind)
        if kind in EMBEDDING_ROUTER_KINDS:
            return await self.route_by_embedding(kind, query, threshold)
        if kind == "automix":
            return await self.route_automix(query, messages, params, threshold)
        if kind in ROUTER_DEPLOYMENTS:
            return await self.route_by_deployment(kind, query, threshold)
        if kind in ("smallest", "largest"):
            use_large = kind == "largest"
            return self.fixed(kind, use_large, f"router '{kind}' always picks the {'large' if use_large else 'small'} model")
        if kind == "random":
            share = self.config.random_large_share if threshold is None else threshold
            use_large = self.rng.random() < share
            return self.fixed(kind, use_large, f"random draw with large share {share:.2f}")
        raise ApiError(404, f"router {kind!r} is not enabled", param="model", code="model_not_found")

    def fixed(self, kind: str, use_large: bool, reason: str) -> Routing:
        info = {"router": kind, "use_large": use_large, "reason": reason, "score": None, "threshold": None,
                "verification_score": None, "escalated": None, "policy": None, "fallback": False}
        return Routing(router=kind, model_key=self.model_for(use_large), info=info)

    # --- embedding routers (Hybrid, kNN, MF, SW ranking): embed -> library score -> small/large --------
    def embedding_router(self, kind: str) -> EmbeddingRouter:
        router = self.embedding_routers.get(kind)
        if router is None or self.embedder is None:
            raise ApiError(404, f"router {kind!r} is not enabled", param="model", code="model_not_found")
        return router

    @staticmethod
    def scoring_step(kind: str) -> str:
        """How a failed scoring step is reported: 'hybrid MLP failed: ...'."""
        return f"{kind} {EMBEDDING_ROUTER_KINDS[kind].scorer}"

    async def route_by_embedding(self, kind: str, query: str, threshold: float | None) -> Routing:
        router = self.embedding_router(kind)
        with router_step("embedder"):
            vector = await with_timeout(self.embedder.embed_one.remote(query), self.config.timeouts.router_s, "embedder")
        with router_step(self.scoring_step(kind)):  # e.g. an embedder whose dimension the artifact was not trained on
            decision = router.route_embedding(query, np.asarray(vector, dtype=np.float32), threshold)
        return self.routing_for_decision(kind, decision)

    # --- AutoMix: small answers, verifies itself N times in one call, policy decides -------------
    async def route_automix(self, query: str, messages: Messages, params: SamplingParams,
                            threshold: float | None) -> Routing:
        router = self.automix_router
        if router is None:
            raise ApiError(404, "router 'automix' is not enabled", param="model", code="model_not_found")
        small_key = self.config.small_model
        small = self.answer[small_key]
        answer_messages = [*messages[:-1], {"role": "user", "content": router.answer_prompt(query)}] \
            if messages and messages[-1]["role"] == "user" and messages[-1]["content"] == query else messages
        answer_params = params.model_copy(update={"n": 1})
        timeout = self.config.timeouts.answer_s
        with router_step("AutoMix small-model step"):
            answer = await with_timeout(small.generate(answer_messages, answer_params), timeout,
                                        "small model answer")
            text = answer["completions"][0]["text"]
            prompt, verify_params = router.verification_request(query, text)
            samples = await with_timeout(
                small.generate([{"role": "user", "content": prompt}], verify_params), timeout,
                "verification sampling")
        with router_step("AutoMix decision"):
            sampled = [c["text"] for c in samples["completions"]]
            score = router.verification_score(query, text, sampled)
            decision = router.decide_from_score(query, score, threshold)
            calls = [
                ModelCall(small_key, answer["prompt_tokens"], answer["completions"][0]["completion_tokens"], "answer"),
                ModelCall(small_key, samples["prompt_tokens"],
                          sum(c["completion_tokens"] for c in samples["completions"]), "verification"),
            ]
        routing = self.routing_for_decision("automix", decision)
        routing.info["escalated"] = bool(decision.use_large)
        routing.info["verification_samples"] = len(sampled)
        routing.answer = None if decision.use_large else answer
        routing.calls = calls
        return routing

    # --- routers with a deployment of their own: generated name / policy / BERT score -------------
    def router_handle(self, kind: str) -> Any | None:
        return {"causal": self.causal, "policy": self.policy, "bert": self.bert}.get(kind)

    async def route_by_deployment(self, kind: str, query: str, threshold: float | None) -> Routing:
        handle = self.router_handle(kind)
        if handle is None:
            raise ApiError(404, f"router {kind!r} is not enabled", param="model", code="model_not_found")
        with router_step(f"{kind} router"):
            raw = await with_timeout(handle.route.remote(query, threshold), self.config.timeouts.router_s,
                                     f"{kind} router")
            decision = RouteDecision.model_validate(raw)  # a replica on another code version may send junk
        routing = self.routing_for_decision(kind, decision)
        if kind != "bert":
            routing.info["generated"] = decision.extra.get("generated")
        return routing

    # --- route-only ----------------------------------------------------------------------------------
    async def route_only(self, kind: str, queries: list[str], threshold: float | None) -> list[dict[str, Any]]:
        """Decisions without answers. An embedding router embeds the whole batch in one call."""
        if kind in self.embedding_routers and self.embedder is not None and len(queries) > 1:
            return await self.route_only_embedding_batch(kind, queries, threshold)
        params = SamplingParams(max_tokens=self.config.limits.default_max_tokens)
        routings = await asyncio.gather(*[
            self.route(kind, q, [{"role": "user", "content": q}], params, threshold) for q in queries
        ])
        return [self.route_only_item(q, r) for q, r in zip(queries, routings, strict=True)]

    async def route_only_embedding_batch(self, kind: str, queries: list[str],
                                         threshold: float | None) -> list[dict[str, Any]]:
        router = self.embedding_router(kind)
        if threshold is None:
            threshold = self.thresholds.get(kind)
        with router_step("embedder"):
            vectors = await with_timeout(self.embedder.embed.remote(queries), self.config.timeouts.router_s, "embedder")
        with router_step(self.scoring_step(kind)):
            decisions = [router.route_embedding(q, v, threshold)
                         for q, v in zip(queries, np.asarray(vectors, dtype=np.float32), strict=True)]
        routings = [self.routing_for_decision(kind, d) for d in decisions]
        for routing in routings:
            self.record_score(kind, routing)
        return [self.route_only_item(q, r) for q, r in zip(queries, routings, strict=True)]

    def route_only_item(self, query: str, routing: Routing) -> dict[str, Any]:
        item = {"query": query, "model": self.served_name(routing.model_key), "model_key": routing.model_key, **routing.info}
        if routing.answer is not None:
            item["small_answer"] = routing.answer["completions"][0]["text"]
        return item


# --- answer models ------------------------------------------------------------------------------------------
@dataclass
class OpenStream:
    """A token stream whose first delta has arrived (so the model is known to work)."""

    model_key: str
    first: str | None  # None: the model finished without a token
    rest: Any | None  # the remote generator after ``first``; None when there is nothing more
    stream: Any | None = None  # the stream itself (its client may read the token counts off it)
    counted: dict[str, int] | None = None  # token counts known already (an AutoMix answer that was kept)


class Answers:
    """Calls the answer models: one retry on the other model for infrastructure failures, timeouts on every
    wait, clean HTTP errors otherwise."""

    def __init__(self, config: AppConfig, clients: dict[str, AnswerClient]) -> None:
        self.config = config
        self.clients = clients

    def candidates(self, model_key: str) -> list[str]:
        small, large = self.config.small_model, self.config.large_model
        other = {small: large, large: small}.get(model_key)
        return [model_key] if other is None else [model_key, other]

    async def generate(self, routing: Routing, messages: Messages, params: SamplingParams) -> dict[str, Any]:
        """The answer: AutoMix's kept answer, else the routed model's, else the other model's."""
        if routing.answer is not None and params.n == 1:
            return routing.answer
        failures: list[str] = []
        for key in self.candidates(routing.model_key):
            try:
                call = self.clients[key].generate(messages, params)
                result = await with_timeout(call, self.config.timeouts.answer_s, f"answer model {key}")
            except Exception as exc:  # noqa: BLE001 - classified right away: retry, 400, or 500
                failures.append(self.transient_or_raise(key, exc))
                continue
            note_retry(routing, key)
            return result
        raise unavailable(failures)

    async def open_stream(self, routing: Routing, messages: Messages, params: SamplingParams) -> OpenStream:
        """Start streaming and wait for the first delta, so a dead model is a 503 (or a retry), not a
        200 stream that breaks after its head chunk."""
        if routing.answer is not None:
            kept = routing.answer
            return OpenStream(routing.model_key, kept["completions"][0]["text"], None, counted={
                "prompt_tokens": kept["prompt_tokens"], "completion_tokens": kept["completions"][0]["completion_tokens"]})
        failures: list[str] = []
        for key in self.candidates(routing.model_key):
            stream = None
            try:
                stream = self.clients[key].stream(messages, params)
                first = await with_timeout(next_or_none(stream), self.config.timeouts.answer_s,
                                           f"answer model {key} (first token)")
            except Exception as exc:  # noqa: BLE001 - classified right away: retry, 400, or 500
                cancel_quietly(stream)
                failures.append(self.transient_or_raise(key, exc))
                continue
            note_retry(routing, key)
            return OpenStream(key, first, None if first is None else stream, stream=stream)
        raise unavailable(failures)

    async def deltas(self, opened: OpenStream) -> AsyncIterator[str]:
        """Every delta of an open stream; a model silent for ``timeouts.stream_chunk_s`` raises ``StepTimeout``."""
        if opened.first is not None:
            yield opened.first
        if opened.rest is None:
            return
        timeout = self.config.timeouts.stream_chunk_s
        finished = False
        try:
            while True:
                delta = await with_timeout(next_or_none(opened.rest), timeout,
                                           f"answer model {opened.model_key} (next token)")
                if delta is None:
                    finished = True
                    return
                yield delta
        finally:
            if not finished:  # timed out, failed, or the client went away: stop the model generating
                cancel_quietly(opened.rest)

    async def usage(self, opened: OpenStream, messages: Messages, text: str) -> dict[str, int]:
        """Token counts of a finished stream."""
        if opened.counted is not None:
            return opened.counted
        return await with_timeout(self.clients[opened.model_key].usage(messages, text, opened.stream),
                                  self.config.timeouts.answer_s, f"answer model {opened.model_key} (token count)")

    @staticmethod
    def transient_or_raise(model_key: str, exc: Exception) -> str:
        """A one-line note of an infrastructure failure (worth a retry); any other failure ends the request."""
        if isinstance(exc, ApiError):
            raise exc
        cause = root_cause(exc)
        if is_transient(exc):
            log_event("answer_model_unavailable", model=model_key, error=f"{type(cause).__name__}: {cause}"[:500])
            return f"{model_key}: {type(cause).__name__}"
        message = client_error_message(exc)
        if message is not None:
            raise ApiError(400, f"answer model {model_key!r} rejected the request: {message}") from exc
        log_event("answer_model_error", model=model_key, error=f"{type(cause).__name__}: {cause}"[:500])
        raise ApiError(500, f"answer model {model_key!r} failed ({type(cause).__name__})", kind="server_error",
                       code="model_error") from exc


def note_retry(routing: Routing, model_key: str) -> None:
    if model_key != routing.model_key:
        routing.info["retried_on"] = model_key
        routing.info["reason"] += f"; {routing.model_key!r} failed, answered by {model_key!r}"
        routing.model_key = model_key


def unavailable(failures: list[str]) -> ApiError:
    return ApiError(503, "answer models unavailable: " + " | ".join(failures), kind="server_error",
                    code="model_unavailable", headers=dict(RETRY_AFTER))


def router_unavailable(kind: str, why: str) -> ApiError:
    """The 503 for a router that failed where no fallback model can answer instead."""
    return ApiError(503, f"router {kind!r} is unavailable: {why}", kind="server_error",
                    code="router_unavailable", headers=dict(RETRY_AFTER))


async def next_or_none(stream: Any) -> Any | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def cancel_quietly(stream: Any) -> None:
    cancel = getattr(stream, "cancel", None)
    if callable(cancel):
        try:
            cancel()
        except Exception:  # noqa: BLE001, S110 - cancelling a broken stream must not mask the real error
            pass
