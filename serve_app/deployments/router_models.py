"""Deployments hosting routers that carry their own model: the causal-LM router and the policy router
(language models that generate), and the BERT router (a fine-tuned encoder that scores the query).

Each replica loads the router artifact (JSON + safetensors) and its router model, and answers
``route(query)`` with the library router's ``aroute_many`` over that model, so the served decision is the
library's decision. Concurrent queries are batched into one call (one generate call, one forward pass).

``user_config`` (hot swap): ``artifact``, ``batching`` and, for the policy router, ``policy_map``; merged
onto the arguments the replica started with (so removing a key reverts it), paths relative to
``LLMROUTER_HOME``; other keys are rejected. A new router model replaces the old one only after the old
one is released (GPU memory); queries arriving during that swap fail over to the ingress's fallback model.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from typing import Any

from ray import serve

from routers.base import RouteDecision, Router
from routers.engines import Engines, Generator, GeneratorConfig, build_generator
from routers.paths import existing_path
from routers.policy.router import PolicyRouter
from routers.progress import set_quiet
from routers.registry import router_class
from serve_app.config import BatchingSettings

DEFAULT_BATCHING = {"max_batch_size": 8}


def release_engine(engine: Generator | None) -> None:
    """Free a router model before its successor loads: on a GPU both rarely fit at once."""
    if engine is None:
        return
    engine.shutdown()
    del engine
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _RouterModel(ABC):
    """What every router-model deployment shares: the artifact, hot swap, batching, ``route``."""

    router_name: str
    deployment_name: str
    #: keys this deployment's user_config may set (anything else is an error, never ignored)
    user_config_keys: frozenset[str] = frozenset({"artifact", "batching"})

    def __init__(self, artifact: str, batching: dict[str, Any] | None = None, policy_map: str | None = None) -> None:
        self.router: Router | None = None
        self.artifact: str | None = None
        self.policy_map: str | None = None
        # What the app was started with; user_config overrides merge onto this, so removing one reverts it.
        self.base = {"artifact": artifact, "policy_map": policy_map, "batching": batching or DEFAULT_BATCHING}
        self.load(*self.paths(self.base))
        self.apply_batching(BatchingSettings.model_validate(self.base["batching"]))

    # --- loading / hot swap --------------------------------------------------------------------
    def paths(self, settings: dict[str, Any]) -> tuple[str, str | None]:
        artifact = existing_path(settings["artifact"], f"{self.deployment_name}.artifact")
        policy_map = settings.get("policy_map")
        return artifact, None if policy_map is None else existing_path(policy_map, f"{self.deployment_name}.policy_map")

    @abstractmethod
    def load(self, artifact: str, policy_map: str | None) -> None:
        """Load the router (and its model) from ``artifact``; sets ``self.router``."""

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Swap the router artifact / policy map / batching without restarting the app."""
        user_config = user_config or {}
        unknown = sorted(set(user_config) - self.user_config_keys)
        if unknown:
            raise ValueError(f"{self.deployment_name} user_config: unknown key(s) {unknown}; "
                             f"allowed: {sorted(self.user_config_keys)}")
        settings = {**self.base, **user_config}
        artifact, policy_map = self.paths(settings)
        # A policy_map in user_config is re-read even under the same path: editing the file is the point.
        if artifact != self.artifact or policy_map != self.policy_map or "policy_map" in user_config:
            self.load_or_restore(artifact, policy_map)
        self.apply_batching(BatchingSettings.model_validate(settings["batching"]))

    def load_or_restore(self, artifact: str, policy_map: str | None) -> None:
        """Load the new artifact; if that fails, reload the previous one so the replica keeps serving it."""
        previous = (self.artifact, self.policy_map)
        try:
            self.load(artifact, policy_map)
        except Exception:
            if previous[0] is not None:
                self.load(previous[0], previous[1])
            raise

    def apply_batching(self, batching: BatchingSettings) -> None:
        self._route_batched.set_max_batch_size(batching.max_batch_size)
        self._route_batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    # --- routing -------------------------------------------------------------------------------
    def loaded_router(self) -> Router:
        if self.router is None:
            raise RuntimeError(f"{self.deployment_name}: no router loaded (a hot swap failed)")
        return self.router

    def reference_quantiles(self) -> list[float] | None:
        """The artifact's training-score quantiles (for ``router-X:share=``), None if it has none."""
        scores = self.loaded_router().reference_scores()
        return None if scores is None else [float(v) for v in scores]

    async def route(self, query: str, threshold: float | None = None) -> dict[str, Any]:
        decision = await self._route_batched((query, threshold))
        return decision.model_dump()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _route_batched(self, items: list[tuple[str, float | None]]) -> list[RouteDecision]:
        return await self.decide_batch(items)

    async def decide_batch(self, items: list[tuple[str, float | None]]) -> list[RouteDecision]:
        """The library's decisions for a batch of (query, threshold)."""
        router, engines = self.loaded_router(), self.engines()  # a hot swap mid-batch must not mix the two
        return await router.aroute_many([query for query, _ in items], engines, [t for _, t in items])

    def engines(self) -> Engines:
        """The engines the router decides with (the BERT router scores with its own encoder: none)."""
        return Engines()


class _GenerativeRouterModel(_RouterModel):
    """A router that is a language model: one generate call per batch, then the library decides."""

    def __init__(self, artifact: str, engine: dict[str, Any] | None, batching: dict[str, Any] | None = None,
                 policy_map: str | None = None) -> None:
        self.engine_override = dict(engine or {})
        self.generator: Generator | None = None
        self.generator_config: GeneratorConfig | None = None
        super().__init__(artifact, batching, policy_map)

    def load(self, artifact: str, policy_map: str | None) -> None:
        router = router_class(self.router_name).load(artifact)
        self.apply_policy_map(router, policy_map)
        wanted = self.engine_config(router, artifact)
        if self.generator is None or wanted != self.generator_config:
            self.swap_engine(wanted)
        router.bind_engines(generators={"router": self.generator})
        self.router = router
        self.artifact = artifact
        self.policy_map = policy_map

    def apply_policy_map(self, router: Any, policy_map: str | None) -> None:
        """Only the policy router has a policy map (a ``user_config`` key no other deployment accepts)."""

    def swap_engine(self, wanted: GeneratorConfig) -> None:
        """Drop every reference to the old engine (the old router holds one too) and free it, then build
        the new one."""
        old, self.generator, self.generator_config = self.generator, None, None
        self.router = None  # it holds the old engine too
        release_engine(old)
        del old
        self.generator = build_generator(wanted)
        self.generator_config = wanted

    def engine_config(self, router: Router, artifact: str) -> GeneratorConfig:
        """The artifact's own router-model engine with the config's overrides (backend, TP size) on top."""
        default = router.default_engine_config("router")
        if default is None and "model" not in self.engine_override:
            raise ValueError(f"{artifact}: router {self.router_name!r} names no router model; set engine.model")
        base = default.model_dump() if default is not None else {}
        return GeneratorConfig.model_validate({**base, **self.engine_override})

    def engines(self) -> Engines:
        assert self.generator is not None  # load() built it
        return Engines(models={"router": self.generator})


@serve.deployment(name="CausalLMRouter")
class CausalLMRouterDeployment(_GenerativeRouterModel):
    """Generates the best model's name; also scores both names so a threshold can override the argmax."""

    router_name = "causallm_router"
    deployment_name = "CausalLMRouter"


@serve.deployment(name="PolicyRouter")
class PolicyRouterDeployment(_GenerativeRouterModel):
    """Emits a policy label; the editable policy map turns it into a model."""

    router_name = "policy_router"
    deployment_name = "PolicyRouter"
    user_config_keys = frozenset({"artifact", "policy_map", "batching"})

    def __init__(self, artifact: str, engine: dict[str, Any] | None, batching: dict[str, Any] | None = None,
                 policy_map: str | None = None, app_models: list[str] | None = None) -> None:
        #: the app's model keys, which the policy map may name (any of N); a map naming another model fails the load
        self.app_models = list(app_models or [])
        super().__init__(artifact, engine, batching, policy_map)

    def apply_policy_map(self, router: PolicyRouter, policy_map: str | None) -> None:
        if policy_map is not None:
            router.reload_policy_map(policy_map)
        router.serve_app_models(self.app_models)


@serve.deployment(name="BertRouter")
class BertRouterDeployment(_RouterModel):
    """RouteLLM's BERT router: its fine-tuned encoder scores each query (one forward pass per batch) and
    the library decides small iff score >= threshold."""

    router_name = "bert"
    deployment_name = "BertRouter"

    def load(self, artifact: str, policy_map: str | None) -> None:
        set_quiet(True)  # a replica has no terminal: no progress bars per batch
        self.router = router_class(self.router_name).load(artifact)
        self.artifact, self.policy_map = artifact, None
