"""RouteLLM's matrix-factorisation router on query embeddings, for a small/large pair."""

from routers.mf.model import MFWeights, battle_targets, fit_mf
from routers.mf.router import MatrixFactorizationRouter, MFConfig

__all__ = ["MFConfig", "MFWeights", "MatrixFactorizationRouter", "battle_targets", "fit_mf"]
