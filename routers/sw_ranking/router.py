"""SWRankingRouter: RouteLLM's similarity-weighted ranking (Ong et al., "RouteLLM", 2024), for two models.

RouteLLM weighs every training battle by how similar its prompt is to the query,
``w_i = 10 * 10 ** (sim_i / max_j sim_j)``, fits Bradley-Terry ratings to the weighted battles
(``compute_elo_mle_with_tie``: each battle counted twice, a tie as one win for each side) and returns the
strong model's win rate under those ratings. Here every training query is one small-vs-large battle:
the small model won (q_small > q_large), lost, or tied.

With two models the weighted Bradley-Terry fit has a closed form. The log-likelihood of the rating
difference theta is sum_i w_i [o_i log sigmoid(theta) + (1 - o_i) log(1 - sigmoid(theta))], o_i the
small model's result (1 won, 0 lost, ``tie_credit`` tied: RouteLLM's 0.5), which is maximal at

    sigmoid(theta) = sum_i w_i o_i / sum_i w_i,

so the score, the probability that the small model beats the large one on this query, is the weighted
mean of the outcomes: exact, vectorised, no iterative fit (and the limit 0 or 1 where RouteLLM's
unpenalised logistic regression would diverge). Weights are ``exp(gamma * sim / max sim)`` over all
training queries (RouteLLM: gamma = ln 10, the constant factor 10 cancels; the default 5.0 is a little
more local, chosen on a validation split).

With ``tie_credit`` 0.5 the score is 0.5 + E_w[q_small - q_large] / 2 for 0/1 correctness, so it ranks
queries by the expected quality gap; 1.0 makes it the weighted share of queries where the small model
was at least as good. Training-query scores leave the query itself out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from routers.data import RoutingDataset
from routers.embedding import (
    EmbeddingBank,
    EmbeddingBankRouter,
    EmbeddingDtype,
    EmbeddingRouterConfig,
    win_outcomes,
)

#: RouteLLM's weighting 10 ** (sim / max sim) as exp(gamma * sim / max sim)
ROUTELLM_GAMMA = math.log(10.0)


class SWRankingConfig(EmbeddingRouterConfig):
    """SW-ranking settings: RouteLLM's relative similarity and tie rule; gamma chosen on a validation
    split of the shipped train files (5.0: APGR 0.659 there, RouteLLM's ln 10: 0.640)."""

    gamma: float = Field(default=5.0, gt=0.0,
                         description="weight = exp(gamma * similarity / max similarity); "
                                     f"RouteLLM: ln 10 = {ROUTELLM_GAMMA:.6f}")
    relative_similarity: bool = Field(
        default=True, description="divide similarities by the query's largest one, as RouteLLM does")
    tie_credit: float = Field(default=0.5, ge=0.0, le=1.0,
                              description="a tie's worth to the small model: 0.5 = RouteLLM's half win each")
    embedding_dtype: EmbeddingDtype = Field(default="float16", description="precision of the stored embeddings")


def similarity_weighted_win_rates(bank: EmbeddingBank, queries: np.ndarray, gamma: float, relative: bool,
                                  leave_self_out: bool = False) -> np.ndarray:
    """The weighted Bradley-Terry win probability of the small model for each query (module docstring)."""
    scores = np.empty(len(queries))
    for rows, sims in bank.similarity_chunks(queries, leave_self_out):
        top = sims.max(axis=1, keepdims=True)
        if relative:
            # RouteLLM divides by the largest similarity; a non-positive one would flip the weighting.
            sims = sims / np.where(top > 0, top, 1.0)
            top = sims.max(axis=1, keepdims=True)
        weights = np.exp(gamma * (sims - top))  # shifted by the row maximum: same ratios, no overflow
        scores[rows] = (weights @ bank.targets) / weights.sum(axis=1)
    return scores


class SWRankingRouter(EmbeddingBankRouter):
    name = "sw_ranking"
    Config = SWRankingConfig
    display_name = "SW-ranking"
    bank_file = "battles.safetensors"
    config: SWRankingConfig

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        training = self.embedded_training_set(train)
        c = self.config
        self.bank = EmbeddingBank.build(training.embeddings, win_outcomes(training.gap, c.tie_credit),
                                        c.embedding_dtype)
        scores = similarity_weighted_win_rates(self.bank, training.embeddings, c.gamma, c.relative_similarity,
                                               leave_self_out=True)
        calibration = self.calibrate_on_training_scores(scores, training.gap)
        self.train_metrics = {"n_train": len(training.data), "gamma": c.gamma, "tie_credit": c.tie_credit,
                              "small_win_share": float(np.mean(training.gap > 0)),
                              "tie_share": float(np.mean(training.gap == 0)), **calibration}
        return dict(self.train_metrics)

    def score_matrix(self, embeddings: np.ndarray) -> np.ndarray:
        return similarity_weighted_win_rates(self.require_bank(), embeddings, self.config.gamma,
                                             self.config.relative_similarity)
