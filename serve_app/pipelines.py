"""The routing pipelines: every request's decision is one call into the library's router, over engines that
are adapters on the app's deployment handles (``serve_app.adapters``).

- embedding routers (Hybrid, kNN, MF, SW ranking, Blend): the library router, loaded in the ingress,
  embeds through the Embedder deployment and scores the vector here;
- AutoMix: the library router, in the ingress, runs its cascade on the small answer model's deployment;
- causal-LM, policy and BERT routers: their own deployments run the library router with its model;
- smallest / largest / random: the library's baselines;
- N-model routers (``routers.multimodel``): the library router, in the ingress, predicts every mapped
  candidate's quality from the query embedding and a selection rule picks an app model
  (``serve_app.multimodel``).

Which of these a router kind is comes from the registry (``routers.registry``). The decision becomes a
``serve_app.routing.Routing``. Failure policy: any failure inside a router step (a remote call, a timeout,
the library raising on what came back, e.g. an embedding of the wrong dimension) is a ``RouterUnavailable``;
the ingress answers with the fallback model and says so (``fallback: true``).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Protocol

import numpy as np

from routers.automix.router import AutomixRouter
from routers.base import RouteContext, RouteDecision, Router, RouterConfig, Thresholds, per_query
from routers.baselines import LargestLLMRouter, RandomRouter, SmallestLLMRouter
from routers.data.dataset import estimate_tokens
from routers.embedding import EmbeddingRouter
from routers.engines import AsyncEmbedder, Engines, SamplingParams, build_embedder
from routers.engines.batching import BatchingEmbedder
from routers.errors import ConfigError
from routers.evaluation.calibrate import threshold_for_large_share
from routers.evaluation.quality_target import QualityThreshold
from routers.evaluation.quantiles import ScoreQuantiles, ScoreWindow
from routers.nmodel.pair import pair_candidates, priced_thresholds
from routers.registry import router_class, served_entry
from routers.selection import BudgetRule, CostRule, parse_rule
from serve_app.adapters import (
    AnswerModelChat,
    DeploymentEmbedder,
    DeploymentScorer,
    HostedRouter,
    RouterUnavailable,
    router_step,
)
from serve_app.answer_clients import AnswerClient
from serve_app.answers import RETRY_AFTER
from serve_app.api import ApiError, RouterChoice
from serve_app.config import ROUTER_KINDS, AppConfig, EmbeddingRouterSpec
from serve_app.multimodel import HostedLM, ServedMultiModelRouter, call_costs, load_multimodel_routers
from serve_app.routing import Routing, ThresholdChoice

Messages = list[dict[str, str]]


class DecidesQueries(Protocol):
    """A library router, or a ``HostedRouter`` standing in for one that lives in its own deployment."""

    async def aroute(self, query: str, engines: Engines, threshold: float | None = None,
                     context: RouteContext | None = None) -> RouteDecision: ...


def router_unavailable(kind: str, why: str) -> ApiError:
    """The 503 for a router that failed where no fallback model can answer instead."""
    return ApiError(503, f"router {kind!r} is unavailable: {why}", kind="server_error",
                    code="router_unavailable", headers=dict(RETRY_AFTER))


def not_enabled(kind: str) -> ApiError:
    return ApiError(404, f"router {kind!r} is not enabled", param="model", code="model_not_found")


def load_embedding_router(kind: str, spec: EmbeddingRouterSpec) -> EmbeddingRouter:
    """The library router of an embedding kind, loaded from its artifact.

    It scores in the ingress process (a few matrix products on one vector): only the embedder is remote.
    """
    router = router_class(served_entry(kind).name).load(spec.artifact)
    if not isinstance(router, EmbeddingRouter):  # a registry entry that stopped deciding from embeddings
        raise ConfigError(f"routers.{kind}: {type(router).__name__} does not route from query embeddings")
    return router


def baseline_routers(config: AppConfig) -> dict[str, Router]:
    """The library's baselines over the app's two answer models (their keys are the pair's names)."""
    pair = {"small_model": config.small_model, "large_model": config.large_model}
    rng_seed = random.SystemRandom().randrange(2**32)  # replicas must not all draw the same sequence
    return {"smallest": SmallestLLMRouter(RouterConfig(**pair)),
            "largest": LargestLLMRouter(RouterConfig(**pair)),
            "random": RandomRouter({**pair, "large_share": config.random_large_share, "seed": rng_seed})}


def local_embedder(config: AppConfig) -> AsyncEmbedder | None:
    """The ingress's own embedder where the config places it here and a router decides from embeddings."""
    spec = config.embedder
    if spec is None or spec.placement != "ingress" or not config.routers.need_embedder():
        return None
    return BatchingEmbedder(build_embedder(spec.engine), spec.batching.max_batch_size, spec.batching.cache_size)


class Pipelines:
    """The routers of the app (library routers in the ingress, stand-ins for those in deployments), the
    engines they decide with, and the threshold arguments of the ``model`` field."""

    def __init__(self, config: AppConfig, answer: dict[str, AnswerClient], embedder: Any | None, causal: Any | None,
                 policy: Any | None, bert: Any | None = None, router_lms: dict[str, Any] | None = None) -> None:
        self.config = config
        self.answer = answer
        self.embedder = embedder
        #: the embedder in this process (``embedder.placement: ingress``), built once per replica
        self.local_embedder = local_embedder(config)
        self.causal = causal
        self.policy = policy
        self.bert = bert
        #: name -> the LM of an N-model router that has one (its RouterLM deployment), with the start's artifact
        self.router_lms = {name: HostedLM(DeploymentScorer(handle, config.timeouts.router_s, f"{name} router LM"),
                                          config.routers.multimodel[name].artifact)
                           for name, handle in (router_lms or {}).items()}
        #: kind -> library router, for the enabled embedding kinds
        self.embedding_routers: dict[str, EmbeddingRouter] = {}
        self.automix_router: Router | None = None
        self.baselines: dict[str, Router] = {}
        self.thresholds: dict[str, float | None] = {}
        self.reference: dict[str, Any | None] = {}
        #: kind -> the scores of its recent decisions (``share_calibration.source: traffic``)
        self.traffic: dict[str, ScoreWindow] = {}
        #: name -> N-model router over the app's models (``routers.multimodel``)
        self.multimodel: dict[str, ServedMultiModelRouter] = {}
        self.load_routers(config)

    # --- artifacts (hot-swappable) --------------------------------------------------------------
    def load_routers(self, config: AppConfig) -> None:
        """Load every artifact first, then swap all at once: a bad artifact leaves the old routers serving."""
        routers = config.routers
        embedding = {kind: load_embedding_router(kind, spec) for kind, spec in routers.embedding_routers().items()}
        if config.share_calibration.source == "traffic":  # the traffic window needs every query's full score
            embedding = {kind: router.with_exact_scores() for kind, router in embedding.items()}
        automix = None
        if routers.automix is not None:
            automix = AutomixRouter.load(routers.automix.artifact)
            if routers.automix.tiers is not None:  # the tiers are app model keys, which engines() names roles
                automix.with_tiers(routers.automix.tiers)
        thresholds = {kind: None if getattr(routers, kind) is None else getattr(routers, kind).threshold
                      for kind in ROUTER_KINDS}
        multimodel = load_multimodel_routers(config, self.router_lms)
        self.embedding_routers, self.automix_router = embedding, automix
        self.multimodel = multimodel
        self.baselines = baseline_routers(config)
        self.thresholds = thresholds
        self.reference = {}
        self.traffic = {}  # scores of the old routers say nothing about the new ones
        self.config = config

    # --- the routers and their engines -----------------------------------------------------------
    def library_router(self, kind: str) -> Router | None:
        """The library router deciding in this process for ``kind`` (None: it lives in a deployment, or is off)."""
        if kind == "automix":
            return self.automix_router
        return self.embedding_routers.get(kind) or self.baselines.get(kind)

    def router_handle(self, kind: str) -> Any | None:
        return {"causal": self.causal, "policy": self.policy, "bert": self.bert}.get(kind)

    def router_for(self, kind: str) -> DecidesQueries:
        try:
            placement = served_entry(kind).placement
        except ConfigError:
            raise not_enabled(kind) from None
        if placement == "deployment":
            handle = self.router_handle(kind)
            if handle is None:
                raise not_enabled(kind)
            return HostedRouter(kind, handle, self.config.timeouts.router_s)
        router = self.library_router(kind)
        if router is None or (placement == "embedding" and not self.has_embedder):
            raise not_enabled(kind)
        return router

    @property
    def has_embedder(self) -> bool:
        return self.local_embedder is not None or self.embedder is not None

    def engines(self) -> Engines:
        """The deployments as the library's engines: the embedder, and the answer models by role."""
        timeouts = self.config.timeouts
        embedder: AsyncEmbedder | None = self.local_embedder
        if embedder is None and self.embedder is not None:
            embedder = DeploymentEmbedder(self.embedder, timeouts.router_s)
        models = {role: AnswerModelChat(self.answer[key], timeouts.answer_s, "AutoMix small-model step")
                  for role, key in self.role_keys().items() if key in self.answer}
        return Engines(embedder=embedder, models=models)

    def role_keys(self) -> dict[str, str]:
        """Engine role -> app model key: small and large, and AutoMix's tiers under their own keys (a tier named
        like a role is that model: with tiers, AutoMix calls only its tiers)."""
        roles = {"small": self.config.small_model, "large": self.config.large_model}
        automix = self.config.routers.automix
        return roles | ({} if automix is None or automix.tiers is None else {key: key for key in automix.tiers})

    @staticmethod
    def step_name(kind: str) -> str:
        """How a failed decision is reported: 'hybrid MLP failed: ...', 'AutoMix decision failed: ...'."""
        entry = served_entry(kind)
        if entry.placement == "embedding":
            return f"{kind} {entry.scorer}"
        if entry.placement == "ingress":
            return entry.scorer
        return f"{kind} router"

    # --- routing ------------------------------------------------------------------------------------
    async def route(self, kind: str, query: str, messages: Messages, params: SamplingParams,
                    threshold: float | None = None, rule: str | None = None) -> Routing:
        """The router's decision for one request, as the answer model to call (``rule``: an N-model router's
        selection rule from the ``model`` field)."""
        if kind in self.multimodel:
            return (await self.route_multimodel(kind, [query], rule))[0]
        router = self.router_for(kind)
        context = RouteContext(messages=messages, params=params)
        priced = None if rule is None else self.priced_pair(rule, [query], params.max_tokens)
        chosen = self.threshold_or_configured(kind, threshold) if priced is None else float(priced[1][0])
        with router_step(self.step_name(kind)):
            decision = await router.aroute(query, self.engines(), chosen, context)
        if priced is not None:
            decision = self.with_pair_candidates(decision, priced[0][0], rule)
        routing = self.routing_for(kind, decision)
        self.record_score(kind, routing)
        return routing

    async def route_only(self, kind: str, queries: list[str], threshold: float | None,
                         rule: str | None = None) -> list[dict[str, Any]]:
        """Decisions without answers. A library router decides the batch in one call (an embedding router:
        one embedder call for all queries)."""
        if kind in self.multimodel:
            routings = await self.route_multimodel(kind, queries, rule)
            return [self.route_item(q, r) for q, r in zip(queries, routings, strict=True)]
        router = self.router_for(kind)
        priced = None if rule is None else self.priced_pair(rule, queries, self.config.limits.default_max_tokens)
        chosen: Thresholds = (self.threshold_or_configured(kind, threshold) if priced is None
                              else [float(t) for t in priced[1]])
        engines = self.engines()
        with router_step(self.step_name(kind)):
            if isinstance(router, Router):
                decisions = await router.aroute_many(queries, engines, chosen)
            else:
                decisions = await asyncio.gather(*[router.aroute(q, engines, t) for q, t
                                                   in zip(queries, per_query(chosen, len(queries)), strict=True)])
        if priced is not None:
            decisions = [self.with_pair_candidates(d, row, rule) for d, row in zip(decisions, priced[0], strict=True)]
        routings = [self.routing_for(kind, d) for d in decisions]
        for routing in routings:
            self.record_score(kind, routing)
        return [self.route_item(q, r) for q, r in zip(queries, routings, strict=True)]

    # --- cost= and budget= on a two-model router (routers.nmodel.pair) ---------------------------------------
    def pair_costs(self, queries: list[str], completion_tokens: int) -> np.ndarray:
        """USD per call of the app's small and large models for each query, (n, 2), at their configured prices:
        the query's estimated tokens in, ``completion_tokens`` out."""
        specs = [self.config.models[self.config.small_model], self.config.models[self.config.large_model]]
        return call_costs(specs, np.array([estimate_tokens(q) for q in queries]), completion_tokens)

    def priced_pair(self, rule: str, queries: list[str], completion_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's (c_small, c_large) and the threshold ``rule`` (cost= / budget=, checked by the API)
        stands for there."""
        parsed = parse_rule(rule)
        if not isinstance(parsed, (CostRule, BudgetRule)):
            raise ApiError(400, f"two-model routers take cost= or budget= as a rule, not {rule!r}", param="model")
        costs = self.pair_costs(queries, completion_tokens)
        return costs, priced_thresholds(parsed, costs)

    def with_pair_candidates(self, decision: RouteDecision, costs: np.ndarray, rule: str) -> RouteDecision:
        """A two-model decision as the N-model routing object reports it: both app models as candidates with
        their predicted quality (s, 1) and cost, and the rule."""
        keys = (self.config.small_model, self.config.large_model)
        parsed = parse_rule(rule)
        extra = {**decision.extra, "candidate_models": {key: {"model": self.served_name(key)} for key in keys}}
        if isinstance(parsed, CostRule):
            extra["cost_weight"] = parsed.weight
        return decision.model_copy(update={"candidates": pair_candidates(decision, keys, costs),
                                           "rule": parsed.text(), "extra": extra})

    # --- N-model routers ------------------------------------------------------------------------------------
    async def route_multimodel(self, kind: str, queries: list[str], rule_text: str | None) -> list[Routing]:
        """An N-model router's decisions: one embedder call for the batch, every mapped candidate's predicted
        quality and app-priced cost, the rule's choice. A rule the artifact cannot resolve is a 400; a failure
        while deciding a ``RouterUnavailable`` (the fallback model answers)."""
        served = self.multimodel[kind]
        try:
            rule = served.rule(rule_text)
            weight = await served.weight(rule)
        except ConfigError as exc:
            raise ApiError(400, f"router {kind!r}: {exc}", param="model") from None
        with router_step(served.step):
            decisions = await served.decide(queries, self.engines(), rule, weight)
        return [self.multimodel_routing(kind, served, d) for d in decisions]

    def multimodel_routing(self, kind: str, served: ServedMultiModelRouter, decision: RouteDecision) -> Routing:
        model_key = served.model_key(decision)
        routing = Routing.decided(kind, decision, model_key, self.served_name(model_key), self.role_keys())
        routing.use_large = model_key == self.config.large_model  # as for a model asked by name
        return routing

    def threshold_or_configured(self, kind: str, threshold: float | None) -> float | None:
        return self.thresholds.get(kind) if threshold is None else threshold

    def routing_for(self, kind: str, decision: RouteDecision) -> Routing:
        if decision.app_model is None:
            model_key = self.config.large_model if decision.use_large else self.config.small_model
            return Routing.decided(kind, decision, model_key, self.served_name(model_key), self.role_keys())
        # the router named one of the app's models itself (a policy map over N models)
        if decision.app_model not in self.config.models:
            raise RouterUnavailable(f"{kind} router chose {decision.app_model!r}, which this app does not serve")
        routing = Routing.decided(kind, decision, decision.app_model, self.served_name(decision.app_model),
                                  self.role_keys())
        routing.use_large = decision.app_model == self.config.large_model
        return routing

    def served_name(self, model_key: str) -> str:
        return self.config.models[model_key].public_name()

    def route_item(self, query: str, routing: Routing) -> dict[str, Any]:
        item = {"query": query, "model": self.served_name(routing.model_key), "model_key": routing.model_key,
                **routing.info}
        if routing.answer is not None:
            item["small_answer"] = routing.answer.text
        return item

    # --- threshold arguments of the model field: share=, quality= ------------------------------------
    async def resolve_threshold(self, choice: RouterChoice) -> ThresholdChoice:
        """The threshold ``router-X:T`` / ``:share=S`` / ``:quality=Q`` asks for, and how it was chosen."""
        if choice.large_share is not None:
            threshold = await self.threshold_for_share(choice.kind, choice.large_share)
            return ThresholdChoice(value=threshold, large_share=choice.large_share,
                                   threshold_source=self.share_source(choice.kind))
        if choice.quality_target is not None:
            chosen, source = await self.threshold_for_quality(choice.kind, choice.quality_target)
            return ThresholdChoice(value=chosen.threshold, quality_target=choice.quality_target,
                                   quality_lower_bound=chosen.ratio_lower_bound, quality_target_met=chosen.met,
                                   calibration_large_share=chosen.large_share,
                                   threshold_source=f"quality calibration ({source})")
        return ThresholdChoice(value=choice.threshold, routellm_threshold=choice.routellm_threshold)

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
        score = routing.score
        if self.config.share_calibration.source != "traffic" or score is None or routing.fallback:
            return
        if kind not in self.traffic:
            self.traffic[kind] = ScoreWindow(self.config.share_calibration.window)
        self.traffic[kind].add(float(score))

    async def threshold_for_quality(self, kind: str, target: float) -> tuple[QualityThreshold, str]:
        """The quality-targeted threshold from the router's calibration queries, and where they came from."""
        router = self.library_router(kind)
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
        ``threshold_for_large_share`` interpolates instead of counting. A router in its own deployment may
        be hot-swapped there, so its quantiles are asked for each time (no cache).
        """
        handle = self.router_handle(kind)
        if handle is not None:
            hosted = HostedRouter(kind, handle, self.config.timeouts.router_s)
            return await self.deployment_reference_scores(kind, hosted)
        if kind not in self.reference:
            router = self.library_router(kind)
            scores = None if router is None else router.reference_scores()
            self.reference[kind] = scores if scores is not None and len(scores) > 0 else None
        return self.reference[kind]

    @staticmethod
    async def deployment_reference_scores(kind: str, hosted: HostedRouter) -> Any | None:
        try:
            quantiles = await hosted.reference_quantiles()
        except Exception as exc:
            raise router_unavailable(kind, type(exc).__name__) from exc
        if not quantiles:
            return None
        return ScoreQuantiles.from_values(np.asarray(quantiles, dtype=np.float64))
