"""Prometheus metrics (through Ray Serve's metrics API) and structured request logs.

Ray exports these on each node's metrics endpoint, where Prometheus scrapes them (see cluster/README.md).

``llmrouter_requests{router, model, status}`` counts every ``/v1`` response: ``status`` is ``ok``,
``fallback`` (answered by the fallback model after a router failure), ``stream_error`` (a stream that
failed after its head chunk) or the HTTP status of an error response (``400``, ``401``, ``503``, ...).

Cost is two counters, ``llmrouter_cost_usd`` (what was spent) and ``llmrouter_cost_baseline_usd`` (what
sending the same requests to the large model would have cost), so cost saved is
``baseline - cost``, negative where routing cost more (AutoMix escalations pay for the small model's
answer and its verification too). A "saved" counter could not go down and would overstate savings.

Per API key (``key`` is the key's configured name or ``key-<8 hex of its sha256>``, never the secret):
``llmrouter_key_cost_usd{key}`` (spend), ``llmrouter_key_requests{key, decision}`` (answered requests,
``small`` or ``large``: the large share is a ratio of two rates), ``llmrouter_key_refusals{key, reason}``
(``budget``, ``rate``, ``ledger_error``), ``llmrouter_key_budget_downgrades{key}`` (answered by the small
model because the budget was spent) and ``llmrouter_ledger_errors{on_error}`` (the budget ledger was
unreachable; ``allow``: admitted unchecked). Ray exports each as ``ray_<name>_total``.

Per answer model (``model`` is its key in the config): ``llmrouter_model_calls{model, outcome}`` (``ok``, or why
it failed: ``connect``, ``timeout``, ``server_error``, ``rate_limited``, ``auth``, ``not_found``,
``bad_response``, ``stream_error``, ``unavailable``, ``rejected``, ``error``), ``llmrouter_model_latency_s{model}``
(a whole answer, or a stream's first chunk), ``llmrouter_model_tokens{model, kind}`` (``prompt`` /
``completion``), ``llmrouter_model_cost_usd{model}`` and ``llmrouter_model_cooldowns{model}`` (times a model was
put in cooldown; see ``serve_app.model_health``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ray.serve import metrics

logger = logging.getLogger("ray.serve")

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class RouterMetrics:
    """The router's metrics; ``counter`` / ``histogram`` are Ray Serve's classes unless a test passes fakes."""

    def __init__(self, counter: Callable[..., Any] = metrics.Counter,
                 histogram: Callable[..., Any] = metrics.Histogram) -> None:
        self.requests = counter(
            "llmrouter_requests", description="Responses, by router, answering model and status.",
            tag_keys=("router", "model", "status"))
        self.decisions = counter(
            "llmrouter_route_decisions", description="Routing decisions, by router and chosen side.",
            tag_keys=("router", "decision"))
        self.escalations = counter(
            "llmrouter_escalations", description="AutoMix answers escalated to the large model.", tag_keys=("router",))
        self.fallbacks = counter(
            "llmrouter_fallbacks", description="Requests answered by the fallback model after a router failure.",
            tag_keys=("router",))
        self.router_latency = histogram(
            "llmrouter_router_latency_s", description="Time spent deciding (before the answer model is called).",
            boundaries=LATENCY_BUCKETS_S, tag_keys=("router",))
        self.cost = counter(
            "llmrouter_cost_usd", description="Estimated cost of answered requests (USD).", tag_keys=("router",))
        self.cost_baseline = counter(
            "llmrouter_cost_baseline_usd",
            description="Estimated cost of the same requests sent to the large model (USD); saved = baseline - cost.",
            tag_keys=("router",))
        self.key_cost = counter(
            "llmrouter_key_cost_usd", description="Estimated spend per API key (USD).", tag_keys=("key",))
        self.key_requests = counter(
            "llmrouter_key_requests", description="Answered requests per API key, by the side routed to.",
            tag_keys=("key", "decision"))
        self.key_refusals = counter(
            "llmrouter_key_refusals", description="Requests refused per API key, by reason (budget, rate, ...).",
            tag_keys=("key", "reason"))
        self.key_downgrades = counter(
            "llmrouter_key_budget_downgrades",
            description="Requests answered by the small model because the key's budget was spent.", tag_keys=("key",))
        self.model_calls = counter(
            "llmrouter_model_calls", description="Answer-model calls, by model and outcome (ok or the failure kind).",
            tag_keys=("model", "outcome"))
        self.model_latency = histogram(
            "llmrouter_model_latency_s", description="Answer-model latency: a whole answer, or a stream's first chunk.",
            boundaries=LATENCY_BUCKETS_S, tag_keys=("model",))
        self.model_tokens = counter(
            "llmrouter_model_tokens", description="Tokens answered, by model and kind (prompt, completion).",
            tag_keys=("model", "kind"))
        self.model_cost = counter(
            "llmrouter_model_cost_usd", description="Estimated cost of answer-model calls (USD), by model.",
            tag_keys=("model",))
        self.model_cooldowns = counter(
            "llmrouter_model_cooldowns", description="Times an answer model was put in cooldown.", tag_keys=("model",))
        self.ledger_errors = counter(
            "llmrouter_ledger_errors", description="Budget ledger calls that failed or timed out.",
            tag_keys=("on_error",))

    def record_key(self, key: str, info: dict[str, Any]) -> None:
        """One answered request of API key ``key`` (its id, never the secret)."""
        self.key_requests.inc(tags={"key": key, "decision": "large" if info.get("use_large") else "small"})
        if info.get("budget"):
            self.key_downgrades.inc(tags={"key": key})
        if info.get("cost") is not None:
            add(self.key_cost, float(info["cost"]), {"key": key})

    def record(self, router: str, model: str, info: dict[str, Any], latency_s: float | None) -> None:
        """One answered request (``info`` is its routing object, with ``cost`` and ``cost_saved``)."""
        fallback = bool(info.get("fallback"))
        self.requests.inc(tags={"router": router, "model": model, "status": "fallback" if fallback else "ok"})
        if fallback:
            self.fallbacks.inc(tags={"router": router})
        decision = "fallback" if fallback else "budget" if info.get("budget") else \
            "large" if info.get("use_large") else "small"
        self.decisions.inc(tags={"router": router, "decision": decision})
        if info.get("escalated"):
            self.escalations.inc(tags={"router": router})
        if latency_s is not None:
            self.router_latency.observe(latency_s, tags={"router": router})
        cost, saved = info.get("cost"), info.get("cost_saved")
        if cost is not None:
            add(self.cost, float(cost), {"router": router})
            if saved is not None:
                add(self.cost_baseline, float(cost) + float(saved), {"router": router})

    def record_model_call(self, model: str, outcome: str, latency_s: float | None) -> None:
        self.model_calls.inc(tags={"model": model, "outcome": outcome})
        if latency_s is not None:
            self.model_latency.observe(latency_s, tags={"model": model})

    def record_model_usage(self, model: str, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        add(self.model_tokens, float(prompt_tokens), {"model": model, "kind": "prompt"})
        add(self.model_tokens, float(completion_tokens), {"model": model, "kind": "completion"})
        add(self.model_cost, cost, {"model": model})

    def record_cooldown(self, model: str) -> None:
        self.model_cooldowns.inc(tags={"model": model})

    def record_error(self, router: str | None, model: str | None, status: int | str) -> None:
        """One error response (or a stream that failed in-band); router/model ``none`` when not known yet."""
        self.requests.inc(tags={"router": router or "none", "model": model or "none", "status": str(status)})


def add(counter: Any, value: float, tags: dict[str, str]) -> None:
    """Ray counters reject increments <= 0; a free request adds nothing, so skip it rather than fail."""
    if value > 0:
        counter.inc(value, tags=tags)


def log_event(event: str, **fields: Any) -> None:
    """One JSON line per event; never pass secrets (API keys are not in any field)."""
    logger.info(json.dumps({"event": event, **fields}, default=str, sort_keys=True))
