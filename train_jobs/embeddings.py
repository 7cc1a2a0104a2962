"""Embed many queries in parallel with Ray Data (an actor pool of embedders, batched), behind a disk cache.

The cache is one safetensors file per embedder configuration, in ``routers.engines.cache``'s layout
(``keys``: sha256 of each text, uint8 [n, 32]; ``vectors``: float32 [n, dim]). The file name carries a
hash of every embedder setting that changes the vectors (model identity, pooling, normalisation, max
length, dtype, device), so another configuration never reads these vectors, and a rerun embeds only the
texts that are not in the file yet.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import LookupEmbedder
from routers.safe_io import load_arrays, save_arrays
from train_jobs.common import RaySettings

# Settings that change throughput, not the vectors.
NOT_IN_CACHE_KEY = frozenset({"max_batch_size", "num_threads"})


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


# --- the cache -------------------------------------------------------------------------------------
def text_key(text: str) -> bytes:
    """The cache key of one text (the same digest ``routers.engines.cache`` uses)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _model_identity(model: str) -> dict[str, Any]:
    """A local model by directory name + config + weight sizes (the same model elsewhere still hits)."""
    path = Path(model)
    if not path.is_dir():
        return {"name": model}
    config = path / "config.json"
    return {"name": path.name,
            "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None,
            "weights": sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors"))}


def cache_path(cache_dir: Path, engine: EmbedderConfig) -> Path:
    settings = engine.model_dump(exclude=set(NOT_IN_CACHE_KEY))
    settings["model"] = _model_identity(engine.model)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(engine.model).name or engine.model)
    return cache_dir / f"{slug}-{digest}.safetensors"


def read_cache(path: Path) -> dict[bytes, np.ndarray]:
    if not path.exists():
        return {}
    arrays = load_arrays(path)
    return {key.tobytes(): vector for key, vector in zip(arrays["keys"], arrays["vectors"])}


def write_cache(path: Path, table: dict[bytes, np.ndarray]) -> None:
    """Written to a temp file and renamed, so a crash never leaves a half-written cache."""
    keys = np.frombuffer(b"".join(table), dtype=np.uint8).reshape(-1, 32)
    vectors = np.stack(list(table.values())).astype(np.float32)
    staging = path.with_name(f".{path.stem}.tmp.safetensors")
    save_arrays(staging, {"keys": keys, "vectors": vectors})
    staging.replace(path)


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
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cache(path, table)
    vectors = np.stack([table[text_key(t)] for t in unique]) if unique else np.zeros((0, 1), np.float32)
    stats = {"texts": len(unique), "cached": len(unique) - len(missing), "embedded": len(missing),
             "cache_file": str(path)}
    return LookupEmbedder(unique, vectors, engine.model), stats
