"""Stand-ins for Ray Serve deployment handles and metrics, for driving the ingress without a cluster.

``Handle(method=fn)`` gives ``handle.method.remote(...)`` that calls ``fn``; ``value`` turns a result (or
an exception, raised) into an awaitable like a DeploymentResponse; ``Stream`` is a remote token stream.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray import exceptions as ray_errors

from serve_app.observability import RouterMetrics

# One answer-model completion, as ``generate`` returns it.
ANSWER = {"prompt_tokens": 2, "completions": [{"text": "blue", "finish_reason": "stop", "completion_tokens": 1}]}


class FakeCounter:
    """Records what RouterMetrics adds, per (metric, sorted tags)."""

    def __init__(self, name: str, **_: Any) -> None:
        self.name = name
        self.totals: Counter = Counter()

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        assert value > 0, "Ray counters reject increments <= 0"
        self.totals[tuple(sorted((tags or {}).items()))] += value

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.totals[tuple(sorted((tags or {}).items()))] += 1

    def total(self, **tags: str) -> float:
        return sum(v for k, v in self.totals.items() if set(tags.items()) <= set(k))


def fake_metrics() -> RouterMetrics:
    return RouterMetrics(counter=FakeCounter, histogram=FakeCounter)


class Remote:
    """A deployment method: ``.remote(...)`` returns an awaitable, like a DeploymentResponse."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls = 0

    def remote(self, *args: Any) -> Any:
        self.calls += 1
        return self.fn(*args)


async def value(result: Any, delay: float = 0.0) -> Any:
    await asyncio.sleep(delay)
    if isinstance(result, BaseException):
        raise result
    return result


class Handle:
    def __init__(self, **methods: Any) -> None:
        for name, fn in methods.items():
            setattr(self, name, Remote(fn))

    def options(self, **_: Any) -> Handle:
        return self


class Stream:
    """A remote token stream: ``items`` (an exception item is raised), ``delays`` before each."""

    def __init__(self, items: list[Any], delays: list[float] | None = None) -> None:
        self.items = list(items)
        self.delays = list(delays or [0.0] * len(items))
        self.cancelled = False

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> str:
        if not self.items:
            raise StopAsyncIteration
        await asyncio.sleep(self.delays.pop(0) if self.delays else 0.0)
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


def remote_error(cause: Exception) -> Exception:
    return ray_errors.RayTaskError("generate", "Traceback (most recent call last): ...", cause).as_instanceof_cause()


def answer_model(generate: Any = ANSWER, stream: Stream | None = None) -> Handle:
    """An answer-model deployment whose usage counts about four characters a token."""
    return Handle(generate=lambda m, p: value(generate), stream=lambda m, p: stream,
                  usage=lambda m, t: value({"prompt_tokens": 2, "completion_tokens": max(1, len(t) // 4)}))


def servable_dependency() -> Any:
    """The dependency through which Serve hands each route its replica's instance (``self``)."""
    import inspect

    from ray.serve._private.http_util import _walk_fastapi_routes

    from serve_app import ingress as ingress_module

    for route, _, _ in _walk_fastapi_routes(ingress_module.app):
        endpoint = getattr(route, "endpoint", None)
        if getattr(endpoint, "_serve_cls", None) is not None:
            return inspect.signature(endpoint).parameters["self"].default.dependency
    raise AssertionError("no Serve class-based route found")


@contextmanager
def answering(instance: Any) -> Iterator[Any]:
    """Route the ingress module's FastAPI app to ``instance``, as Serve routes a replica's requests to it."""
    from serve_app import ingress as ingress_module

    dependency = servable_dependency()
    ingress_module.app.dependency_overrides[dependency] = lambda: instance
    try:
        yield instance
    finally:
        ingress_module.app.dependency_overrides.pop(dependency, None)
