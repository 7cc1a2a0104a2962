"""The real ingress app (routes, guard, error handlers, response models) in process, without Ray Serve:
the ingress instance is injected where Serve would inject its replica, and the deployments it calls are
fakes that fail on purpose. Covers what is hard to provoke on a live app: a router step that raises, an
answer model that rejects parameters or dies before or during a stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ray import exceptions as ray_errors

from serve_app import guard as guard_module
from serve_app import ingress as ingress_module
from serve_app.api import ChatCompletionResponse, RouteResponse
from tests.fake_handles import Handle, Stream, answer_model, answering, fake_metrics, remote_error, value
from tests.serve_helpers import as_clients

ROOT = Path(__file__).resolve().parents[1]
HYBRID_ARTIFACT = ROOT / "artifacts/hybrid_llm"
pytestmark = pytest.mark.skipif(not (HYBRID_ARTIFACT / "router.json").exists(), reason="hybrid artifact not shipped")


def app_args() -> dict[str, Any]:
    return {
        "models": {"small": {"engine": {"model": "org/small"}, "input_price": 1.0, "output_price": 1.0},
                   "large": {"engine": {"model": "org/large"}, "input_price": 10.0, "output_price": 30.0}},
        "embedder": {"engine": {"model": "org/all-minilm-l6-v2"}},
        "routers": {"hybrid": {"artifact": str(HYBRID_ARTIFACT)}, "automix": None},
        "timeouts": {"router_s": 1.0, "answer_s": 0.5, "stream_chunk_s": 0.5},
        "auth": {"api_keys": [], "api_keys_env": None},
    }


@pytest.fixture
def ingress() -> Iterator[Any]:
    """A RouterIngress (the real class) answering for the module's FastAPI app, as a replica would."""
    cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
    instance = cls(app_args(), {"small": answer_model(), "large": answer_model()})
    instance.metrics = fake_metrics()
    guard_module.GUARD.metrics = instance.metrics
    # A working embedder unless a test breaks it: the artifact's own input size.
    dim = instance.pipelines.embedding_routers["hybrid"].mlp.input_dim
    instance.pipelines.embedder = Handle(embed_one=lambda q: value(np.full(dim, 0.01, dtype=np.float32)))
    try:
        with answering(instance):
            yield instance
    finally:
        guard_module.GUARD.metrics = None


def post(path: str, body: dict[str, Any]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=ingress_module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, json=body)

    return asyncio.run(go())


def chat(model: str = "router-hybrid", **extra: Any) -> httpx.Response:
    return post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Name a color."}],
                                         "max_tokens": 4, **extra})


def events(response: httpx.Response) -> list[Any]:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_a_working_pipeline_answers_with_a_schema_valid_body(ingress: Any) -> None:
    response = chat()
    assert response.status_code == 200, response.text
    body = ChatCompletionResponse.model_validate(response.json())
    assert body.routing.router == "hybrid" and body.routing.fallback is False
    route = post("/v1/route", {"model": "router-hybrid", "queries": ["a", "b"]})
    assert route.status_code == 503  # the fake embedder has no batch method: a router failure, not a 500
    single = post("/v1/route", {"model": "router-hybrid", "query": "a"})
    assert RouteResponse.model_validate(single.json()).data[0].router == "hybrid"


def test_a_router_step_that_raises_falls_back(ingress: Any) -> None:
    # An embedder whose dimension the artifact was not trained on: the library raises ConfigError.
    ingress.pipelines.embedder = Handle(embed_one=lambda q: value(np.zeros(3, dtype=np.float32)))
    response = chat()
    assert response.status_code == 200, response.text
    routing = response.json()["routing"]
    assert routing["fallback"] is True and routing["model_key"] == "large"
    assert "hybrid MLP failed" in routing["reason"]
    assert ingress.metrics.requests.total(status="fallback", router="hybrid") == 1


def test_bad_sampling_parameters_from_the_model_are_400_not_503(ingress: Any) -> None:
    rejecting = answer_model(remote_error(ValueError("Seed must be between 0 and 2**64 - 1")))
    ingress.answers.clients = as_clients({"small": rejecting, "large": rejecting})
    response = chat("router-smallest", seed=7)
    assert response.status_code == 400, response.text
    assert "Seed must be" in response.json()["error"]["message"] and "Traceback" not in response.text
    assert rejecting.generate.calls == 1  # not retried on the other model
    assert ingress.metrics.requests.total(status="400", router="smallest") == 1


def test_stream_from_a_dead_model_is_retried_before_the_head_chunk(ingress: Any) -> None:
    dead = answer_model(stream=Stream([ray_errors.ActorDiedError()]))
    ingress.answers.clients = as_clients({"small": dead, "large": answer_model(stream=Stream(["Bl", "ue"]))})
    response = chat("router-smallest", stream=True)
    assert response.status_code == 200
    chunks = events(response)
    assert chunks[0]["routing"]["retried_on"] == "large" and chunks[0]["model"] == "large"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"]) == "Blue"
    assert chunks[-1] == "[DONE]"


def test_stream_with_both_models_down_is_a_503_not_a_200_stream(ingress: Any) -> None:
    down = {k: answer_model(stream=Stream([ray_errors.ActorDiedError()])) for k in ("small", "large")}
    ingress.answers.clients = as_clients(down)
    response = chat("router-smallest", stream=True)
    assert response.status_code == 503
    assert response.headers["retry-after"] and response.json()["error"]["code"] == "model_unavailable"


def test_stream_that_stalls_mid_way_ends_with_an_error_event_then_done(ingress: Any) -> None:
    stalls = Stream(["Bl", "ue"], delays=[0.0, 5.0])
    ingress.answers.clients = as_clients({"small": answer_model(stream=stalls), "large": answer_model()})
    response = chat("router-smallest", stream=True)
    assert response.status_code == 200
    chunks = events(response)
    assert chunks[-1] == "[DONE]" and chunks[-2]["error"]["type"] == "server_error"
    assert stalls.cancelled


def test_an_unexpected_bug_is_a_clean_500(ingress: Any) -> None:
    def broken(*_: Any) -> None:
        raise KeyError("internal table missing")

    ingress.pipelines.route = broken
    response = chat()
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "internal table" not in response.text and "KeyError" not in response.text
