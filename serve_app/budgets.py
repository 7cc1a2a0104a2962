"""Per-API-key spend budgets and rate limits, shared by every ingress replica.

``KeyLedger`` is plain Python (the window and bucket arithmetic, reservations); in the app it runs as one
named, detached Ray actor (``ledger_actor``), so its state outlives ingress replicas and is the same for all
of them. Its methods run one at a time, so an admission is atomic. The ingress side is ``KeyBudgets``: one
actor call before routing (``admit``: may this key spend now, and how?), one after the answer (``settle``:
its real cost), never a secret (keys are known by their name or ``key-<8 hex>`` id).

Admission of a request that spends reserves an estimate (``reserve_usd``, default the large model's price of
the request) and is refused unless ``spent + reserved + reservation <= budget``; settling replaces the
reservation by the real cost. So spend passes the budget only by what requests in flight cost beyond their
reservations: ``overrun <= sum over requests in flight of max(0, cost - reservation)``, zero while
reservations cover the cost (a reservation is capped at the budget, so one request bigger than the whole
budget is admitted only into an idle, unspent window).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routers.engines import SamplingParams
from serve_app.api import ApiError
from serve_app.config import AppConfig, BudgetPolicy, BudgetSettings
from serve_app.observability import RouterMetrics, log_event
from serve_app.routing import Routing

BUDGET_SMALL = "exhausted -> small model"


# --- the ledger (plain Python; the actor's class) ------------------------------------------------------------
@dataclass
class KeyState:
    """One key: spend settled in the current window, reservations in flight, and its rate bucket."""

    window_s: float = 0.0
    window_end: float = 0.0
    spent: float = 0.0
    reservations: dict[str, tuple[float, float]] = field(default_factory=dict)  # ticket -> (usd, expires at)
    tokens: float | None = None  # None: a full bucket
    updated: float = 0.0

    @property
    def reserved(self) -> float:
        return sum(usd for usd, _ in self.reservations.values())

    def roll(self, window_s: float, now: float) -> None:
        """A new fixed window (aligned to the epoch) resets spend; reservations in flight carry over."""
        if window_s != self.window_s or now >= self.window_end:
            if now >= self.window_end:
                self.spent = 0.0
            self.window_s = window_s
            self.window_end = (math.floor(now / window_s) + 1) * window_s


class KeyLedger:
    """Per-key spend windows and rate buckets; ``policy`` is a ``BudgetPolicy`` as a dict, sent with each call
    (so every replica's config applies as it is, and a config change needs no ledger restart)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.keys: dict[str, KeyState] = {}

    def admit(self, key: str, policy: dict[str, Any], reservation: float, spends: bool = True,
              ttl_s: float = 900.0) -> dict[str, Any]:
        """``allowed`` (with ``mode`` normal | small and a ``ticket`` to settle), or ``reason`` rate | budget
        and ``retry_after_s``. ``spends=False`` (route-only) counts for the rate limit only."""
        now = self.clock()
        state = self.keys.setdefault(key, KeyState())
        for ticket, (_, expires) in list(state.reservations.items()):
            if expires <= now:  # never settled (its replica died): stop holding budget for it
                del state.reservations[ticket]
        rpm = policy.get("requests_per_minute")
        if rpm:
            capacity = float(policy.get("burst") or max(1, math.ceil(rpm)))
            rate = rpm / 60.0
            full = capacity if state.tokens is None else state.tokens + (now - state.updated) * rate
            state.tokens, state.updated = min(capacity, full), now
            if state.tokens < 1.0:
                return {"allowed": False, "reason": "rate", "retry_after_s": (1.0 - state.tokens) / rate}
        budget = policy.get("usd_per_window") if spends else None
        mode = "normal"
        if budget is not None:
            state.roll(float(policy.get("window_s") or 86400.0), now)
            reservation = min(max(reservation, 0.0), budget)
            if state.spent + state.reserved + reservation > budget:
                if policy.get("when_exhausted") != "small":
                    # held by requests in flight (they may settle for less): retry soon; else at the window's end
                    soon = state.spent + reservation <= budget
                    return {"allowed": False, "reason": "budget", "spent_usd": state.spent,
                            "retry_after_s": 1.0 if soon else state.window_end - now}
                mode, reservation = "small", 0.0
        if rpm:
            state.tokens = (state.tokens or 0.0) - 1.0
        ticket = None
        if budget is not None:
            ticket = uuid.uuid4().hex
            state.reservations[ticket] = (reservation, now + ttl_s)
        return {"allowed": True, "mode": mode, "ticket": ticket, "reservation": reservation}

    def settle(self, key: str, ticket: str, cost: float) -> None:
        """Replace the reservation by the request's real cost (0 for one that failed)."""
        state = self.keys.setdefault(key, KeyState())
        state.reservations.pop(ticket, None)
        if state.window_s:
            state.roll(state.window_s, self.clock())
        state.spent += max(cost, 0.0)

    def snapshot(self, key: str) -> dict[str, Any]:
        state = self.keys.get(key, KeyState())
        return {"spent_usd": state.spent, "reserved_usd": state.reserved, "in_flight": len(state.reservations),
                "tokens": state.tokens, "window_end": state.window_end}

    def ping(self) -> bool:
        return True


def ledger_actor(settings: BudgetSettings) -> Any:
    """The one ledger of the cluster: named and detached, so it outlives the replicas that use it; the first
    replica creates it, the others (and restarted ones) get the same one. No CPU reserved; ``max_restarts``
    brings it back (empty) if its node dies, so pinning it to the head node is the default."""
    import ray

    options: dict[str, Any] = {"name": settings.ledger_name, "namespace": settings.ledger_namespace,
                               "lifetime": "detached", "get_if_exists": True, "num_cpus": 0, "max_restarts": -1}
    if settings.ledger_on_head:
        options["resources"] = {"node:__internal_head__": 0.001}
    return ray.remote(KeyLedger).options(**options).remote()


# --- the ingress side ----------------------------------------------------------------------------------------
@dataclass
class Admission:
    """What a request was admitted with: its key id, ``small`` when the budget is spent, a ticket to settle."""

    key_id: str
    mode: str = "normal"
    ticket: str | None = None
    settled: bool = False


class BudgetRouting(Routing):
    """The small model, without routing, because the key's budget for this window is spent."""

    budget: str = BUDGET_SMALL

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "budget": self.budget}


def budget_routing(kind: str, small_model: str) -> BudgetRouting:
    return BudgetRouting(router=kind, model_key=small_model, use_large=False,
                         reason=f"the API key's budget for this window is spent: answered by {small_model!r} "
                                "without routing")


def estimate_reservation(config: AppConfig, policy: BudgetPolicy, messages: list[dict[str, str]],
                         params: SamplingParams, model_key: str | None = None) -> float:
    """What to hold while the request runs: ``reserve_usd``, else the price on ``model_key`` (default the large
    model) of the prompt at 2 characters a token (plus 16 a message for the chat template) and n * max_tokens.
    AutoMix's small-model answer and verification are not in it: give AutoMix keys a ``reserve_usd``."""
    if policy.reserve_usd is not None:
        return policy.reserve_usd
    spec = config.models[model_key or config.large_model]
    chars = sum(len(m["content"]) for m in messages)
    return spec.call_cost(chars // 2 + 16 * len(messages), params.max_tokens * params.n)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class KeyBudgets:
    """The ingress's side of the ledger: which policy a key has, one admission call, settling."""

    def __init__(self, settings: BudgetSettings, metrics: RouterMetrics, ledger: Any | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ledger = ledger

    def connect(self, wait_s: float = 60.0) -> None:
        """Create (or find) the ledger actor and wait until it answers, so a replica is ready only with it."""
        import ray

        try:
            self.ledger = ledger_actor(self.settings)
            ray.get(self.ledger.ping.remote(), timeout=wait_s)
        except Exception as exc:  # noqa: BLE001 - requests then follow on_ledger_error
            log_event("ledger_error", step="connect", error=f"{type(exc).__name__}: {exc}"[:300])

    def policy_for(self, key_id: str) -> BudgetPolicy | None:
        return self.settings.keys.get(key_id, self.settings.default)

    async def admit(self, key_id: str, reservation: Callable[[BudgetPolicy], float], spends: bool) -> Admission:
        """One ledger call; raises the 429 (or, ledger down and ``on_ledger_error: refuse``, the 503)."""
        policy = self.policy_for(key_id)
        if policy is None or (policy.requests_per_minute is None and (policy.usd_per_window is None or not spends)):
            return Admission(key_id)
        if self.ledger is None:  # connect() failed to create it (or Ray is not up): the configured failure mode
            return self.ledger_failed(key_id, RuntimeError("no budget ledger"))
        held = reservation(policy) if spends and policy.usd_per_window is not None else 0.0
        try:
            verdict = await asyncio.wait_for(
                self.ledger.admit.remote(key_id, policy.model_dump(), held, spends, self.settings.reservation_ttl_s),
                timeout=self.settings.ledger_timeout_s)
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out, died: the configured failure mode
            return self.ledger_failed(key_id, exc)
        if not verdict["allowed"]:
            raise self.refusal(key_id, policy, verdict)
        return Admission(key_id, mode=verdict["mode"], ticket=verdict["ticket"])

    def ledger_failed(self, key_id: str, exc: BaseException) -> Admission:
        action = self.settings.on_ledger_error
        log_event("ledger_error", key=key_id, on_error=action, error=f"{type(exc).__name__}: {exc}"[:300])
        self.metrics.ledger_errors.inc(tags={"on_error": action})
        if action == "allow":
            return Admission(key_id)
        self.metrics.key_refusals.inc(tags={"key": key_id, "reason": "ledger_error"})
        raise ApiError(503, "the budget ledger is unavailable; retry shortly", kind="server_error",
                       code="ledger_unavailable", headers=retry_after(1))

    def refusal(self, key_id: str, policy: BudgetPolicy, verdict: dict[str, Any]) -> ApiError:
        reason = verdict["reason"]
        headers = retry_after(verdict["retry_after_s"])
        self.metrics.key_refusals.inc(tags={"key": key_id, "reason": reason})
        log_event("key_refused", key=key_id, reason=reason, retry_after_s=headers["Retry-After"])
        if reason == "rate":
            return ApiError(429, f"rate limit of {policy.requests_per_minute:g} requests per minute reached for API "
                            f"key {key_id!r}; retry after {headers['Retry-After']} s", kind="rate_limit_error",
                            code="rate_limit_exceeded", headers=headers)
        return ApiError(429, f"API key {key_id!r} has spent its budget of ${policy.usd_per_window:g} per "
                        f"{policy.window_s:g} s window; retry after {headers['Retry-After']} s",
                        kind="insufficient_quota", code="budget_exhausted", headers=headers)

    def settle(self, admission: Admission, cost: float) -> None:
        """Fire and forget (the answer is not held up); idempotent, so a failed request can release too."""
        if admission.ticket is None or admission.settled:
            return
        admission.settled = True
        try:
            self.ledger.settle.remote(admission.key_id, admission.ticket, float(cost))
        except Exception as exc:  # noqa: BLE001 - the reservation then expires after reservation_ttl_s
            log_event("ledger_error", step="settle", key=admission.key_id, error=f"{type(exc).__name__}: {exc}"[:300])
            self.metrics.ledger_errors.inc(tags={"on_error": "settle"})
