"""Helpers for tests that run the shipped router artifacts on real queries: a sample of the test split and an
embedder that embeds each text once, whichever router asks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from routers.engines.base import Embedder


def sample_test_split(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct queries of the test split (MMLU and GSM8K), drawn at ``seed``."""
    from routers.data.location import data_dir

    seen: dict[str, None] = {}
    for name in ("mmlu_test.jsonl", "gsm8k_test.jsonl"):
        with open(data_dir() / name) as f:
            for line in f:
                seen.setdefault(json.loads(line)["query"], None)
    queries = list(seen)
    return [queries[i] for i in np.random.default_rng(seed).choice(len(queries), size=count, replace=False)]


class Memo(Embedder):
    """Each text embedded once, whichever router asks (whole queries and defence windows)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.dim, self.model_name = inner, inner.dim, inner.model_name
        self.vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])
