"""k-nearest-neighbour router: the small model's record on the most similar training queries."""

from routers.knn.router import KNNConfig, KNNRouter, knn_scores

__all__ = ["KNNConfig", "KNNRouter", "knn_scores"]
