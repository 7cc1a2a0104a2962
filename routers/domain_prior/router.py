"""DomainPriorRouter: the best router on traffic from the domains it was trained on.

It learns from the ``task_name`` every LLMRouter JSONL row carries (``model.py``): P(domain | query) from
the embedding, each domain's (and each topic's inside it) mean small-vs-large gap, and a ridge on the gap,
blended on their training CDFs as ``w * F_prior + (1 - w) * F_ridge``. With ``blend_weight`` unset,
``fit`` chooses w from ``blend_grid`` by ``inner_folds`` random folds stratified by domain inside the
training data (``routers.evaluation.generalisation.query_folds``). Rows without a task_name form one
domain of their own; with a single domain the prior is the topics' rates alone (k-means inside it).

Use it when the traffic to route comes from the domains of the training data (retrain it on your own
logged traffic, tagged by application or task); for new domains, ``blend`` transfers and this router
does not (bench/README.md, "Seen vs unseen domains"). Scores are ranks in [0, 1]; the default
``threshold_rule: oracle_share`` escalates the oracle's share of training queries. Each decision reports
the query's most probable training domain (``domain``, ``domain_probability``). The artifact is
``domain_prior.safetensors`` + ``router.json`` (the domain names and w).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from routers.blend.router import BlendedScoreConfig, BlendedScoreRouter
from routers.data import RoutingDataset
from routers.domain_prior.model import DomainPriorWeights, PriorSettings, choose_prior_weight, fit_prior
from routers.errors import ArtifactError
from routers.evaluation.generalisation import query_folds, task_of

WEIGHTS_FILE = "domain_prior.safetensors"


class DomainPriorConfig(BlendedScoreConfig):
    """Domain-prior settings: the domain classifier's L2 strength, the shrinkage and topics of the
    per-domain rates, the ridge, and the blend weight (``BlendedScoreConfig``; the first part is the
    prior, the inner folds are random folds stratified by domain)."""

    c: float = Field(default=0.1, gt=0.0, description="inverse L2 strength of the domain classifier")
    prior_strength: float = Field(default=20.0, ge=0.0,
                                  description="pseudo-queries shrinking each domain's / topic's mean gap")
    sub_clusters: int = Field(default=8, ge=0, description="k-means topics per domain (0 or 1: none)")
    min_topic_queries: int = Field(default=50, ge=1, description="training queries per topic, at least")
    ridge_alpha: float = Field(default=1e4, gt=0.0, description="L2 strength of the ridge on the gap")
    blend_grid: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0], min_length=1)

    def settings(self) -> PriorSettings:
        return PriorSettings(self.c, self.prior_strength, self.sub_clusters, self.min_topic_queries,
                             self.ridge_alpha, self.seed)


class DomainPriorRouter(BlendedScoreRouter[DomainPriorWeights]):
    name = "domain_prior"
    Config = DomainPriorConfig
    display_name = "domain-prior"
    weights_file = WEIGHTS_FILE
    config: DomainPriorConfig

    # --- learning --------------------------------------------------------------------------------
    def choose_weight(self, data: RoutingDataset, x: np.ndarray, gap: np.ndarray, small: np.ndarray,
                      large: np.ndarray, domains: list[str]) -> float:
        c = self.config
        preset = self.start_weight_choice()
        if preset is not None:
            return preset
        folds = [(np.asarray(f.fit_indices), np.asarray(f.eval_indices))
                 for f in query_folds(data, min(c.inner_folds, len(data)), c.seed + 1)]
        weight, self.inner_apgr = choose_prior_weight(x, gap, small, large, domains, folds, c.blend_grid,
                                                      c.settings())
        return weight

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        training = self.embedded_training_set(train)
        pair = self.require_pair()
        quality = training.data.performance_matrix([pair.small, pair.large])
        domains = [task_of(example) for example in training.data.examples]
        weight = self.choose_weight(training.data, training.embeddings, training.gap, quality[:, 0],
                                    quality[:, 1], domains)
        self.weights = fit_prior(training.embeddings, training.gap, domains, self.config.settings(),
                                 weight).as_stored()
        calibration = self.calibrate_on_training_set(training, self.score_embeddings(training.embeddings))
        self.train_metrics = {"n_train": len(training.data), "n_domains": len(self.weights.domains),
                              "n_topics": len(self.weights.centroid_rate), "blend_weight": weight,
                              "inner_apgr": self.inner_apgr, **calibration}
        return dict(self.train_metrics)

    # --- scoring ---------------------------------------------------------------------------------
    def decision_extra(self, embedding: np.ndarray) -> dict[str, Any]:
        domain, probability = self.require_weights().top_domain(np.asarray(embedding, dtype=np.float64))
        return {"domain": domain, "domain_probability": round(probability, 4)}

    # --- artifacts -------------------------------------------------------------------------------
    def weights_state(self) -> dict[str, Any]:
        weights = self.require_weights()
        return {"blend_weight": weights.blend_weight, "domains": weights.domains, "inner_apgr": self.inner_apgr}

    def load_weights(self, path: Path, state: dict[str, Any]) -> DomainPriorWeights:
        domains = state.get("domains")
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise ArtifactError(f"{path.parent / 'router.json'}: 'domains' must be the list of domain names")
        self.load_inner_apgr(state)
        return DomainPriorWeights.load(path, float(state["blend_weight"]), domains)
