"""Routers among N models: predict every candidate's quality per query; ``routers.selection`` picks one."""

from routers.nmodel.base import CostEstimator, MultiModelRouter, MultiModelRouterConfig

__all__ = ["CostEstimator", "MultiModelRouter", "MultiModelRouterConfig"]
