"""The remote answer client and the answering policy against real upstreams on loopback: vLLM's own OpenAI
server (``vllm_upstream``) and a fault proxy in front of it (``tests/upstreams.py``) that refuses connections,
rate-limits, errs, answers junk, stalls or cuts streams. No model or server here is a stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from routers.engines import SamplingParams
from serve_app.answer_clients import ModelFailure, ModelRejected, RemoteAnswerClient
from serve_app.answers import Answers
from serve_app.api import ApiError
from serve_app.config import AppConfig
from serve_app.model_health import FleetHealth
from serve_app.openai_shapes import AnswerRequest
from serve_app.routing import Routing
from tests.conftest import UPSTREAM_KEY
from tests.fake_handles import fake_metrics
from tests.upstreams import SERVED_NAME, FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
KEY_ENV = "LLMROUTER_TEST_UPSTREAM_KEY"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CITY_SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"]}}}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)


@pytest.fixture(autouse=True)
def proxy_passes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "proxy" in request.fixturenames:
        proxy = request.getfixturevalue("proxy")
        proxy.mode = "pass"
        if proxy.server is None:
            proxy.start()


def fleet(direct: str, proxied: str, **extra: Any) -> AppConfig:
    """Two endpoint models: ``flaky`` behind the fault proxy, ``steady`` straight to the server."""
    def model(url: str, **more: Any) -> dict[str, Any]:
        return {"endpoint": {"base_url": url, "model": SERVED_NAME, "api_key_env": KEY_ENV, "timeout_s": 20, **more},
                "input_price": 1.0, "output_price": 2.0}

    return AppConfig.model_validate({
        "models": {"flaky": model(proxied), "steady": model(direct)}, "small_model": "flaky", "large_model": "steady",
        "fallback_model": "steady", "routers": {"hybrid": None, "automix": None}, "default_router": "largest",
        "resilience": {"cooldown_failures": 2, "cooldown_s": 3, "max_retry_after_s": 5}, **extra})


def client(config: AppConfig, key: str) -> RemoteAnswerClient:
    return RemoteAnswerClient(key, config.models[key])


def chat(content: str, max_tokens: int = 12, **extra: Any) -> AnswerRequest:
    return AnswerRequest.chat([{"role": "user", "content": content}], SamplingParams(max_tokens=max_tokens), extra)


async def completed(remote: RemoteAnswerClient, request: AnswerRequest) -> Any:
    try:
        return await remote.complete(request)
    finally:
        await remote.aclose()


async def streamed(remote: RemoteAnswerClient, request: AnswerRequest) -> tuple[list[dict[str, Any]], Any]:
    stream = remote.stream(request)
    try:
        return [chunk async for chunk in stream], stream
    finally:
        await stream.aclose()
        await remote.aclose()


# --- the whole request reaches a real server, the answer comes back as it gave it -------------------------------
def test_a_plain_answer_with_the_servers_usage(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    answer = run(completed(client(config, "steady"), chat("What is the capital of France?")))
    assert answer.texts()[0].strip() and not answer.usage_estimated
    assert answer.usage["prompt_tokens"] > 5 and 0 < answer.usage["completion_tokens"] <= 12


def test_n_samples_in_one_request(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    request = AnswerRequest.chat([{"role": "user", "content": "Name a colour."}],
                                 SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=1))
    answer = run(completed(client(config, "steady"), request))
    assert len(answer.texts()) == 3 and len(answer.generation_result().completions) == 3


def test_a_named_tool_choice_returns_a_tool_call(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    request = chat("What is the weather in Paris?", 100, tools=[WEATHER_TOOL], tool_choice="required")
    answer = run(completed(client(config, "steady"), request))
    choice = answer.body["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    # SmolLM2-135M names the tool; its arguments are whatever a 135M model makes of the schema
    assert call["function"]["name"] == "get_weather" and isinstance(call["function"]["arguments"], str)
    assert choice["finish_reason"] == "tool_calls" and call["id"]


def test_a_json_schema_answer_and_logprobs(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    request = chat("Where is the Eiffel Tower? Answer in JSON.", 40, response_format=CITY_SCHEMA,
                   logprobs=True, top_logprobs=2)
    answer = run(completed(client(config, "steady"), request))
    choice = answer.body["choices"][0]
    assert set(json.loads(choice["message"]["content"])) >= {"city", "country"}
    assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == 2


def test_streaming_relays_chunks_and_the_usage_chunk(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    chunks, stream = run(streamed(client(config, "steady"), chat("Count to five.", 10)))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip() and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert stream.usage["completion_tokens"] == 10 or chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not stream.usage_estimated and all("usage" not in c for c in chunks)


def test_a_completions_endpoint_answers_a_chat_request(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url,
                   models={"steady": {"endpoint": {"base_url": vllm_upstream.base_url, "model": SERVED_NAME,
                                                   "api_key_env": KEY_ENV, "api": "completions"}}},
                   small_model="steady", large_model="steady", fallback_model=None)
    answer = run(completed(client(config, "steady"), chat("What is 2 + 2?", 8)))
    assert answer.body["object"] == "chat.completion" and "message" in answer.body["choices"][0]


def test_a_wrong_key_names_the_model_never_a_key(vllm_upstream: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-wrong-canary-0000"
    monkeypatch.setenv(KEY_ENV, wrong)
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    with pytest.raises(ModelFailure) as caught:
        run(completed(client(config, "steady"), chat("hi")))
    assert caught.value.kind == "auth" and "'steady'" in str(caught.value)
    assert wrong not in str(caught.value) and UPSTREAM_KEY not in str(caught.value)


def test_a_request_the_server_refuses_is_the_clients_error(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    with pytest.raises(ModelRejected):  # 4000 words do not fit SmolLM2's 2048-token context
        run(completed(client(config, "steady"), chat("word " * 4000)))


# --- faults -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "kind"), [("500", "server_error"), ("not_json", "bad_response")])
def test_upstream_faults_are_model_failures(vllm_upstream: Any, proxy: FaultProxy, mode: str, kind: str) -> None:
    proxy.mode = mode
    with pytest.raises(ModelFailure) as caught:
        run(completed(client(fleet(vllm_upstream.base_url, proxy.base_url), "flaky"), chat("hi")))
    assert caught.value.kind == kind


def test_a_429_carries_its_retry_after(vllm_upstream: Any, proxy: FaultProxy) -> None:
    proxy.mode, proxy.retry_after = "429", "4"
    with pytest.raises(ModelFailure) as caught:
        run(completed(client(fleet(vllm_upstream.base_url, proxy.base_url), "flaky"), chat("hi")))
    assert caught.value.kind == "rate_limited" and caught.value.retry_after == 4.0


def answers(config: AppConfig, clock: Any = None) -> Answers:
    clients = {key: RemoteAnswerClient(key, spec) for key, spec in config.models.items()}
    health = FleetHealth(config.resilience, clock) if clock is not None else None
    return Answers(config, clients, fake_metrics(), health)


def routed(model_key: str = "flaky") -> Routing:
    return Routing(router="smallest", model_key=model_key, use_large=model_key == "steady", reason="test")


async def answer_and_close(policy: Answers, routing: Routing, request: AnswerRequest) -> Any:
    try:
        return await policy.generate(routing, request)
    finally:
        for remote in policy.clients.values():
            await remote.aclose()


def test_a_dead_upstream_falls_back_cools_down_and_recovers(vllm_upstream: Any, proxy: FaultProxy) -> None:
    now = [0.0]
    policy = answers(fleet(vllm_upstream.base_url, proxy.base_url), clock=lambda: now[0])
    proxy.stop()  # connection refused
    for attempt in range(2):
        routing = routed()
        run(answer_and_close(policy, routing, chat("hi", 4)))
        assert routing.model_key == "steady" and routing.info["fallbacks"] == [{"model": "flaky", "error": "connect"}]
    assert policy.health.cooling("flaky")  # two failures in a row
    assert policy.metrics.model_cooldowns.total(model="flaky") == 1  # type: ignore[union-attr]
    seen = proxy.requests
    proxy.start()
    routing = routed()
    run(answer_and_close(policy, routing, chat("hi", 4)))
    assert routing.model_key == "steady" and proxy.requests == seen  # routed around while cooling
    assert routing.info["fallbacks"] == [{"model": "flaky", "error": "cooldown"}]
    now[0] += 4  # the cooldown is over: tried again, and it answers
    routing = routed()
    run(answer_and_close(policy, routing, chat("hi", 4)))
    assert routing.model_key == "flaky" and "fallbacks" not in routing.info and not policy.health.cooling("flaky")


def test_a_429_moves_on_and_cools_for_retry_after(vllm_upstream: Any, proxy: FaultProxy) -> None:
    now = [0.0]
    policy = answers(fleet(vllm_upstream.base_url, proxy.base_url), clock=lambda: now[0])
    proxy.mode, proxy.retry_after = "429", "30"
    routing = routed()
    run(answer_and_close(policy, routing, chat("hi", 4)))
    assert routing.model_key == "steady" and routing.info["fallbacks"] == [{"model": "flaky", "error": "rate_limited"}]
    assert policy.health.seconds_left("flaky") == 5.0  # Retry-After 30 s, capped at max_retry_after_s


def test_an_upstream_slower_than_its_timeout_falls_back(vllm_upstream: Any, proxy: FaultProxy) -> None:
    config = fleet(vllm_upstream.base_url, proxy.base_url)
    config.models["flaky"].endpoint.timeout_s = 1.0  # type: ignore[union-attr]
    proxy.mode, proxy.slow_s = "slow", 5.0
    routing = routed()
    run(answer_and_close(answers(config), routing, chat("hi", 4)))
    assert routing.model_key == "steady" and routing.info["fallbacks"] == [{"model": "flaky", "error": "timeout"}]


def test_every_model_down_is_a_503(vllm_upstream: Any, proxy: FaultProxy) -> None:
    config = fleet(proxy.base_url, proxy.base_url)
    proxy.mode = "500"
    with pytest.raises(ApiError) as caught:
        run(answer_and_close(answers(config), routed(), chat("hi", 4)))
    assert caught.value.status == 503 and "flaky: server_error | steady: server_error" in caught.value.message


def test_a_bad_request_is_a_400_and_no_fallback(vllm_upstream: Any, proxy: FaultProxy) -> None:
    policy = answers(fleet(vllm_upstream.base_url, proxy.base_url))
    seen = proxy.requests
    with pytest.raises(ApiError) as caught:
        run(answer_and_close(policy, routed("steady"), chat("word " * 4000)))
    assert caught.value.status == 400 and "maximum context length" in caught.value.message.lower()
    assert proxy.requests == seen  # 'flaky' was never asked


def test_a_stream_cut_mid_way_raises_and_closes(vllm_upstream: Any, proxy: FaultProxy) -> None:
    proxy.mode, proxy.cut_after_chunks = "cut_stream", 3
    remote = client(fleet(vllm_upstream.base_url, proxy.base_url), "flaky")
    with pytest.raises(ModelFailure) as caught:
        run(streamed(remote, chat("Count from one to twenty.", 40)))
    assert caught.value.kind in ("connect", "stream_error")
    assert remote.slots()._value == remote.endpoint.max_in_flight  # the slot was given back


def test_capabilities_route_a_tool_request_to_a_model_that_takes_tools(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    config.models["flaky"].capabilities.tools = False
    routing = routed("flaky")
    request = chat("What is the weather in Paris?", 100, tools=[WEATHER_TOOL],
                   tool_choice={"type": "function", "function": {"name": "get_weather"}})
    answer = run(answer_and_close(answers(config), routing, request))
    assert routing.model_key == "steady" and routing.info["rerouted_from"] == "flaky"
    assert routing.info["needs"] == ["tools"] and "cannot take tools" in routing.reason
    assert answer.body["choices"][0]["message"]["tool_calls"]
    config.models["steady"].capabilities.tools = False
    with pytest.raises(ApiError) as caught:
        run(answer_and_close(answers(config), routed("flaky"), request))
    assert caught.value.status == 400 and caught.value.param == "tools"


def test_a_prompt_longer_than_a_models_context_goes_to_one_with_room(vllm_upstream: Any) -> None:
    config = fleet(vllm_upstream.base_url, vllm_upstream.base_url)
    config.models["flaky"].capabilities.context_tokens = 64
    routing = routed("flaky")
    run(answer_and_close(answers(config), routing, chat("Tell me about Paris. " * 40, 8)))
    assert routing.model_key == "steady" and "no room" in routing.reason


def test_the_key_is_read_from_the_environment_only() -> None:
    config = fleet("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    dumped = json.dumps(config.model_dump(mode="json"))
    assert UPSTREAM_KEY not in dumped and KEY_ENV in dumped
    remote = client(config, "steady")
    assert remote.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert remote.scrub(f"echoed {UPSTREAM_KEY}") == "echoed ***"
