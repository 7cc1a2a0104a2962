"""The Serve application's config: the ``args`` block of ``serve_config.yaml``, validated with pydantic.

Every path in it is resolved to an absolute path when the app is built (replicas may start in another
working directory), and every local model directory and router artifact is checked to exist then, so a
typo fails at ``serve run`` with a message naming the key, not minutes later inside a replica.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from routers.engines import EmbedderConfig, GeneratorConfig, checked_engine_overrides
from routers.errors import ConfigError
from routers.paths import existing_path, resolve_model_path
from routers.registry import RouterEntry, multimodel_router_names, served_entries
from routers.selection import parse_rule
from routers.strict import StrictModel

LOGGER = logging.getLogger(__name__)


# Every router list below derives from the registry (``routers.registry``): serve name -> entry.
#: routers that decide from the query embedding: the Embedder deployment embeds, the library router scores
EMBEDDING_ROUTER_KINDS: dict[str, RouterEntry] = served_entries("embedding")
#: routers with an artifact, enabled by a ``routers.<kind>`` block
ROUTER_KINDS: tuple[str, ...] = tuple(served_entries("embedding", "ingress", "deployment"))
#: routers hosted by a deployment of their own (their model), by serve kind -> deployment name
ROUTER_DEPLOYMENTS: dict[str, str] = {kind: entry.deployment or entry.name
                                      for kind, entry in served_entries("deployment").items()}
#: routers without an artifact, always enabled
BASELINE_KINDS: tuple[str, ...] = tuple(served_entries("baseline"))


class DeploymentSettings(StrictModel):
    """Ray Serve knobs of one deployment (passed to ``Deployment.options``)."""

    num_replicas: int | Literal["auto"] | None = 1
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int = Field(default=8, ge=1)
    max_queued_requests: int = Field(default=64, ge=-1, description="-1 = unbounded; beyond this Serve sheds load")
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.25})
    placement_group_bundles: list[dict[str, float]] | None = None
    placement_group_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] | None = None
    max_replicas_per_node: int | None = None
    health_check_period_s: float | None = None
    graceful_shutdown_timeout_s: float | None = None

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> DeploymentSettings:
        if self.autoscaling_config is not None and isinstance(self.num_replicas, int):
            # Serve rejects both; an autoscaling block means the replica count is Serve's to choose.
            self.num_replicas = None
        return self

    def serve_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class BatchingSettings(StrictModel):
    """``@serve.batch`` settings: how long a replica waits to fill a batch."""

    max_batch_size: int = Field(default=16, ge=1, le=512)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0, le=1.0)


ApiStyle = Literal["chat", "completions"]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class EndpointSpec(StrictModel):
    """An answer model served elsewhere, behind an OpenAI-compatible API: a vLLM or SGLang server, llama.cpp's
    ``llama-server``, Ollama, or a hosted API. Secrets never live in the config: the key (and any secret
    header) is read from the environment variable named here, in the ingress replica."""

    base_url: str = Field(description="the API root, e.g. http://10.0.0.5:8000/v1 or https://api.openai.com/v1")
    model: str = Field(min_length=1, description="the upstream's model id (what its /v1/models lists)")
    api_key_env: str | None = Field(default=None, description="name of the env var holding the bearer key")
    headers: dict[str, str] = Field(default_factory=dict, description="extra non-secret headers sent upstream")
    headers_env: dict[str, str] = Field(default_factory=dict,
                                        description="header name -> env var holding its (secret) value")
    api: ApiStyle = Field(default="chat", description="chat: /chat/completions; completions: /completions only")
    timeout_s: float = Field(default=120.0, gt=0, description="a whole answer, or a stream's first chunk")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_in_flight: int = Field(default=64, ge=1, description="requests open upstream at once, per ingress replica")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https:// and name a host")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(ENV_NAME, value):
            raise ValueError(f"api_key_env {value!r} must be the NAME of an environment variable, not a key")
        return value

    @field_validator("headers_env")
    @classmethod
    def _header_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for header, env in value.items():
            if not re.match(ENV_NAME, env):
                raise ValueError(f"headers_env.{header}: {env!r} must be the name of an environment variable")
        return value


class Capabilities(StrictModel):
    """What a model can take. Unset fields get the defaults of its kind (``AnswerModelSpec.capabilities_resolved``):
    an endpoint takes tools, JSON schemas and logprobs; a hosted vLLM model JSON schemas and logprobs; a hosted
    transformers model plain text. No model takes images unless told."""

    tools: bool | None = None
    json_schema: bool | None = Field(default=None, description="response_format json_object / json_schema")
    images: bool | None = None
    logprobs: bool | None = None
    context_tokens: int | None = Field(default=None, ge=16,
                                       description="prompt + completion tokens it takes; unset on an endpoint: unknown")


class AnswerModelSpec(StrictModel):
    """One answer model (``small``, ``large``, ...): hosted by the app (``engine``) or remote (``endpoint``)."""

    engine: GeneratorConfig | None = None
    endpoint: EndpointSpec | None = None
    served_name: str | None = Field(default=None, description="the name clients see; default: the model dir name "
                                                              "or the endpoint's model id")
    input_price: float = Field(default=0.0, ge=0.0, description="USD per 1M prompt tokens (for cost reporting)")
    output_price: float = Field(default=0.0, ge=0.0, description="USD per 1M completion tokens")
    capabilities: Capabilities = Field(default_factory=Capabilities)
    fallbacks: list[str] | None = Field(
        default=None, description="models to try, in order, when this one fails; default: every other model")
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    batching: BatchingSettings = Field(default_factory=lambda: BatchingSettings(max_batch_size=8))

    @model_validator(mode="after")
    def _engine_or_endpoint(self) -> AnswerModelSpec:
        if (self.engine is None) == (self.endpoint is None):
            raise ValueError("give exactly one of engine (hosted by the app) or endpoint (an OpenAI-compatible URL)")
        return self

    @model_validator(mode="after")
    def _vllm_gpus_in_bundles(self) -> AnswerModelSpec:
        # Ray Serve LLM adds the replica actor's resources to the engine's first bundle: a GPU asked for in
        # ray_actor_options would be reserved twice and never used.
        if (self.engine is not None and self.engine.backend == "vllm"
                and float(self.deployment.ray_actor_options.get("num_gpus", 0) or 0) > 0):
            raise ValueError("a vLLM answer model takes its GPUs from deployment.placement_group_bundles "
                             "(one {GPU: 1} per tensor-parallel rank), not ray_actor_options.num_gpus")
        return self

    @property
    def hosted(self) -> bool:
        return self.engine is not None

    def public_name(self) -> str:
        if self.served_name:
            return self.served_name
        if self.endpoint is not None:
            return self.endpoint.model
        assert self.engine is not None
        return Path(self.engine.model.rstrip("/")).name

    def call_cost(self, prompt_tokens: Any, completion_tokens: Any) -> Any:
        """USD of a call (per-1M-token prices); numbers or numpy arrays of token counts alike."""
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1e6

    def capabilities_resolved(self) -> Capabilities:
        """``capabilities`` with every unset flag given its kind's default (see ``Capabilities``)."""
        if self.endpoint is not None:
            defaults = Capabilities(tools=True, json_schema=True, images=False, logprobs=True)
        elif self.engine is not None and self.engine.backend == "vllm":
            # LLMServer gets no tool-call parser from our engine settings, so tools stay off unless declared.
            defaults = Capabilities(tools=False, json_schema=True, images=False, logprobs=True,
                                    context_tokens=self.engine.max_model_len)
        else:
            assert self.engine is not None
            defaults = Capabilities(tools=False, json_schema=False, images=False, logprobs=False,
                                    context_tokens=self.engine.max_input_tokens)
        declared = self.capabilities.model_dump(exclude_none=True)
        return defaults.model_copy(update=declared)


class ResilienceSettings(StrictModel):
    """How answer-model failures are handled (``serve_app.answers``): each model's ``fallbacks`` are tried in order
    on connection errors, timeouts, 5xx and 429s; a model failing ``cooldown_failures`` times in a row is routed
    around for ``cooldown_s`` (a 429 for its ``Retry-After``, at most ``max_retry_after_s``), then tried again."""

    cooldown_failures: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0.0)
    max_retry_after_s: float = Field(default=60.0, ge=0.0)


class EmbedderBatching(StrictModel):
    """How the embedder shares its engine between concurrent queries (``routers.engines.batching``): a call
    runs as soon as the engine is free and takes every query that arrived while it was busy."""

    max_batch_size: int = Field(default=64, ge=1, le=1024, description="queries per engine call at most")
    cache_size: int = Field(default=4096, ge=0, description="recent query vectors kept; a repeat skips the "
                            "model (0: off)")

    @model_validator(mode="before")
    @classmethod
    def _no_wait_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batch_wait_timeout_s" in data:
            raise ValueError("batch_wait_timeout_s is gone: the embedder no longer waits to fill a batch (batches "
                             "form while the engine is busy); remove it")
        return data


class EmbedderSpec(StrictModel):
    """The query embedder of the embedding routers. ``placement: ingress`` runs it inside each ingress replica
    (no extra hop per decision; it scales with the ingress's replicas, so give the ingress the embedder's
    CPUs); ``deployment`` runs it in a deployment of its own (scales on its own; the choice for a GPU
    embedder)."""

    engine: EmbedderConfig
    placement: Literal["ingress", "deployment"] = "deployment"
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    batching: EmbedderBatching = Field(default_factory=EmbedderBatching)


class EmbeddingRouterSpec(StrictModel):
    """A router of ``EMBEDDING_ROUTER_KINDS``: its artifact (``save`` output of the library router) and an
    optional threshold (unset: the artifact's own)."""

    artifact: str
    threshold: float | None = None


class HybridSpec(EmbeddingRouterSpec):
    """The Hybrid router is on by default, with the shipped artifact."""

    artifact: str = "artifacts/hybrid_llm"


class AutomixSpec(StrictModel):
    artifact: str = "artifacts/automix"
    threshold: float | None = None
    tiers: list[str] | None = Field(
        default=None, description="app model keys, cheapest first: every tier but the last answers, verifies its "
        "answer and keeps it or escalates; the last answers the rest (default: small_model, large_model)")

    @field_validator("tiers")
    @classmethod
    def _tiers_distinct(cls, tiers: list[str] | None) -> list[str] | None:
        if tiers is not None and (len(tiers) < 2 or len(set(tiers)) != len(tiers)):
            raise ValueError(f"tiers must name at least two distinct models, got {tiers}")
        return tiers


class GenerativeRouterSpec(StrictModel):
    """A router that is itself a language model (causal-LM router, policy router)."""

    artifact: str
    engine: dict[str, Any] | None = Field(
        default=None,
        description="GeneratorConfig fields overriding the artifact's own router-model engine "
        "(e.g. backend: vllm, tensor_parallel_size: 2); 'model' replaces the artifact's merged model",
    )
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    policy_map: str | None = Field(default=None, description="policy router only: the editable policy map JSON")
    threshold: float | None = None

    @field_validator("engine")
    @classmethod
    def _engine_fields_known(cls, engine: dict[str, Any] | None) -> dict[str, Any] | None:
        return checked_engine_overrides(engine)


class ScoringRouterSpec(StrictModel):
    """A router whose own fine-tuned encoder scores the query (RouteLLM's BERT router)."""

    artifact: str
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    threshold: float | None = None


#: what ``routers.multimodel`` names may be: the ``router-<name>`` grammar's kinds (lower case and '_')
MULTIMODEL_NAME = r"^[a-z][a-z_]*$"
#: N-model routers that cannot decide for a new query (they read the labels)
UNSERVABLE_MULTIMODEL = ("nmodel_oracle",)


class MultiModelRouterSpec(StrictModel):
    """An N-model router (``routers.nmodel``) served as ``router-<name>``: it predicts, per query, the quality of
    every candidate of its artifact (the models of the data it was trained on), and a selection rule picks one.

    ``model_map`` says which app model stands for which of the artifact's candidates (data model name -> app
    model key); candidates left out are never chosen. The decision prices each candidate at its app model's
    ``input_price`` / ``output_price``: the query's estimated prompt tokens plus ``completion_tokens``."""

    artifact: str = Field(description="an N-model router's directory (`llmrouter train --pool ... --out DIR`)")
    model_map: dict[str, str] = Field(description="the artifact's model name -> an app model key (models:)")
    rule: str = Field(default="default", description="the selection rule when a request names none: default, "
                      "cost=L, quality=R, budget=USD or share=S")
    completion_tokens: int = Field(default=128, ge=1, le=1_000_000,
                                   description="the answer length (tokens) each candidate is priced at")
    engine: dict[str, Any] | None = Field(
        default=None, description="a router with its own LM (nmodel_causal): GeneratorConfig fields over the "
        "artifact's merged model (backend: vllm, tensor_parallel_size: 2)")
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings,
                                           description="a router with its own LM: its RouterLM deployment")

    @field_validator("engine")
    @classmethod
    def _engine_fields_known(cls, engine: dict[str, Any] | None) -> dict[str, Any] | None:
        return checked_engine_overrides(engine)

    @field_validator("rule")
    @classmethod
    def _rule_parses(cls, value: str) -> str:
        try:
            return parse_rule(value).text()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _two_or_more(self) -> MultiModelRouterSpec:
        if len(self.model_map) < 2:
            raise ValueError(f"model_map maps {len(self.model_map)} model(s); an N-model router needs at least 2 "
                             "of the artifact's models mapped to app models")
        seen: dict[str, str] = {}
        for data_model, key in self.model_map.items():
            if key in seen:
                raise ValueError(f"model_map: {seen[key]!r} and {data_model!r} both map to app model {key!r}; "
                                 "each app model stands for one of the artifact's models")
            seen[key] = data_model
        return self


class RoutersSpec(StrictModel):
    hybrid: HybridSpec | None = Field(default_factory=HybridSpec)
    automix: AutomixSpec | None = Field(default_factory=AutomixSpec)
    causal: GenerativeRouterSpec | None = None
    policy: GenerativeRouterSpec | None = None
    knn: EmbeddingRouterSpec | None = None
    mf: EmbeddingRouterSpec | None = None
    sw_ranking: EmbeddingRouterSpec | None = None
    blend: EmbeddingRouterSpec | None = None
    domain_prior: EmbeddingRouterSpec | None = None
    bert: ScoringRouterSpec | None = None
    def embedding_routers(self) -> dict[str, EmbeddingRouterSpec]:
        """The enabled routers of ``EMBEDDING_ROUTER_KINDS``, by kind."""
        return {kind: spec for kind in EMBEDDING_ROUTER_KINDS if (spec := getattr(self, kind)) is not None}


# A router added to the registry must get its block here (and the other way round): fail at import, not
# with a KeyError on the first request.
if set(RoutersSpec.model_fields) != set(ROUTER_KINDS):
    raise ConfigError(f"RoutersSpec fields {sorted(RoutersSpec.model_fields)} != the registry's served routers "
                      f"{sorted(ROUTER_KINDS)}")


class AppRoutersSpec(RoutersSpec):
    """The app's ``routers`` block: the registry's routers (``RoutersSpec``, one field per served kind) and the
    N-model routers, any number of them, under names of the config's choosing."""

    #: N-model routers by the name they are served as (``router-<name>``); none by default
    multimodel: dict[str, MultiModelRouterSpec] = Field(default_factory=dict)

    def need_embedder(self) -> bool:
        """Whether any enabled router decides from the query embedding (two-model or N-model)."""
        return bool(self.embedding_routers() or self.multimodel)

    @field_validator("multimodel")
    @classmethod
    def _multimodel_names(cls, value: dict[str, MultiModelRouterSpec]) -> dict[str, MultiModelRouterSpec]:
        taken = set(served_entries()) | {"direct"}
        for name in value:
            if not re.match(MULTIMODEL_NAME, name):
                raise ValueError(f"multimodel.{name}: a served router name is lower-case letters and '_' "
                                 "(clients send router-<name>)")
            if name in taken:
                raise ValueError(f"multimodel.{name}: {name!r} is already a two-model router's name; pick another")
        return value


class Limits(StrictModel):
    """Caps on what one request may ask for; requests beyond them get a 400, not a slow answer."""

    max_tokens: int = Field(default=256, ge=1)
    default_max_tokens: int = Field(default=128, ge=1)
    max_n: int = Field(default=4, ge=1)
    max_prompt_chars: int = Field(default=16000, ge=1)
    max_messages: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_batch_route: int = Field(default=256, ge=1, description="queries per /v1/route call")

    @model_validator(mode="after")
    def _default_within_cap(self) -> Limits:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError("default_max_tokens must not exceed max_tokens")
        return self


class Timeouts(StrictModel):
    """Per-call limits; a step over its limit falls back (routers), retries or answers 503 (models)."""

    router_s: float = Field(default=30.0, gt=0, description="one router step (embedder, router model, ...)")
    answer_s: float = Field(default=300.0, gt=0, description="a whole answer, or a stream's first token")
    stream_chunk_s: float = Field(default=60.0, gt=0, description="the gap between two streamed tokens")


#: the key id of requests to a server without API keys
ANONYMOUS_KEY = "anonymous"
#: the id of an unnamed key: ``key-`` and the first 8 hex digits of its sha256
UNNAMED_KEY_ID = r"^key-[0-9a-f]{8}$"


KEY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class NamedKey(StrictModel):
    """One named API key: its secret inline (``key``) or, preferred, from an env var (``key_env``). The name,
    not the secret, is what metrics, logs and budgets use."""

    key: str | None = Field(default=None, min_length=1)
    key_env: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> NamedKey:
        if (self.key is None) == (self.key_env is None):
            raise ValueError("give exactly one of key, key_env")
        return self


class AuthSettings(StrictModel):
    """Bearer API keys. Keys come from ``api_keys`` or the env var named by ``api_keys_env`` (comma-separated),
    each known by the id ``key-<first 8 hex of its sha256>``, and from ``keys`` (name -> key), known by name."""

    api_keys: list[str] = Field(default_factory=list)
    api_keys_env: str | None = "LLMROUTER_API_KEYS"
    keys: dict[str, NamedKey] = Field(default_factory=dict)

    @field_validator("keys")
    @classmethod
    def _names(cls, keys: dict[str, NamedKey]) -> dict[str, NamedKey]:
        for name in keys:
            if not re.match(KEY_NAME, name) or name == ANONYMOUS_KEY:
                raise ValueError(f"key name {name!r}: 1-64 letters, digits, '.', '-', '_' (and not {ANONYMOUS_KEY!r})")
        return keys


class BudgetPolicy(StrictModel):
    """One key's limits; each is off while unset. Spend is counted in fixed windows of ``window_s`` aligned to
    the Unix epoch (86400: a UTC day); the rate limit is a token bucket of ``burst`` requests refilled at
    ``requests_per_minute``."""

    usd_per_window: float | None = Field(default=None, gt=0, description="spend budget per window (USD)")
    window_s: float = Field(default=86400.0, gt=0, description="the budget window (seconds)")
    requests_per_minute: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1, description="bucket size; default: one minute's requests")
    when_exhausted: Literal["small", "refuse"] = Field(
        default="refuse", description="budget spent: answer with the small model, or 429 until the window ends")
    reserve_usd: float | None = Field(
        default=None, ge=0,
        description="held per request while it runs; default: the large model's price of the prompt (chars / 2 "
        "tokens) plus n * max_tokens")


class BudgetSettings(StrictModel):
    """Per-key budgets and rate limits, kept in one detached Ray actor shared by every ingress replica."""

    default: BudgetPolicy | None = Field(default=None, description="for keys not in 'keys' (and 'anonymous')")
    keys: dict[str, BudgetPolicy] = Field(default_factory=dict, description="key name or id -> its limits")
    on_ledger_error: Literal["allow", "refuse"] = Field(
        default="allow", description="ledger unreachable: admit unchecked (logged, counted) or answer 503")
    ledger_timeout_s: float = Field(default=1.0, gt=0, description="one admission call to the ledger")
    reservation_ttl_s: float = Field(default=900.0, gt=0,
                                     description="a reservation never settled (replica died) is dropped after this")
    ledger_name: str = "llmrouter-key-ledger"
    ledger_namespace: str = "llmrouter"
    ledger_on_head: bool = Field(default=True, description="pin the ledger actor to the head node")


class ShareCalibration(StrictModel):
    """Where ``router-X:share=S`` takes its threshold from.

    ``training``: the router's score quantiles on its training queries (in the artifact). ``traffic``: the
    scores of the last ``window`` queries this ingress replica routed with that router, once it has seen
    ``min_scores`` of them (before that, the training quantiles). Traffic keeps the share asked for when the
    app's queries differ from the training data; each replica keeps its own window (a replica sees a
    uniform sample of the traffic, so their thresholds agree up to sampling noise), emptied by a hot swap.
    """

    source: Literal["training", "traffic"] = "training"
    window: int = Field(default=2000, ge=10, le=1_000_000, description="recent scores kept per router")
    min_scores: int = Field(default=200, ge=1, description="traffic scores needed before the window is used")

    @model_validator(mode="after")
    def _min_within_window(self) -> ShareCalibration:
        if self.min_scores > self.window:
            raise ValueError(f"min_scores {self.min_scores} must not exceed window {self.window}")
        return self


class IngressSpec(StrictModel):
    deployment: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(max_ongoing_requests=64, max_queued_requests=256)
    )


class AppConfig(StrictModel):
    """Everything ``serve_app.app:build_app`` needs."""

    models: dict[str, AnswerModelSpec]
    small_model: str = "small"
    large_model: str = "large"
    embedder: EmbedderSpec | None = None
    routers: AppRoutersSpec = Field(default_factory=AppRoutersSpec)
    default_router: str = Field(default="hybrid",
                                description="the router behind model 'router' (clients that name none)")
    fallback_model: str | None = Field(default="large", description="answer model used when a router fails")
    random_large_share: float = Field(default=0.5, ge=0.0, le=1.0)
    share_calibration: ShareCalibration = Field(default_factory=ShareCalibration)
    limits: Limits = Field(default_factory=Limits)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    budgets: BudgetSettings | None = Field(default=None, description="per-key budgets and rate limits; off if unset")
    ingress: IngressSpec = Field(default_factory=IngressSpec)

    @field_validator("models")
    @classmethod
    def _names_are_simple(cls, models: dict[str, AnswerModelSpec]) -> dict[str, AnswerModelSpec]:
        for name in models:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"model key {name!r}: use letters, digits, '-' and '_' only")
        return models

    @model_validator(mode="after")
    def _consistent(self) -> AppConfig:
        for key in ("small_model", "large_model", "fallback_model"):
            name = getattr(self, key)
            if name is not None and name not in self.models:
                raise ValueError(f"{key} {name!r} is not one of models: {sorted(self.models)}")
        for key, spec in self.models.items():
            for other in spec.fallbacks or []:
                if other not in self.models or other == key:
                    raise ValueError(f"models.{key}.fallbacks: {other!r} is not another of models: "
                                     f"{sorted(self.models)}")
        for kind in self.routers.embedding_routers():
            if self.embedder is None:
                raise ValueError(f"routers.{kind} needs an 'embedder' section")
        self._check_multimodel()
        automix = self.routers.automix
        for key in [] if automix is None or automix.tiers is None else automix.tiers:
            if key not in self.models:
                raise ValueError(f"routers.automix.tiers: {key!r} is not one of models: {sorted(self.models)}")
        if self.default_router not in self.enabled_routers():
            raise ValueError(f"default_router {self.default_router!r} is not enabled: {self.enabled_routers()}")
        if self.budgets is not None:
            for name in self.budgets.keys:
                if name not in self.auth.keys and name != ANONYMOUS_KEY and not re.match(UNNAMED_KEY_ID, name):
                    raise ValueError(f"budgets.keys.{name}: not a key of auth.keys ({sorted(self.auth.keys)}), "
                                     f"{ANONYMOUS_KEY!r} or an unnamed key's id key-<8 hex>")
        return self

    def _check_multimodel(self) -> None:
        """Each N-model router maps onto app models; the artifact side is checked in ``resolved``."""
        for name, spec in self.routers.multimodel.items():
            for data_model, key in spec.model_map.items():
                if key not in self.models:
                    raise ValueError(f"routers.multimodel.{name}.model_map.{data_model}: {key!r} is not one of "
                                     f"models: {sorted(self.models)}")

    def enabled_routers(self) -> list[str]:
        enabled = [kind for kind in ROUTER_KINDS if getattr(self.routers, kind) is not None]
        return enabled + list(BASELINE_KINDS) + list(self.routers.multimodel)

    def multimodel_routers(self) -> list[str]:
        """The served N-model routers' names (``router-<name>``)."""
        return list(self.routers.multimodel)

    def fallback_chain(self, model_key: str) -> list[str]:
        """The models tried after ``model_key`` fails, in order: its ``fallbacks``, else every other model."""
        spec = self.models[model_key].fallbacks
        return list(spec) if spec is not None else [key for key in self.models if key != model_key]

    def public_model_names(self) -> dict[str, str]:
        """Served name -> model key (clients may call a model directly by either)."""
        names = {spec.public_name(): key for key, spec in self.models.items()}
        names.update({key: key for key in self.models})
        return names

    # --- path resolution -----------------------------------------------------------------------
    def resolved(self) -> AppConfig:
        """A copy with every local path absolute, after checking each one exists."""
        data = self.model_copy(deep=True)
        for key, spec in data.models.items():
            if spec.engine is not None:  # an endpoint model has nothing local
                spec.engine.model = resolve_model_path(spec.engine.model, f"models.{key}.engine.model")
        if data.embedder is not None:
            data.embedder.engine.model = resolve_model_path(data.embedder.engine.model, "embedder.engine.model")
        for kind in ROUTER_KINDS:
            spec = getattr(data.routers, kind)
            if spec is None:
                continue
            spec.artifact = existing_path(spec.artifact, f"routers.{kind}.artifact")
            if isinstance(spec, GenerativeRouterSpec):
                if spec.policy_map:
                    spec.policy_map = existing_path(spec.policy_map, f"routers.{kind}.policy_map")
                if spec.engine is not None and "model" in spec.engine:
                    spec.engine["model"] = resolve_model_path(spec.engine["model"], f"routers.{kind}.engine.model")
        if data.routers.bert is not None:
            check_artifact_router("bert", Path(data.routers.bert.artifact), expected="bert")
        if data.embedder is not None:
            for kind, spec in data.routers.embedding_routers().items():
                check_artifact_router(kind, Path(spec.artifact))
                check_embedder_matches(kind, Path(spec.artifact), data.embedder.engine)
        for name, mm_spec in data.routers.multimodel.items():
            mm_spec.artifact = existing_path(mm_spec.artifact, f"routers.multimodel.{name}.artifact")
            check_multimodel_artifact(name, mm_spec, data.embedder)
        return data


def check_artifact_router(kind: str, artifact: Path, expected: str | None = None) -> None:
    """The artifact holds the library router the kind serves (an MF artifact under routers.knn would
    otherwise fail only when the replica loads it); ``expected`` defaults to the embedding kind's."""
    key = f"routers.{kind}.artifact"
    expected = expected or EMBEDDING_ROUTER_KINDS[kind].name
    found = artifact_manifest(artifact, key).get("router")
    if found != expected:
        raise ConfigError(f"{key}: {artifact} holds a {found!r} router, not {expected!r}")


def check_embedder_matches(kind: str, artifact: Path, embedder: EmbedderConfig) -> None:
    """An embedding router (the Hybrid MLP, the MF model, a kNN bank) only means something on the
    embeddings it was trained on.

    A Longformer embedder in front of a MiniLM-trained router would either crash on the first request
    (768-d vs 384-d) or, worse, route on garbage; so the embedder's model and pooling must match the
    artifact's record. A different ``max_length`` only changes how long queries are truncated: warned.
    """
    key = f"routers.{kind}.artifact"
    scorer = EMBEDDING_ROUTER_KINDS[kind].scorer
    trained = (artifact_manifest(artifact, key).get("state") or {}).get("embedder")
    if not trained:
        return  # older artifacts did not record their embedder; the dimension check at load time remains
    trained_model = Path(str(trained.get("model", "")).rstrip("/")).name
    served_model = Path(embedder.model.rstrip("/")).name
    problems = []
    if trained_model != served_model:
        problems.append(f"model {served_model!r} but the {scorer} was trained on {trained_model!r} embeddings")
    for field in ("pooling", "normalize"):
        if field in trained and trained[field] != getattr(embedder, field):
            problems.append(f"{field} {getattr(embedder, field)!r} but the {scorer} was trained with "
                            f"{trained[field]!r}")
    if problems:
        raise ConfigError(
            f"embedder.engine does not match {key} ({artifact}): " + "; ".join(problems)
            + ". Serve the embedder the artifact was trained with, or retrain the artifact with this "
            f"embedder: {EMBEDDING_ROUTER_KINDS[kind].retrain}"
        )
    if "max_length" in trained and trained["max_length"] != embedder.max_length:
        LOGGER.warning("embedder max_length %s differs from the %s the %s %s was trained with; long "
                       "queries are truncated differently", embedder.max_length, trained["max_length"], kind, scorer)


def check_multimodel_artifact(name: str, spec: MultiModelRouterSpec, embedder: EmbedderSpec | None) -> None:
    """The artifact is a servable N-model router, every ``model_map`` key is one of its candidates, and the
    app's embedder is the one it was trained with (``check_embedder_matches``, for N-model artifacts)."""
    key = f"routers.multimodel.{name}"
    manifest = artifact_manifest(Path(spec.artifact), f"{key}.artifact")
    router = manifest.get("router")
    if manifest.get("kind") != "multimodel" or router not in multimodel_router_names():
        raise ConfigError(f"{key}.artifact: {spec.artifact} holds a {router!r} router, not an N-model router "
                          f"({', '.join(multimodel_router_names())}); two-model routers go under routers.<kind>")
    if router in UNSERVABLE_MULTIMODEL:
        raise ConfigError(f"{key}.artifact: the {router} router reads the labels; it evaluates, it cannot serve")
    candidates = [str(m) for m in manifest.get("models") or []]
    unknown = sorted(set(spec.model_map) - set(candidates))
    if unknown:
        raise ConfigError(f"{key}.model_map: {unknown} not among the artifact's models {candidates}")
    trained = manifest.get("embedder")
    if not trained:
        return  # a baseline that reads no embedding
    if embedder is None:
        raise ConfigError(f"{key} routes from query embeddings ({trained.get('model')}); it needs an 'embedder' "
                          "section")
    served = embedder.engine
    problems = []
    trained_model = Path(str(trained.get("model", "")).rstrip("/")).name
    if trained_model != Path(served.model.rstrip("/")).name:
        problems.append(f"model {Path(served.model.rstrip('/')).name!r} but the router was trained on "
                        f"{trained_model!r} embeddings")
    for field in ("pooling", "normalize"):
        if field in trained and trained[field] != getattr(served, field):
            problems.append(f"{field} {getattr(served, field)!r} but the router was trained with {trained[field]!r}")
    if problems:
        raise ConfigError(f"embedder.engine does not match {key}.artifact ({spec.artifact}): " + "; ".join(problems)
                          + ". Serve the embedder the artifact was trained with, or retrain it: llmrouter train "
                          f"--pool NAME --router {router} --out DIR")
    if "max_length" in trained and trained["max_length"] != served.max_length:
        LOGGER.warning("embedder max_length %s differs from the %s the %s router was trained with; long queries "
                       "are truncated differently", served.max_length, trained["max_length"], key)


def artifact_manifest(artifact: Path, key: str) -> dict[str, Any]:
    """A router artifact's ``router.json``, or a ConfigError naming ``key``."""
    manifest = artifact / "router.json"
    try:
        return json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {manifest}: {exc}") from exc


def parse_app_config(args: dict[str, Any] | AppConfig) -> AppConfig:
    if isinstance(args, AppConfig):
        return args
    try:
        return AppConfig.model_validate(args or {})
    except ValidationError as exc:
        raise ConfigError(f"invalid serve application config:\n{exc}") from exc
