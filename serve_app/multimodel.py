"""N-model routers in the app: a library ``MultiModelRouter`` (``routers.nmodel``) over the app's own models.

The artifact names the models of the data it was trained on (LLMRouter's Qwen, Llama, ...); the app serves its
own. ``routers.multimodel.<name>.model_map`` says which app model stands for which of them: the router's
predicted quality for a data model is taken as the mapped app model's, and candidates left unmapped are never
chosen. Costs are the app's: each candidate is priced at its app model's ``input_price`` x the query's
estimated prompt tokens plus ``output_price`` x ``completion_tokens`` (per 1M tokens), so ``cost=L`` and
``budget=USD`` are in the USD the app pays. The rules resolved on labelled queries (``default``, ``quality=``,
``share=``) use the artifact's selection calibration restricted to the mapped models and repriced the same way
(each calibration query's prompt tokens are read back from the artifact's cost lines), so "30% to the dearest"
or "95% of the best single model's quality" is about the app's models at the app's prices.

A router that scores with its own language model (``nmodel_causal``) decides here too; its LM lives in a
RouterLM deployment (``serve_app.deployments.router_lm``) started with the app's artifact, reached through a
``HostedLM`` scorer. Swapping such an artifact needs a restart: the deployment's model is the start's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from routers.base import CandidateEstimate, RouteDecision
from routers.data.dataset import estimate_tokens
from routers.engines import Engines, SequenceScorer
from routers.errors import ConfigError
from routers.nmodel.base import MultiModelRouter, read_manifest
from routers.registry import multimodel_router_class, router_entry
from routers.selection import (
    BudgetRule,
    CostRule,
    DefaultRule,
    QualityRule,
    SelectionCalibration,
    ShareRule,
    argmax_cheapest,
    parse_rule,
    pick_within_budget,
    resolve_weight,
)
from serve_app.config import AnswerModelSpec, AppConfig, MultiModelRouterSpec

Rule = DefaultRule | CostRule | QualityRule | BudgetRule | ShareRule


def load_library_router(name: str, spec: MultiModelRouterSpec) -> MultiModelRouter:
    directory = Path(spec.artifact)
    router = multimodel_router_class(read_manifest(directory)["router"]).load(directory)
    missing = sorted(set(spec.model_map) - set(router.models))
    if missing:
        raise ConfigError(f"routers.multimodel.{name}.model_map: {missing} not among the artifact's models "
                          f"{list(router.models)}")
    return router


def has_own_lm(spec: MultiModelRouterSpec) -> bool:
    """Whether the artifact's router scores with a language model of its own (it gets a RouterLM deployment)."""
    return multimodel_router_class(read_manifest(Path(spec.artifact))["router"]).engine_role is not None


@dataclass(frozen=True)
class HostedLM:
    """A router's LM in its deployment: the scorer over its handle, and the artifact it was started with."""

    scorer: SequenceScorer
    artifact: str


def calibration_prompt_tokens(router: MultiModelRouter) -> np.ndarray | None:
    """Each calibration query's estimated prompt tokens, read back from the artifact's cost lines (USD =
    intercept + slope x tokens, on the model whose line is steepest); None without a calibration."""
    calibration, costs = router.calibration, router.costs
    if calibration is None or costs is None:
        return None
    steepest = int(np.argmax(costs.slope))
    if costs.slope[steepest] <= 0:
        return np.zeros(len(calibration))
    return np.maximum((calibration.cost_estimate[:, steepest] - costs.intercept[steepest]) / costs.slope[steepest],
                      0.0)


def call_costs(specs: Sequence[AnswerModelSpec], prompt_tokens: np.ndarray, completion_tokens: int) -> np.ndarray:
    """USD per call of each model in ``specs`` for each query, (n, k): each model's ``call_cost`` at the
    query's prompt tokens and ``completion_tokens``."""
    tokens = np.asarray(prompt_tokens, dtype=np.float64)
    return np.column_stack([spec.call_cost(tokens, completion_tokens) for spec in specs]).reshape(len(tokens), -1)


class ServedMultiModelRouter:
    """One ``routers.multimodel`` entry: the library router, its candidates as app models, the app's prices."""

    def __init__(self, name: str, spec: MultiModelRouterSpec, config: AppConfig,
                 router: MultiModelRouter | None = None, lm: HostedLM | None = None) -> None:
        self.name = name
        self.spec = spec
        self.router = router if router is not None else load_library_router(name, spec)
        self.lm = self.checked_lm(lm)
        #: the mapped candidates, in the artifact's order: data model names, their columns, the app's keys
        self.data_models = [m for m in self.router.models if m in spec.model_map]
        self.columns = np.array([self.router.models.index(m) for m in self.data_models], dtype=np.int64)
        self.model_keys = [spec.model_map[m] for m in self.data_models]
        specs = [config.models[key] for key in self.model_keys]
        self.specs = specs
        self.served = {key: s.public_name() for key, s in zip(self.model_keys, specs, strict=True)}
        self.default_rule: Rule = parse_rule(spec.rule)
        self.calibration = self.repriced_calibration()
        entry = router_entry(self.router.name)
        self.step = f"{name} {entry.scorer}"

    def checked_lm(self, lm: HostedLM | None) -> HostedLM | None:
        """The hosted LM a router that has one scores with; it must be the one loaded from this artifact."""
        if self.router.engine_role is None:
            return None
        key = f"routers.multimodel.{self.name}.artifact"
        if lm is None:
            raise ConfigError(f"{key}: the {self.router.name} router scores with its own language model, which "
                              "this app did not start (a hot swap to it needs a restart)")
        if Path(lm.artifact).resolve() != Path(self.spec.artifact).resolve():
            raise ConfigError(f"{key}: the router's language model was started from {lm.artifact}; changing the "
                              "artifact of a router with its own LM needs a restart")
        return lm

    # --- costs -------------------------------------------------------------------------------------------
    def price(self, prompt_tokens: np.ndarray) -> np.ndarray:
        """USD per call of every candidate, (n, k), at ``prompt_tokens`` and ``completion_tokens``."""
        return call_costs(self.specs, prompt_tokens, self.spec.completion_tokens)

    def costs(self, queries: Sequence[str]) -> np.ndarray:
        return self.price(np.array([estimate_tokens(q) for q in queries], dtype=np.float64))

    def repriced_calibration(self) -> SelectionCalibration | None:
        calibration = self.router.calibration
        tokens = calibration_prompt_tokens(self.router)
        if calibration is None or tokens is None:
            return None
        cost = self.price(tokens)
        return SelectionCalibration(calibration.predicted[:, self.columns], cost, calibration.quality[:, self.columns],
                                    cost, f"{calibration.source}; the mapped models at the app's prices",
                                    calibration.default_rule)

    # --- deciding ----------------------------------------------------------------------------------------
    def rule(self, text: str | None) -> Rule:
        """The request's rule (``router-<name>:cost=0.5``), else the configured one."""
        return self.default_rule if text is None else parse_rule(text)

    async def weight(self, rule: Rule) -> float | None:
        """The cost weight ``rule`` stands for (None for ``budget=``); a rule the artifact cannot resolve (no
        calibration) is a ConfigError. The first ``quality=`` target runs a bootstrap: off the event loop."""
        if isinstance(rule, BudgetRule):
            return None
        if isinstance(rule, CostRule):
            return rule.weight
        return await asyncio.to_thread(resolve_weight, rule, self.calibration)

    async def predict(self, queries: Sequence[str], engines: Engines) -> np.ndarray:
        """Every mapped candidate's predicted quality, (n, k)."""
        role = self.router.engine_role
        if self.lm is not None and role is not None:
            engines = replace(engines, scorers={**engines.scorers, role: self.lm.scorer})
        quality = await self.router.apredict_quality(list(queries), engines)
        return np.asarray(quality, dtype=np.float64)[:, self.columns]

    def choose(self, quality: np.ndarray, cost: np.ndarray, rule: Rule, weight: float | None) -> np.ndarray:
        if isinstance(rule, BudgetRule):
            return pick_within_budget(quality, cost, rule.usd)
        assert weight is not None
        return argmax_cheapest(quality - weight * cost, cost)

    def decisions(self, queries: Sequence[str], quality: np.ndarray, cost: np.ndarray, rule: Rule,
                  weight: float | None) -> list[RouteDecision]:
        chosen = self.choose(quality, cost, rule, weight)
        how = rule.text() + ("" if weight is None or isinstance(rule, CostRule) else f" (cost weight {weight:.4g})")
        names = {key: {"model": self.served[key], "data_model": data}
                 for key, data in zip(self.model_keys, self.data_models, strict=True)}
        out = []
        for query, row_q, row_c, k in zip(queries, quality, cost, chosen, strict=True):
            extra: dict[str, Any] = {"candidate_models": names}
            if weight is not None:
                extra["cost_weight"] = float(weight)
            # model_name is the artifact's name (as two-model routers' decision_model); model_key() maps it
            out.append(RouteDecision(
                query=query, model_name=self.data_models[k], score=float(row_q[k]), rule=rule.text(),
                cost=float(row_c[k]),
                reason=f"{how}: {self.data_models[k]} (predicted quality {row_q[k]:.3f}, cost ${row_c[k]:.6f})",
                candidates=[CandidateEstimate(model=m, quality=float(q), cost=float(c))
                            for m, q, c in zip(self.model_keys, row_q, row_c, strict=True)],
                extra=extra))
        return out

    def model_key(self, decision: RouteDecision) -> str:
        """The app model a decision chose."""
        return self.spec.model_map[decision.model_name]

    async def decide(self, queries: Sequence[str], engines: Engines, rule: Rule,
                     weight: float | None) -> list[RouteDecision]:
        """One decision per query (one embedder call for the batch)."""
        queries = list(queries)
        quality = await self.predict(queries, engines)
        return self.decisions(queries, quality, self.costs(queries), rule, weight)


def load_multimodel_routers(config: AppConfig,
                            lms: Mapping[str, HostedLM] | None = None) -> dict[str, ServedMultiModelRouter]:
    """Every ``routers.multimodel`` entry, loaded. A configured rule that needs the artifact's calibration
    (``default``, ``quality=``, ``share=``) fails here when the artifact has none; its weight is resolved on the
    first request that uses it (``quality=`` runs a bootstrap, a few seconds on 5,000 queries), then cached.
    ``lms``: the hosted language models of the routers that score with one, by name."""
    lms = lms or {}
    served = {name: ServedMultiModelRouter(name, spec, config, lm=lms.get(name))
              for name, spec in config.routers.multimodel.items()}
    for name, router in served.items():
        if router.calibration is None and not isinstance(router.default_rule, (BudgetRule, CostRule)):
            raise ConfigError(f"routers.multimodel.{name}.rule: {router.default_rule.text()!r} needs the artifact's "
                              "selection calibration, which it lacks; use cost=L or budget=USD, or refit the router")
    return served
