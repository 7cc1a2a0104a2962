"""Hybrid LLM (Ding et al., ICLR 2024): embed the query, regress the small model's suitability, threshold it."""

from routers.hybrid.labels import (
    LabelMode,
    choose_t_star,
    deterministic_labels,
    make_labels,
    pairwise_label_difference,
    probabilistic_labels,
    quality_gap,
    transformed_labels,
)
from routers.hybrid.mlp import ACTIVATIONS, MLPWeights, fit_mlp, squash_scores
from routers.hybrid.router import HybridConfig, HybridLLMRouter

__all__ = [
    "ACTIVATIONS",
    "HybridConfig",
    "HybridLLMRouter",
    "LabelMode",
    "MLPWeights",
    "choose_t_star",
    "deterministic_labels",
    "fit_mlp",
    "make_labels",
    "pairwise_label_difference",
    "probabilistic_labels",
    "quality_gap",
    "squash_scores",
    "transformed_labels",
]
