"""The embedder deployment: query texts in, vectors out, with dynamic batching across requests."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from routers.engines import EmbedderConfig, build_embedder
from serve_app.config import BatchingSettings


@serve.deployment(name="Embedder")
class EmbedderDeployment:
    def __init__(self, engine: dict[str, Any], batching: dict[str, Any]) -> None:
        self.config = EmbedderConfig.model_validate(engine)
        self.embedder = build_embedder(self.config)
        self.apply_batching(BatchingSettings.model_validate(batching))

    def apply_batching(self, batching: BatchingSettings) -> None:
        self.embed_one.set_max_batch_size(batching.max_batch_size)
        self.embed_one.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        if "batching" in user_config:
            self.apply_batching(BatchingSettings.model_validate(user_config["batching"]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed_one(self, texts: list[str]) -> list[np.ndarray]:
        """Concurrent single-text calls arrive here as one list and share one forward pass."""
        vectors = await self.embedder.aembed(texts)
        return list(vectors)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """A whole list in one call (route-only batches); bypasses the request batcher."""
        return await self.embedder.aembed(texts)

    async def embed_unbatched(self, text: str) -> np.ndarray:
        """One text, one forward pass: the baseline the batching benchmark compares against."""
        return (await self.embedder.aembed([text]))[0]
