"""Small synthetic N-model data for the N-model tests (made up, not drawn from any published pool).

Three models, cheap to dear, and three query clusters: on ``easy`` every model is right, on ``medium`` the
cheap model is wrong, on ``hard`` only the dear one is right. A router that reads the cluster from the
embedding routes each cluster to its cheapest right model; ``LookupEmbedder`` serves the cluster vectors.
"""

from __future__ import annotations

import numpy as np

from routers.data.multimodel import MultiModelDataset
from routers.engines.cache import LookupEmbedder

MODELS = ("cheap", "mid", "dear")
COSTS = np.array([1e-4, 1e-3, 1e-2])
DIM = 16
#: per cluster, each model's chance of being right
RIGHT = {"easy": (1.0, 1.0, 1.0), "medium": (0.0, 0.9, 1.0), "hard": (0.0, 0.1, 0.9)}


def centres() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.normal(size=DIM) * 3 for name in RIGHT}


def clusters(n_per_cluster: int = 40, seed: int = 1) -> tuple[MultiModelDataset, dict[str, np.ndarray]]:
    """The dataset and each query's embedding by text."""
    rng = np.random.default_rng(seed)
    texts, tasks, quality, vectors = [], [], [], {}
    for name, centre in centres().items():
        for i in range(n_per_cluster):
            text = f"{name} query {seed}-{i}"
            texts.append(text)
            tasks.append(name)
            quality.append([float(rng.random() < p) for p in RIGHT[name]])
            vectors[text] = centre + rng.normal(scale=0.5, size=DIM)
    n = len(texts)
    data = MultiModelDataset(models=MODELS, queries=tuple(texts), task_names=tuple(tasks),
                             ids=tuple(f"{seed}:{i}" for i in range(n)),
                             quality=np.array(quality, dtype=np.float64),
                             cost=np.tile(COSTS, (n, 1)).astype(np.float64),
                             call_cost_known=np.ones((n, 3), dtype=np.bool_))
    return data, vectors


def train_test() -> tuple[MultiModelDataset, MultiModelDataset, LookupEmbedder]:
    train, train_vectors = clusters(40, seed=1)
    test, test_vectors = clusters(20, seed=2)
    vectors = {**train_vectors, **test_vectors}
    embedder = LookupEmbedder(list(vectors), np.stack(list(vectors.values())), "synthetic")
    return train, test, embedder
