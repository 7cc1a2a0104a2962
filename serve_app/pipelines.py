"""The routing pipelines the ingress runs, composed over deployment handles.

Each pipeline turns a query into a ``Routing``: which answer model to call and why. The steps are the
router library's own (``route_embedding``, ``verification_request`` / ``verification_score`` /
``decide_from_score``, the router deployments' ``route``), only spread over remote deployments.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from routers.base import RouteDecision
from routers.engines import SamplingParams
from routers.registry import router_class
from serve_app.api import ApiError
from serve_app.config import AppConfig

T = TypeVar("T")
Messages = list[dict[str, str]]


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


class RouterUnavailable(Exception):
    """A router step failed or timed out; the ingress falls back to the configured model."""


async def with_timeout(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout=seconds)  # type: ignore[arg-type]
    except asyncio.TimeoutError:
        cancel = getattr(awaitable, "cancel", None)
        if callable(cancel):
            cancel()
        raise RouterUnavailable(f"{what} timed out after {seconds:.1f}s") from None


def decision_info(router: str, decision: RouteDecision) -> dict[str, Any]:
    extra = decision.extra
    return {
        "router": router,
        "decision_model": decision.model_name,
        "use_large": decision.use_large,
        "score": decision.score,
        "threshold": decision.threshold,
        "reason": decision.reason,
        "verification_score": extra.get("verification_score"),
        "escalated": extra.get("route_to_llm") if router == "automix" else None,
        "policy": extra.get("policy"),
        "fallback": False,
    }


class Pipelines:
    """Holds the handles and the in-ingress routers (the Hybrid MLP, the AutoMix policy)."""

    def __init__(self, config: AppConfig, answer: dict[str, Any], embedder: Any | None, causal: Any | None,
                 policy: Any | None) -> None:
        self.config = config
        self.answer = answer
        self.embedder = embedder
        self.causal = causal
        self.policy = policy
        self.hybrid_router: Any | None = None
        self.automix_router: Any | None = None
        self.thresholds: dict[str, float | None] = {}
        self.rng = random.Random()
        self.load_routers(config)

    # --- artifacts (hot-swappable) --------------------------------------------------------------
    def load_routers(self, config: AppConfig) -> None:
        routers = config.routers
        if routers.hybrid is not None:
            self.hybrid_router = router_class("hybrid_llm").load(routers.hybrid.artifact)
            self.thresholds["hybrid"] = routers.hybrid.threshold
        if routers.automix is not None:
            self.automix_router = router_class("automix").load(routers.automix.artifact)
            self.thresholds["automix"] = routers.automix.threshold
        for kind in ("causal", "policy"):
            spec = getattr(routers, kind)
            self.thresholds[kind] = None if spec is None else spec.threshold

    def model_for(self, use_large: bool) -> str:
        return self.config.large_model if use_large else self.config.small_model

    def served_name(self, model_key: str) -> str:
        return self.config.models[model_key].public_name()

    # --- dispatch ----------------------------------------------------------------------------------
    async def route(self, kind: str, query: str, messages: Messages, params: SamplingParams,
                    threshold: float | None = None) -> Routing:
        if threshold is None:
            threshold = self.thresholds.get(kind)
        if kind == "hybrid":
            return await self.route_hybrid(query, threshold)
        if kind == "automix":
            return await self.route_automix(query, messages, params, threshold)
        if kind in ("causal", "policy"):
            return await self.route_generative(kind, query, threshold)
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

    # --- Hybrid: embed -> MLP score -> small/large ----------------------------------------------
    async def route_hybrid(self, query: str, threshold: float | None) -> Routing:
        if self.hybrid_router is None or self.embedder is None:
            raise ApiError(404, "router 'hybrid' is not enabled", param="model", code="model_not_found")
        try:
            vector = await with_timeout(self.embedder.embed_one.remote(query), self.config.timeouts.router_s, "embedder")
        except RouterUnavailable:
            raise
        except Exception as exc:
            raise RouterUnavailable(f"embedder failed: {type(exc).__name__}: {exc}") from exc
        decision = self.hybrid_router.route_embedding(query, np.asarray(vector, dtype=np.float32), threshold)
        return Routing("hybrid", self.model_for(bool(decision.use_large)), decision_info("hybrid", decision))

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
        try:
            answer = await with_timeout(small.generate.remote(answer_messages, answer_params.model_dump()), timeout,
                                        "small model answer")
            text = answer["completions"][0]["text"]
            prompt, verify_params = router.verification_request(query, text)
            samples = await with_timeout(
                small.generate.remote([{"role": "user", "content": prompt}], verify_params.model_dump()), timeout,
                "verification sampling")
        except RouterUnavailable:
            raise
        except Exception as exc:
            raise RouterUnavailable(f"AutoMix small-model step failed: {type(exc).__name__}: {exc}") from exc
        sampled = [c["text"] for c in samples["completions"]]
        score = router.verification_score(query, text, sampled)
        decision = router.decide_from_score(query, score, threshold)
        info = decision_info("automix", decision)
        info["escalated"] = bool(decision.use_large)
        info["verification_samples"] = len(sampled)
        calls = [
            ModelCall(small_key, answer["prompt_tokens"], answer["completions"][0]["completion_tokens"], "answer"),
            ModelCall(small_key, samples["prompt_tokens"],
                      sum(c["completion_tokens"] for c in samples["completions"]), "verification"),
        ]
        use_large = bool(decision.use_large)
        return Routing("automix", self.model_for(use_large), info, answer=None if use_large else answer, calls=calls)

    # --- router models: generated model name / policy ----------------------------------------------
    async def route_generative(self, kind: str, query: str, threshold: float | None) -> Routing:
        handle = self.causal if kind == "causal" else self.policy
        if handle is None:
            raise ApiError(404, f"router {kind!r} is not enabled", param="model", code="model_not_found")
        try:
            raw = await with_timeout(handle.route.remote(query, threshold), self.config.timeouts.router_s,
                                     f"{kind} router")
        except RouterUnavailable:
            raise
        except Exception as exc:
            raise RouterUnavailable(f"{kind} router failed: {type(exc).__name__}: {exc}") from exc
        decision = RouteDecision.model_validate(raw)
        info = decision_info(kind, decision)
        info["generated"] = decision.extra.get("generated")
        return Routing(kind, self.model_for(bool(decision.use_large)), info)

    # --- route-only ----------------------------------------------------------------------------------
    async def route_only(self, kind: str, queries: list[str], threshold: float | None) -> list[dict[str, Any]]:
        """Decisions without answers. Hybrid embeds the whole batch in one call."""
        if kind == "hybrid" and self.hybrid_router is not None and self.embedder is not None and len(queries) > 1:
            vectors = await with_timeout(self.embedder.embed.remote(queries), self.config.timeouts.router_s, "embedder")
            out = []
            for query, vector in zip(queries, np.asarray(vectors), strict=True):
                decision = self.hybrid_router.route_embedding(query, vector, threshold if threshold is not None else self.thresholds.get("hybrid"))
                out.append(self.route_only_item(query, Routing("hybrid", self.model_for(bool(decision.use_large)), decision_info("hybrid", decision))))
            return out
        params = SamplingParams(max_tokens=self.config.limits.default_max_tokens)
        routings = await asyncio.gather(*[
            self.route(kind, q, [{"role": "user", "content": q}], params, threshold) for q in queries
        ])
        return [self.route_only_item(q, r) for q, r in zip(queries, routings, strict=True)]

    def route_only_item(self, query: str, routing: Routing) -> dict[str, Any]:
        item = {"query": query, "model": self.served_name(routing.model_key), "model_key": routing.model_key, **routing.info}
        if routing.answer is not None:
            item["small_answer"] = routing.answer["completions"][0]["text"]
        return item
