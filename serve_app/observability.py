"""Prometheus metrics (through Ray Serve's metrics API) and structured request logs.

Ray exports these on each node's metrics endpoint, where Prometheus scrapes them (see cluster/README.md).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.serve import metrics

logger = logging.getLogger("ray.serve")


class RouterMetrics:
    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "llmrouter_requests", description="Requests answered, by router and answering model.",
            tag_keys=("router", "model", "status"))
        self.decisions = metrics.Counter(
            "llmrouter_route_decisions", description="Routing decisions, by router and chosen side.",
            tag_keys=("router", "decision"))
        self.escalations = metrics.Counter(
            "llmrouter_escalations", description="AutoMix answers escalated to the large model.", tag_keys=("router",))
        self.fallbacks = metrics.Counter(
            "llmrouter_fallbacks", description="Requests answered by the fallback model after a router failure.",
            tag_keys=("router",))
        self.router_latency = metrics.Histogram(
            "llmrouter_router_latency_s", description="Time spent deciding (before the answer model is called).",
            boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], tag_keys=("router",))
        self.cost = metrics.Counter(
            "llmrouter_cost_usd", description="Estimated cost of answered requests (USD).", tag_keys=("router",))
        self.cost_saved = metrics.Counter(
            "llmrouter_cost_saved_usd", description="Estimated cost saved against sending every request to the large model.",
            tag_keys=("router",))

    def record(self, router: str, model: str, status: str, info: dict[str, Any], latency_s: float | None) -> None:
        self.requests.inc(tags={"router": router, "model": model, "status": status})
        if info.get("fallback"):
            self.fallbacks.inc(tags={"router": router})
            decision = "fallback"
        else:
            decision = "large" if info.get("use_large") else "small"
        self.decisions.inc(tags={"router": router, "decision": decision})
        if info.get("escalated"):
            self.escalations.inc(tags={"router": router})
        if latency_s is not None:
            self.router_latency.observe(latency_s, tags={"router": router})
        if info.get("cost") is not None:
            self.cost.inc(float(info["cost"]), tags={"router": router})
        saved = info.get("cost_saved")
        if saved is not None and saved > 0:
            self.cost_saved.inc(float(saved), tags={"router": router})


def log_event(event: str, **fields: Any) -> None:
    """One JSON line per event; never pass secrets (API keys are not in any field)."""
    logger.info(json.dumps({"event": event, **fields}, default=str, sort_keys=True))
