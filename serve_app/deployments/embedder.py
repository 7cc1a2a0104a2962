"""The embedder deployment (``embedder.placement: deployment``): query texts in, vectors out. Concurrent
requests share engine calls through the library's ``BatchingEmbedder`` (length buckets, a bounded cache)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from routers.engines import EmbedderConfig, build_embedder
from routers.engines.batching import BatchingEmbedder
from serve_app.config import EmbedderBatching


@serve.deployment(name="Embedder")
class EmbedderDeployment:
    def __init__(self, engine: dict[str, Any], batching: dict[str, Any]) -> None:
        self.config = EmbedderConfig.model_validate(engine)
        settings = EmbedderBatching.model_validate(batching)
        self.service = BatchingEmbedder(build_embedder(self.config), settings.max_batch_size, settings.cache_size)
        self.embedder = self.service.embedder

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        if "batching" in user_config:
            self.service.max_batch_texts = EmbedderBatching.model_validate(user_config["batching"]).max_batch_size

    async def embed_one(self, text: str) -> np.ndarray:
        """One query; concurrent calls share engine calls."""
        return (await self.service.aembed([text]))[0]

    async def embed(self, texts: list[str]) -> np.ndarray:
        """A list of queries (a route-only batch, a query and its defence windows), batched with the others."""
        return await self.service.aembed(texts)

    async def embed_unbatched(self, text: str) -> np.ndarray:
        """One text, one forward pass, no cache: the baseline the batching benchmark compares against."""
        return (await self.embedder.aembed([text]))[0]

    def batch_stats(self) -> dict[str, Any]:
        """As the answer deployments report theirs (``bench/load_bench.py``), plus the cache's hits."""
        return {**self.service.stats.as_dict(), "cache_hits": self.service.cache.hits,
                "cache_misses": self.service.cache.misses}
