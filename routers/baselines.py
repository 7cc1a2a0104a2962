"""Reference routers every learned router is compared against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from routers.base import RouteDecision, Router, RouterConfig, Thresholds, per_query
from routers.data import RoutingDataset
from routers.engines import Engines
from routers.errors import ConfigError


class _FixedRouter(Router):
    """Always picks one side: a constant score on the far side of the threshold."""

    trainable = False
    use_large: bool = False

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        pair = self.resolve_pair(train)
        return {"model": pair.name_for(self.use_large)}

    @property
    def threshold(self) -> float:
        return 0.5

    def _score(self) -> float:
        return 0.0 if self.use_large else 1.0

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        return np.full(len(data), self._score())

    def fixed_decision(self, query: str) -> RouteDecision:
        decision = self.decide(query, self._score())
        decision.reason = f"always the {'largest' if self.use_large else 'smallest'} model"
        return decision

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        # Nothing to tune: a threshold would move the constant score across it, so it is not applied.
        return [self.fixed_decision(query) for query in queries]


class SmallestLLMRouter(_FixedRouter):
    name = "smallest_llm"
    use_large = False


class LargestLLMRouter(_FixedRouter):
    name = "largest_llm"
    use_large = True


class RandomRouterConfig(RouterConfig):
    large_share: float = Field(default=0.5, ge=0.0, le=1.0, description="probability of picking the large model")


class RandomRouter(Router):
    """Sends each query to the large model with probability ``large_share`` (the 'random mix' line)."""

    name = "random"
    Config = RandomRouterConfig
    trainable = False
    score_key = "random_draw"

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self._rng = np.random.default_rng(self.config.seed)

    @property
    def threshold(self) -> float:
        t = self.config.router_threshold
        return self.config.large_share if t is None else t

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        self.resolve_pair(train)
        return {"large_share": self.config.large_share}

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        # Seeded per call so an evaluation is reproducible.
        return np.random.default_rng(self.config.seed).random(len(data))

    def draw_decision(self, query: str, large_share: float | None = None) -> RouteDecision:
        """Large iff a uniform draw < ``large_share`` (None: the configured share)."""
        share = self.threshold if large_share is None else large_share
        decision = self.decide(query, float(self._rng.random()), share)
        decision.reason = f"random draw with large share {share:.2f}: {decision.reason}"
        return decision

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        return [self.draw_decision(query, share)
                for query, share in zip(queries, per_query(thresholds, len(queries)), strict=True)]


class OracleRouter(Router):
    """Knows each model's performance: the upper bound. Needs the labels, so evaluation only."""

    name = "oracle"
    trainable = False
    score_key = "performance_gap"
    default_threshold = 0.0

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        self.resolve_pair(train)
        return {}

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        pair = self.require_pair()
        matrix = data.performance_matrix([pair.small, pair.large])
        # small - large; ties (both right or both wrong) go to the cheaper model.
        return matrix[:, 0] - matrix[:, 1]

    def route_single(self, query: str | Mapping[str, Any]) -> dict[str, Any]:
        raise self.evaluation_only()

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        raise self.evaluation_only()

    @staticmethod
    def evaluation_only() -> ConfigError:
        return ConfigError("the oracle router needs each model's performance; it exists for evaluation only")
