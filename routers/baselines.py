"""Reference routers every learned router is compared against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field

from routers.base import Router, RouterConfig, query_text
from routers.data import RoutingDataset
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

    def route_single(self, query: str | Mapping[str, Any]) -> dict[str, Any]:
        text = query_text(query)
        decision = self.decide(text, self._score())
        side = "largest" if self.use_large else "smallest"
        decision.reason = f"always the {side} model"
        return decision.to_dict(self.score_key)


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

    def route_single(self, query: str | Mapping[str, Any]) -> dict[str, Any]:
        text = query_text(query)
        return self.decide(text, float(self._rng.random())).to_dict(self.score_key)


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
        raise ConfigError("the oracle router needs each model's performance; it exists for evaluation only")
