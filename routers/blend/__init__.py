"""A router built for unseen domains: two logistic heads on the query embedding, blended by a weight
chosen with leave-domains-out folds inside the training data."""

from routers.blend.model import BlendWeights, choose_blend_weight, fit_heads, head_targets
from routers.blend.router import BlendConfig, BlendRouter

__all__ = ["BlendConfig", "BlendRouter", "BlendWeights", "choose_blend_weight", "fit_heads", "head_targets"]
