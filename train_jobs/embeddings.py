"""Embed many queries in parallel with Ray Data (an actor pool of embedders, batched), behind a disk cache.

The cache is ``routers.engines.cache``'s (one safetensors file per embedder configuration, the same file
``llmrouter evaluate`` and the benchmarks read), so a rerun embeds only the texts that are not in it yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import LookupEmbedder, cache_path, read_cache, text_key, write_cache
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


def embed_with_cache(texts: Sequence[str], engine: EmbedderConfig, settings: RaySettings,
                     cache_dir: Path) -> tuple[LookupEmbedder, dict[str, Any]]:
    """Vectors of ``texts``: from the cache, the rest embedded with Ray Data and added to the cache.

    Ray is started only when something is missing. Returns the embedder and counts
    (``texts``, ``cached``, ``embedded``, ``cache_file``).
    """
    path = cache_path(cache_dir, engine)
    table = read_cache(path)
    unique = list(dict.fromkeys(texts))
    missing = [t for t in unique if text_key(t) not in table]
    if missing:
        from train_jobs.common import init_ray

        init_ray(settings)
        fresh = embed_with_ray_data(missing, engine, settings)
        for text, vector in zip(missing, fresh.embed(missing)):
            table[text_key(text)] = vector
        write_cache(path, table)
    vectors = np.stack([table[text_key(t)] for t in unique]) if unique else np.zeros((0, 1), np.float32)
    stats = {"texts": len(unique), "cached": len(unique) - len(missing), "embedded": len(missing),
             "cache_file": str(path)}
    return LookupEmbedder(unique, vectors, engine.model), stats
