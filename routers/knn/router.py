"""KNNRouter: the small model's record on the k training queries most like this one.

A query's k nearest training queries (cosine similarity of their embeddings) vote with what happened on
them, weighted by similarity or equally:

* ``target: gap`` (default): the score is the weighted mean of ``q_small - q_large`` over the neighbours,
  the expected quality the small model gains (> 0) or loses (< 0) on queries like this one, in [-1, 1]
  for qualities in [0, 1]; ``threshold_rule: fixed`` routes to the small model iff it is >= 0 (the small
  model is expected to do no worse);
* ``target: small_ok``: the weighted share of neighbours where the small model was at least as good
  (Hybrid's deterministic label), in [0, 1]; the fixed threshold is 0.5.

Scores on the training queries themselves leave each query out of its own neighbours, so the saved score
quantiles and the ``oracle_share`` threshold describe new queries, not label lookups. The artifact is
the training embeddings (float16 by default) and targets in safetensors plus ``router.json``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from routers.data import RoutingDataset
from routers.embedding import EmbeddingBank, EmbeddingBankRouter, EmbeddingDtype, EmbeddingRouterConfig

#: floor of a neighbour's similarity weight, so neighbours with similarity <= 0 never get a negative vote
MIN_WEIGHT = 1e-6


class KNNConfig(EmbeddingRouterConfig):
    """kNN settings; defaults chosen on a validation split of the shipped train files."""

    k: int = Field(default=200, ge=1, description="neighbours per query (all training queries if fewer)")
    weighting: Literal["similarity", "uniform"] = Field(
        default="similarity",
        description="'similarity': each neighbour weighs its cosine similarity; 'uniform': equally")
    target: Literal["gap", "small_ok"] = Field(
        default="gap", description="'gap': mean q_small - q_large; 'small_ok': share with q_small >= q_large")
    embedding_dtype: EmbeddingDtype = Field(default="float16", description="precision of the stored embeddings")


def neighbour_targets(gap: np.ndarray, target: str) -> np.ndarray:
    return np.asarray(gap, dtype=np.float64) if target == "gap" else (np.asarray(gap) >= 0).astype(np.float64)


def knn_scores(bank: EmbeddingBank, queries: np.ndarray, k: int, weighting: str,
               leave_self_out: bool = False) -> np.ndarray:
    """Weighted mean of the bank targets over each query's k most similar bank rows."""
    k = min(k, len(bank) - int(leave_self_out))
    scores = np.empty(len(queries))
    for rows, sims in bank.similarity_chunks(queries, leave_self_out):
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near_sims = np.take_along_axis(sims, nearest, axis=1)
        weights = np.maximum(near_sims, MIN_WEIGHT) if weighting == "similarity" else np.ones_like(near_sims)
        scores[rows] = (weights * bank.targets[nearest]).sum(axis=1) / weights.sum(axis=1)
    return scores


class KNNRouter(EmbeddingBankRouter):
    name = "knn"
    Config = KNNConfig
    display_name = "kNN"
    bank_file = "neighbours.safetensors"
    config: KNNConfig

    def fixed_threshold(self) -> float:
        return 0.0 if self.config.target == "gap" else 0.5

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        training = self.embedded_training_set(train)
        c = self.config
        self.bank = EmbeddingBank.build(training.embeddings, neighbour_targets(training.gap, c.target),
                                        c.embedding_dtype)
        scores = knn_scores(self.bank, training.embeddings, c.k, c.weighting, leave_self_out=True)
        calibration = self.calibrate_on_training_scores(scores, training.gap)
        self.train_metrics = {"n_train": len(training.data), "k": c.k, "weighting": c.weighting, "target": c.target,
                              "target_mean": float(np.mean(self.bank.targets)), **calibration}
        return dict(self.train_metrics)

    def score_matrix(self, embeddings: np.ndarray) -> np.ndarray:
        return knn_scores(self.require_bank(), embeddings, self.config.k, self.config.weighting)
