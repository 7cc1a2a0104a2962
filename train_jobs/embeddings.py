"""Embed many queries in parallel with Ray Data (an actor pool of embedders, batched)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import LookupEmbedder
from train_jobs.common import RaySettings


class _EmbedBatch:
    """One Ray Data actor: loads the embedder once, embeds a batch per call."""

    def __init__(self, engine: dict[str, Any]) -> None:
        self.embedder = build_embedder(EmbedderConfig.model_validate(engine))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"text": np.asarray(texts, dtype=object), "vector": self.embedder.embed(texts)}


def embed_with_ray_data(texts: Sequence[str], engine: EmbedderConfig, settings: RaySettings) -> LookupEmbedder:
    import ray

    unique = list(dict.fromkeys(texts))
    dataset = ray.data.from_items([{"text": t} for t in unique])
    embedded = dataset.map_batches(
        _EmbedBatch,
        fn_constructor_kwargs={"engine": engine.model_dump()},
        batch_size=settings.batch_size,
        concurrency=settings.num_workers,
        num_cpus=settings.cpus_per_worker,
        num_gpus=settings.gpus_per_worker if settings.use_gpu else 0,
    )
    rows = embedded.take_all()
    vectors = np.stack([np.asarray(r["vector"], dtype=np.float32) for r in rows])
    return LookupEmbedder([str(r["text"]) for r in rows], vectors, engine.model)
