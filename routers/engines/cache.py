"""A disk cache in front of an embedder, so re-evaluating or re-training never re-embeds a query.

One safetensors file per embedding model and settings (pooling, max_length, normalisation change the
vectors, so they are part of the file name): ``keys`` (sha256 of each text, uint8 [n, 32]) and
``vectors`` (float32 [n, dim]). JSON/safetensors only, like every artifact here.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routers.engines.base import Embedder, EmbedderConfig, model_identity
from routers.errors import EngineError
from routers.progress import progress_bar
from routers.safe_io import load_arrays, save_arrays


def text_key(text: str) -> bytes:
    """The cache key of one text: its sha256."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# Settings that change throughput, not the vectors, stay out of the file name. The runtime is one: ONNX
# Runtime and transformers agree to ~1e-7 per component (tests/test_onnx_embedder.py), the same order as
# the rounding that thread counts and batch shapes already change.
NOT_IN_CACHE_KEY = frozenset({"max_batch_size", "num_threads", "backend"})


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name or model)


def cache_path(cache_dir: str | Path, engine: EmbedderConfig) -> Path:
    """The cache file of one embedder configuration: every setting that changes the vectors (model
    identity, pooling, normalisation, max length, dtype, device) is hashed into its name, so another
    configuration never reads these vectors."""
    settings = engine.model_dump(mode="json", exclude=set(NOT_IN_CACHE_KEY))
    settings["model"] = model_identity(engine.model)
    if engine.quantize == "none":  # float32 vectors keep the files they had before int8 was an option
        del settings["quantize"]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return Path(cache_dir) / f"{_slug(engine.model)}-{digest}.safetensors"


def read_cache(path: Path) -> dict[bytes, np.ndarray]:
    if not path.exists():
        return {}
    arrays = load_arrays(path)
    return {key.tobytes(): vector for key, vector in zip(arrays["keys"], arrays["vectors"], strict=True)}


def write_cache(path: Path, table: dict[bytes, np.ndarray]) -> None:
    """Written to a temp file and renamed, so a crash never leaves a half-written cache."""
    keys = np.frombuffer(b"".join(table), dtype=np.uint8).reshape(-1, 32)
    vectors = np.stack(list(table.values())).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.tmp.safetensors")
    save_arrays(staging, {"keys": keys, "vectors": vectors})
    staging.replace(path)


class CachedEmbedder(Embedder):
    def __init__(self, inner: Embedder, cache_dir: str | Path, chunk_size: int = 256) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.model_name = inner.model_name
        config = getattr(inner, "config", None)
        self.path = (cache_path(cache_dir, config) if isinstance(config, EmbedderConfig)
                     else Path(cache_dir) / f"{_slug(inner.model_name)}-{self.dim}.safetensors")
        self.chunk_size = chunk_size
        self._lock = threading.Lock()
        self._table: dict[bytes, np.ndarray] = read_cache(self.path)

    def __len__(self) -> int:
        return len(self._table)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        missing = list(dict.fromkeys(i for i, k in enumerate(keys) if k not in self._table))
        unique_missing: dict[bytes, int] = {}
        for i in missing:
            unique_missing.setdefault(keys[i], i)
        todo = list(unique_missing.values())
        if todo:
            bar = progress_bar(f"embedding with {Path(self.model_name).name}", total=len(todo), unit="query")
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start : start + self.chunk_size]
                vectors = self.inner.embed([texts[i] for i in chunk])
                with self._lock:
                    for i, vector in zip(chunk, vectors):
                        self._table[keys[i]] = vector
                bar.update(len(chunk))
            bar.close()
            self.flush()
        return np.stack([self._table[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def flush(self) -> None:
        with self._lock:
            if not self._table:
                return
            table = dict(self._table)
        write_cache(self.path, table)


class LookupEmbedder(Embedder):
    """Embeddings computed elsewhere (e.g. by a Ray Data job over many workers), served by text.

    Lets a router's ordinary ``fit`` run on vectors a distributed job produced; a text that was not
    embedded is an error rather than a silent zero vector.
    """

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, model_name: str) -> None:
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        self.dim = int(vectors.shape[1])
        self.model_name = model_name
        self._table = {text_key(t): np.asarray(v, dtype=np.float32) for t, v in zip(texts, vectors)}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            rows = [self._table[text_key(t)] for t in texts]
        except KeyError:
            missing = next(t for t in texts if text_key(t) not in self._table)
            raise EngineError(f"no precomputed embedding for query {missing[:80]!r}") from None
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
