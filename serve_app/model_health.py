"""Which answer models to route around for now: a circuit breaker per model, in each ingress replica.

A model that fails ``cooldown_failures`` times in a row (connection refused, timeouts, 5xx, bad credentials, a
malformed answer) is cooled down for ``cooldown_s``; a 429 cools it at once for its ``Retry-After`` (at most
``max_retry_after_s``; ``cooldown_s`` when it sends none). While cooled, a model is tried only after every
other candidate failed; once the time is up the next request tries it again, and one success clears it.
Each replica keeps its own view: replicas see a uniform share of the traffic, so they learn the same thing
within a few requests, and no shared state sits on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from serve_app.config import ResilienceSettings


@dataclass
class ModelState:
    failures: int = 0  # in a row
    cooled_until: float = 0.0


class FleetHealth:
    def __init__(self, settings: ResilienceSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.states: dict[str, ModelState] = {}

    def state(self, key: str) -> ModelState:
        return self.states.setdefault(key, ModelState())

    def cooling(self, key: str) -> bool:
        return self.clock() < self.state(key).cooled_until

    def seconds_left(self, key: str) -> float:
        return max(0.0, self.state(key).cooled_until - self.clock())

    def succeeded(self, key: str) -> bool:
        """Record a success; True when it ends a cooldown (the model has recovered)."""
        state = self.state(key)
        recovered = state.cooled_until > 0.0
        state.failures, state.cooled_until = 0, 0.0
        return recovered

    def failed(self, key: str, retry_after: float | None = None, rate_limited: bool = False) -> bool:
        """Record a failure; True when it starts a cooldown."""
        state = self.state(key)
        state.failures += 1
        settings = self.settings
        if rate_limited:
            seconds = settings.cooldown_s if retry_after is None else retry_after
            seconds = min(seconds, settings.max_retry_after_s)
        elif state.failures >= settings.cooldown_failures:
            seconds = settings.cooldown_s
        else:
            return False
        if seconds <= 0:
            return False
        starts = not self.cooling(key)
        state.cooled_until = max(state.cooled_until, self.clock() + seconds)
        return starts

    def order(self, keys: list[str]) -> list[str]:
        """``keys`` with the cooled-down ones moved last (still tried when everything else fails)."""
        return [k for k in keys if not self.cooling(k)] + [k for k in keys if self.cooling(k)]
