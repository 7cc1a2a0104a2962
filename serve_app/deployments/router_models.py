"""Deployments hosting routers that are language models: the causal-LM router and the policy router.

Each replica loads the router artifact (JSON + safetensors) and its router model, and answers
``route(query)`` with the router's own decision steps, so the served decision is the library's decision.
Concurrent queries are batched into one generate call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ray import serve

from routers.base import RouteDecision, Router
from routers.engines import Generator, GeneratorConfig, build_generator
from routers.registry import router_class
from serve_app.config import BatchingSettings


class _RouterModel(ABC):
    router_name: str

    def __init__(self, artifact: str, engine: dict[str, Any] | None, batching: dict[str, Any] | None = None,
                 policy_map: str | None = None) -> None:
        self.engine_override = dict(engine or {})
        self.generator: Generator | None = None
        self.generator_config: GeneratorConfig | None = None
        self.load(artifact, policy_map)
        self.apply_batching(BatchingSettings.model_validate(batching or {"max_batch_size": 8}))

    # --- loading / hot swap --------------------------------------------------------------------
    def load(self, artifact: str, policy_map: str | None) -> None:
        router = router_class(self.router_name).load(Path(artifact))
        if policy_map is not None and hasattr(router, "reload_policy_map"):
            router.reload_policy_map(policy_map)
        wanted = self.engine_config(router, artifact)
        if self.generator is None or wanted != self.generator_config:
            self.generator = build_generator(wanted)
            self.generator_config = wanted
        router.bind_engines(generators={"router": self.generator})
        self.router: Router = router
        self.artifact = artifact

    def engine_config(self, router: Router, artifact: str) -> GeneratorConfig:
        """The artifact's own router-model engine with the config's overrides (backend, TP size) on top."""
        default = router.default_engine_config("router")
        if default is None and "model" not in self.engine_override:
            raise ValueError(f"{artifact}: router {self.router_name!r} names no router model; set engine.model")
        base = default.model_dump() if default is not None else {}
        return GeneratorConfig.model_validate({**base, **self.engine_override})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Swap the router artifact / policy map without restarting the app."""
        artifact = user_config.get("artifact", self.artifact)
        policy_map = user_config.get("policy_map")
        if artifact != self.artifact or policy_map is not None:
            self.load(artifact, policy_map)
        if "batching" in user_config:
            self.apply_batching(BatchingSettings.model_validate(user_config["batching"]))

    def apply_batching(self, batching: BatchingSettings) -> None:
        self._route_batched.set_max_batch_size(batching.max_batch_size)
        self._route_batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    # --- routing -------------------------------------------------------------------------------
    async def route(self, query: str, threshold: float | None = None) -> dict[str, Any]:
        decision = await self._route_batched((query, threshold))
        return decision.model_dump()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _route_batched(self, items: list[tuple[str, float | None]]) -> list[RouteDecision]:
        assert self.generator is not None
        router = self.router
        prompts = [router.router_prompt(query) for query, _ in items]  # type: ignore[attr-defined]
        results = await self.generator.agenerate(prompts, router.router_params())  # type: ignore[attr-defined]
        return [await self.decide(query, threshold, result.text) for (query, threshold), result in zip(items, results, strict=True)]

    @abstractmethod
    async def decide(self, query: str, threshold: float | None, generated: str) -> RouteDecision:
        """Turn the router model's generated text into the library's decision."""

    def info(self) -> dict[str, Any]:
        return {"router": self.router_name, "artifact": self.artifact, "model": self.generator_config.model if self.generator_config else None}


@serve.deployment(name="CausalLMRouter")
class CausalLMRouterDeployment(_RouterModel):
    """Generates the best model's name; also scores both names so a threshold can override the argmax."""

    router_name = "causallm_router"

    async def decide(self, query: str, threshold: float | None, generated: str) -> RouteDecision:
        assert self.generator is not None
        router = self.router
        logprobs = await self.generator.asequence_logprobs(
            router.router_prompt(query), router.candidate_continuations()  # type: ignore[attr-defined]
        )
        score = router.score_from_logprobs(logprobs)  # type: ignore[attr-defined]
        return router.decide_from_generation(query, generated, score=score, threshold=threshold)  # type: ignore[attr-defined]


@serve.deployment(name="PolicyRouter")
class PolicyRouterDeployment(_RouterModel):
    """Emits a policy label; the editable policy map turns it into a model."""

    router_name = "policy_router"

    async def decide(self, query: str, threshold: float | None, generated: str) -> RouteDecision:
        return self.router.decide_from_generation(query, generated)  # type: ignore[attr-defined]
