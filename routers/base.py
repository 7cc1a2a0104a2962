"""What every router is: config, fit, score, route, save/load.

Every router reduces its decision to one number per query, the *small-suitability score*: the higher it
is, the more confident the router is that the cheap model will do. A router routes to the small model iff
``score >= threshold``. That one convention is what lets evaluation sweep any router's threshold into a
cost-quality curve, and lets ``calibrate`` pick the threshold that sends a target share of traffic to the
large model, the same way for every router.

``aroute(query, engines, threshold)`` is the one async routing entry, and the one the Ray Serve app calls:
``engines`` (``routers.engines.Engines``) holds the embedder and models by role, local engines in a script
and thin adapters over deployment handles in the app, so a decision served over HTTP is the decision the
library makes, by the same code. ``aroute_many`` decides a batch with one engine call per step.

``route_batch(batch=..., task_name=...)`` (the seeds' call) routes many queries at once; routers whose
engines batch (Hybrid's embedder, AutoMix's and the causal-LM router's generate calls) override
``route_queries`` to make one engine call per step for the whole batch, and give the same results as
``route_single`` on each query.

Score-based routers also keep a summary of their scores on their own training queries,
``reference_scores()`` (101 quantiles, saved in ``router.json``), so a target share of large-model traffic
can be turned into a threshold at serving time without the training data
(``threshold_for_large_share(router.reference_scores(), share)``).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import Field, ValidationError

from routers.data import LLMCandidate, ModelPair, RoutingDataset, estimate_tokens, resolve_pair
from routers.engines import Embedder, Engines, GenerationResult, Generator, GeneratorConfig, Messages, SamplingParams
from routers.errors import ArtifactError, ConfigError, NotFittedError
from routers.strict import StrictModel

if TYPE_CHECKING:
    from routers.evaluation.metrics import CostModel
    from routers.evaluation.quality_target import QualityCalibration, QualityThreshold

ARTIFACT_FILE = "router.json"
ARTIFACT_FORMAT_VERSION = 1
#: quantiles of the training scores kept in ``router.json`` (0th, 1st, ..., 100th percentile)
REFERENCE_QUANTILES = 101

QueryLike = str | Mapping[str, Any]
T = TypeVar("T")
#: one threshold for every query of a batch, or one per query (a Serve batch mixes requests)
Thresholds = float | None | Sequence[float | None]


class RouterConfig(StrictModel):
    """Settings shared by every router. Subclasses add their own; unknown keys are rejected."""

    router_threshold: float | None = Field(
        default=None, description="route to the small model iff score >= threshold; None = the router's default"
    )
    small_model: str | None = Field(default=None, description="name in llm_data; default: the cheapest")
    large_model: str | None = Field(default=None, description="name in llm_data; default: the dearest")
    seed: int = 0


class ModelUsage(StrictModel):
    """Tokens one model call made while deciding (AutoMix's small-model answer and verification)."""

    role: str
    purpose: Literal["answer", "verification"]
    prompt_tokens: int
    completion_tokens: int


class CandidateEstimate(StrictModel):
    """What an N-model router expects of one candidate for one query (``routers.selection``)."""

    model: str
    quality: float
    cost: float


class RouteDecision(StrictModel):
    """One routing decision: the typed result every router returns, from ``aroute`` to the HTTP response.

    ``to_dict`` gives the seeds' result keys. ``answer`` is an answer the router produced while deciding
    and keeps (AutoMix's verified small-model answer), ``usage`` the model calls deciding cost.
    N-model routers also fill ``candidates`` (every candidate's predicted quality and cost) and ``rule``
    (the selection rule that chose, e.g. ``cost=500``); two-model routers leave them empty.
    """

    query: str
    model_name: str
    use_large: bool | None = None
    score: float | None = None
    threshold: float | None = None
    reason: str
    cost: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    answer: GenerationResult | None = None
    usage: list[ModelUsage] = Field(default_factory=list)
    candidates: list[CandidateEstimate] = Field(default_factory=list)
    rule: str | None = None
    #: the serving app's model key, where the router names one itself (a policy map sending a label to any of
    #: the app's N models); None: the app maps the decision's small/large side onto its pair
    app_model: str | None = None

    def to_dict(self, score_key: str = "router_score") -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query, "model_name": self.model_name}
        if self.score is not None:
            out[score_key] = self.score
        if self.threshold is not None and math.isfinite(self.threshold):  # -inf: a rule that forces the choice
            out["threshold"] = self.threshold
        if self.use_large is not None:
            out["use_large"] = self.use_large
        out["cost"] = self.cost
        out["reason"] = self.reason
        if self.candidates:
            out["candidates"] = [c.model_dump() for c in self.candidates]
        if self.rule is not None:
            out["rule"] = self.rule
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class RouteContext:
    """The request around a query, for routers that answer while they decide (AutoMix answers the chat
    as the user sent it, with the user's sampling settings)."""

    messages: Messages = field(default_factory=list)
    params: SamplingParams | None = None


def goes_large(score: float, threshold: float) -> bool:
    """The two-model rule: the large model unless the score reaches the threshold (NaN goes large)."""
    return not score >= threshold


def per_query(thresholds: Thresholds, count: int) -> list[float | None]:
    """``thresholds`` as one value (or None) per query."""
    if thresholds is None or isinstance(thresholds, (int, float)):
        return [None if thresholds is None else float(thresholds)] * count
    values = list(thresholds)
    if len(values) != count:
        raise ValueError(f"{len(values)} thresholds for {count} queries")
    return values


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an ``aroute`` coroutine from synchronous code (``route_queries``), also under a running loop
    (a notebook): then in a thread of its own, since a loop cannot wait on itself."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(coroutine))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="llmrouter-run-sync")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def query_text(query: QueryLike) -> str:
    if isinstance(query, str):
        text = query
    elif isinstance(query, Mapping) and isinstance(query.get("query"), str):
        text = query["query"]
    else:
        raise TypeError("a query is a string or a dict with a string 'query' field")
    if not text.strip():
        raise ValueError("query is empty")
    return text


class Router(ABC):
    """Base class of every router. Subclasses set ``name``, ``Config`` and implement the abstract steps."""

    name: ClassVar[str]
    Config: ClassVar[type[RouterConfig]] = RouterConfig
    score_key: ClassVar[str] = "router_score"
    default_threshold: ClassVar[float] = 0.5
    #: engines ``route_single`` needs: "embedder", "small", "large", "router"
    engine_roles: ClassVar[frozenset[str]] = frozenset()
    #: whether the router learns anything (baselines like ``smallest_llm`` do not)
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        config: RouterConfig | Mapping[str, Any] | None = None,
        llm_data: Mapping[str, LLMCandidate] | None = None,
    ) -> None:
        self.config = self.validate_config(config)
        self.llm_data: dict[str, LLMCandidate] = dict(llm_data or {})
        self.pair: ModelPair | None = None
        if self.config.small_model and self.config.large_model:
            self.pair = ModelPair(self.config.small_model, self.config.large_model)
        self.embedder: Embedder | None = None
        self.generators: dict[str, Generator] = {}
        self.fitted = not self.trainable
        #: quantiles of the router's scores on its training queries (None: not recorded)
        self.reference_quantiles: np.ndarray | None = None
        self.reference_count = 0
        #: labelled held-out evidence for quality-targeted thresholds (None: not calibrated)
        self.quality_calibration: QualityCalibration | None = None

    # --- config --------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config: RouterConfig | Mapping[str, Any] | None) -> RouterConfig:
        if isinstance(config, cls.Config):
            return config
        if isinstance(config, RouterConfig):
            config = config.model_dump(exclude_unset=True)
        try:
            return cls.Config.model_validate(dict(config or {}))
        except ValidationError as exc:
            raise ConfigError(f"invalid config for router {cls.name!r}:\n{exc}") from exc

    @property
    def threshold(self) -> float:
        t = self.config.router_threshold
        return self.default_threshold if t is None else t

    def with_threshold(self, threshold: float) -> Router:
        """Set the routing threshold in place (e.g. from ``calibrate``); returns self."""
        self.config = self.config.model_copy(update={"router_threshold": float(threshold)})
        return self

    # --- engines -------------------------------------------------------------------------------
    def bind_engines(
        self, embedder: Embedder | None = None, generators: Mapping[str, Generator] | None = None
    ) -> Router:
        """Attach local engines so ``route_single`` can run the whole pipeline in-process."""
        if embedder is not None:
            self.embedder = embedder
        if generators:
            self.generators.update(generators)
        return self

    def training_engine_roles(self) -> frozenset[str]:
        """Engines ``fit`` needs (Hybrid: the embedder)."""
        return frozenset()

    def evaluation_engine_roles(self) -> frozenset[str]:
        """Engines ``dataset_scores`` needs."""
        return self.training_engine_roles()

    def route_only_engine_roles(self) -> frozenset[str]:
        """Engines a decision without the final answer needs (AutoMix still needs the small model)."""
        return self.engine_roles

    def engine_device(self) -> str | None:
        """Device the router's config asks its engines to run on (AutoMix's ``device``); None = theirs."""
        return None

    def default_engine_config(self, role: str) -> GeneratorConfig | None:
        """An engine the router can build from its own artifact (a fine-tuned router model)."""
        return None

    def generator_or_default(self, role: str) -> Generator:
        """The bound ``role`` engine, or one built from the router's own artifact (``default_engine_config``)."""
        if role not in self.generators:
            config = self.default_engine_config(role)
            if config is None:
                raise ConfigError(f"router {self.name!r} has no {role!r} model: fit() or load() it, or bind one")
            from routers.engines import build_generator

            self.generators[role] = build_generator(config)
        return self.generators[role]

    def generator(self, role: str) -> Generator:
        if role not in self.generators:
            raise ConfigError(f"router {self.name!r} needs a {role!r} generator; bind one with bind_engines()")
        return self.generators[role]

    # --- models --------------------------------------------------------------------------------
    def resolve_pair(self, data: RoutingDataset | None = None) -> ModelPair:
        available = data.models if data is not None else list(self.llm_data)
        if not self.llm_data and data is not None and data.llm_data:
            # Keep the training data's prices so a saved router can still price its decisions.
            self.llm_data = dict(data.llm_data)
        llm_data = self.llm_data
        self.pair = resolve_pair(llm_data, available, self.config.small_model, self.config.large_model)
        return self.pair

    def require_pair(self) -> ModelPair:
        if self.pair is None:
            if len(self.llm_data) >= 2:
                return self.resolve_pair()
            raise NotFittedError(f"router {self.name!r} has no small/large model pair; fit or load it first")
        return self.pair

    def estimate_cost(self, model: str, query: str) -> float | None:
        """Rough USD cost of sending ``query`` to ``model`` (answer assumed as long as the query)."""
        candidate = self.llm_data.get(model)
        if candidate is None:
            return None
        tokens = estimate_tokens(query)
        return candidate.call_cost(tokens, tokens)

    def require_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"router {self.name!r} is not fitted; call fit() or load() first")

    # --- the router's job ----------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        """Learn from routing data; returns training metrics."""

    @abstractmethod
    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        """Small-suitability score of every query in ``data`` (for evaluation and calibration)."""

    @abstractmethod
    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        """Decide for every query with ``engines``, one engine call per step for the batch; ``thresholds``
        (one, or one per query; None: the router's own) as in ``decide``."""

    async def aroute(self, query: str, engines: Engines, threshold: float | None = None,
                     context: RouteContext | None = None) -> RouteDecision:
        """Decide for one query with ``engines``: the entry the Serve app calls for every request.
        ``context`` matters only to routers that answer while they decide (AutoMix)."""
        return (await self.aroute_many([query], engines, threshold))[0]

    def local_engines(self) -> Engines:
        """The engines bound with ``bind_engines``, for ``aroute`` from synchronous code."""
        return Engines(embedder=self.embedder, models=dict(self.generators))

    def route_single(self, query: QueryLike) -> dict[str, Any]:
        """Route one query with the bound engines; returns the seeds' result dict."""
        return self.route_queries([query])[0]

    def route_queries(self, queries: Sequence[QueryLike]) -> list[dict[str, Any]]:
        """One result per query, as ``route_single`` gives it: ``aroute_many`` over the bound engines."""
        texts = [query_text(q) for q in queries]
        if not texts:
            return []
        decisions = run_sync(self.aroute_many(texts, self.local_engines()))
        return [decision.to_dict(self.score_key) for decision in decisions]

    def route_batch(self, batch: Sequence[QueryLike], task_name: str | None = None) -> list[dict[str, Any]]:
        """Route a batch (the seeds' ``route_batch(batch=queries, task_name="general")``).

        Each result is ``route_single``'s for that query. ``task_name`` labels results whose query dict
        carries none (a query's own ``task_name`` wins); it does not change the decision.
        """
        queries = list(batch)
        results = self.route_queries(queries) if queries else []
        for query, result in zip(queries, results, strict=True):
            label = query.get("task_name") if isinstance(query, Mapping) else None
            if label is None:
                label = task_name
            if label is not None:
                result["task_name"] = label
        return results

    def dataset_decisions(self, data: RoutingDataset) -> np.ndarray | None:
        """Per-query use_large decisions when they are not ``score < threshold`` (generative routers)."""
        return None

    def cost_model(self, data: RoutingDataset) -> CostModel:
        """Per-query costs of the two paths on ``data``: USD from ``llm_data`` prices when known.

        Without prices, relative units (small 1, large 50, the AutoMix paper's ratio) so curves still plot.
        """
        from routers.evaluation.metrics import CostModel

        pair = self.require_pair()
        llm_data = self.llm_data or data.llm_data
        if pair.small in llm_data and pair.large in llm_data:
            priced = RoutingDataset(data.examples, llm_data)
            return CostModel(small=priced.call_costs(pair.small), large=priced.call_costs(pair.large))
        n = len(data)
        return CostModel(small=np.ones(n), large=np.full(n, 50.0))

    def decide(self, query: str, score: float, threshold: float | None = None, **extra: Any) -> RouteDecision:
        """The shared two-model rule: small iff score >= threshold."""
        pair = self.require_pair()
        t = self.threshold if threshold is None else threshold
        use_large = goes_large(score, t)
        model = pair.name_for(use_large)
        relation = "<" if use_large else ">="
        return RouteDecision(
            query=query,
            model_name=model,
            use_large=use_large,
            score=float(score),
            threshold=float(t),
            reason=f"{self.score_key} {score:.4f} {relation} threshold {t:.4f} -> "
                   f"{'large' if use_large else 'small'} model",
            cost=self.estimate_cost(model, query),
            extra=extra,
        )

    # --- the score distribution on training data ------------------------------------------------
    def record_reference_scores(self, scores: np.ndarray | Sequence[float]) -> None:
        """Keep 101 quantiles of ``scores`` (the router's scores on its training queries) for the artifact.

        Quantiles, not the scores: ``router.json`` stays small however large the training set, and a
        share-to-threshold lookup needs only the distribution.
        """
        values = np.asarray(scores, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if len(values) == 0:
            self.reference_quantiles, self.reference_count = None, 0
            return
        self.reference_quantiles = np.quantile(values, np.linspace(0.0, 1.0, REFERENCE_QUANTILES))
        self.reference_count = len(values)

    def reference_scores(self) -> np.ndarray | None:
        """The router's training-score distribution as quantiles (0th..100th percentile), or None when the
        artifact predates them or the router has no scores (baselines).

        The array is a ``ScoreQuantiles`` (a numpy array that knows it holds quantiles), so
        ``threshold_for_large_share(router.reference_scores(), share)`` interpolates between percentiles
        instead of treating the 101 values as 101 queries.
        """
        if self.reference_quantiles is None:
            return None
        from routers.evaluation.quantiles import ScoreQuantiles

        return ScoreQuantiles.from_values(self.reference_quantiles)

    # --- quality-targeted thresholds -------------------------------------------------------------
    def threshold_for_quality(self, target_ratio: float, confidence: float | None = None) -> QualityThreshold:
        """The cheapest threshold whose bootstrap lower bound of quality / always-large quality on the
        artifact's calibration queries is at least ``target_ratio`` (``routers.evaluation.quality_target``)."""
        if self.quality_calibration is None:
            raise ConfigError(f"router {self.name!r} has no quality calibration; add one with "
                              "`llmrouter calibrate-quality` (labelled held-out queries or cross-fitting)")
        if confidence is None:
            return self.quality_calibration.threshold(target_ratio)
        return self.quality_calibration.threshold(target_ratio, confidence)

    # --- artifacts -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-safe learned state (thresholds, policies, file names of tensors)."""
        return {}

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        """Restore what ``state`` + ``save_tensors`` wrote."""

    def save_tensors(self, directory: Path) -> None:
        """Write learned tensors (safetensors only)."""

    def save(self, directory: str | Path) -> Path:
        self.require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_tensors(directory)
        payload = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "router": self.name,
            "config": self.config.model_dump(mode="json"),
            "pair": None if self.pair is None else {"small": self.pair.small, "large": self.pair.large},
            "llm_data": {k: v.model_dump(mode="json") for k, v in self.llm_data.items()},
            "state": self.state(),
        }
        if self.reference_quantiles is not None:
            payload["reference_scores"] = {
                "quantiles": [float(q) for q in self.reference_quantiles],
                "count": self.reference_count,
            }
        if self.quality_calibration is not None:
            self.quality_calibration.save(directory)
            payload["quality_calibration"] = self.quality_calibration.manifest()
        (directory / ARTIFACT_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> Router:
        """Load a saved router. Reads JSON and safetensors only: loading can never run code."""
        directory = Path(directory)
        payload = read_artifact_manifest(directory)
        if payload["router"] != cls.name:
            raise ArtifactError(f"{directory} holds a {payload['router']!r} router, not {cls.name!r}")
        config = {**payload["config"], **overrides}
        llm_data = {k: LLMCandidate.model_validate(v) for k, v in payload.get("llm_data", {}).items()}
        router = cls(config, llm_data)
        if payload.get("pair"):
            router.pair = ModelPair(**payload["pair"])
        try:
            router.load_state(payload.get("state", {}), directory)
            router.load_reference_scores(payload.get("reference_scores"))
            router.load_quality_calibration(directory, payload.get("quality_calibration"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{directory}: corrupt router state: {exc}") from exc
        router.fitted = True
        return router

    def load_reference_scores(self, saved: Mapping[str, Any] | None) -> None:
        """Restore the saved training-score quantiles; artifacts written before them have none (None)."""
        if saved is None:
            self.reference_quantiles, self.reference_count = None, 0
            return
        quantiles = np.asarray(saved["quantiles"], dtype=np.float64)
        if quantiles.ndim != 1 or len(quantiles) < 2 or not np.all(np.diff(quantiles) >= 0):
            raise ValueError("reference_scores.quantiles must be a non-decreasing list of at least 2 numbers")
        self.reference_quantiles, self.reference_count = quantiles, int(saved.get("count", 0))


    def load_quality_calibration(self, directory: Path, manifest: Mapping[str, Any] | None) -> None:
        """Restore the calibration queries ``save`` wrote; artifacts without one have none (None)."""
        if manifest is None:
            self.quality_calibration = None
            return
        from routers.evaluation.quality_target import QualityCalibration

        self.quality_calibration = QualityCalibration.load(directory, dict(manifest))


def read_artifact_manifest(directory: Path) -> dict[str, Any]:
    manifest = directory / ARTIFACT_FILE
    if not manifest.exists():
        raise ArtifactError(f"{directory} has no {ARTIFACT_FILE}; is it a saved router directory?")
    try:
        payload = json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(payload, dict) or "router" not in payload or "config" not in payload:
        raise ArtifactError(f"{manifest}: missing 'router' or 'config'")
    if payload.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(f"{manifest}: unsupported format_version {payload.get('format_version')!r}")
    return payload
