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

from routers.engines.base import Embedder
from routers.errors import EngineError
from routers.progress import progress_bar
from routers.safe_io import load_arrays, save_arrays


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


# Settings that do not change a vector (where and how fast it is computed) stay out of the cache key.
_RUNTIME_ONLY = frozenset({"device", "num_threads", "max_batch_size", "dtype"})


def settings_tag(embedder: Embedder) -> str:
    """A short hash of the embedder's vector-shaping settings ('' for embedders without a config)."""
    config = getattr(embedder, "config", None)
    if config is None or not hasattr(config, "model_dump"):
        return ""
    shaping = {k: v for k, v in config.model_dump(mode="json").items() if k not in _RUNTIME_ONLY and k != "model"}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]


class CachedEmbedder(Embedder):
    def __init__(self, inner: Embedder, cache_dir: str | Path, chunk_size: int = 256) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.model_name = inner.model_name
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(inner.model_name).name or inner.model_name)
        tag = settings_tag(inner)
        self.path = Path(cache_dir) / f"{slug}-{self.dim}{'-' + tag if tag else ''}.safetensors"
        self.chunk_size = chunk_size
        self._lock = threading.Lock()
        self._table: dict[bytes, np.ndarray] = {}
        if self.path.exists():
            arrays = load_arrays(self.path)
            for key, vector in zip(arrays["keys"], arrays["vectors"]):
                self._table[key.tobytes()] = vector

    def __len__(self) -> int:
        return len(self._table)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [_digest(t) for t in texts]
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
            keys = np.frombuffer(b"".join(self._table), dtype=np.uint8).reshape(-1, 32)
            vectors = np.stack(list(self._table.values())).astype(np.float32)
        tmp = self.path.with_suffix(".tmp.safetensors")
        save_arrays(tmp, {"keys": keys, "vectors": vectors})
        tmp.replace(self.path)


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
        self._table = {_digest(t): np.asarray(v, dtype=np.float32) for t, v in zip(texts, vectors)}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            rows = [self._table[_digest(t)] for t in texts]
        except KeyError:
            missing = next(t for t in texts if _digest(t) not in self._table)
            raise EngineError(f"no precomputed embedding for query {missing[:80]!r}") from None
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
