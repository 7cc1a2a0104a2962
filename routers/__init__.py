"""ray-llm-router's library: routing data, model engines, routers, training and evaluation. No Ray here."""

from routers.base import RouteDecision, Router, RouterConfig
from routers.registry import canonical_name, router_class, router_names

__all__ = ["RouteDecision", "Router", "RouterConfig", "canonical_name", "router_class", "router_names"]
