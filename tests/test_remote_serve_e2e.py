"""End to end, bring your own models: ``configs/serve_remote.yaml`` in a real Serve app, with a hosted small model
(SmolLM2 on transformers) and, as the large one, vLLM's own OpenAI server (``vllm_upstream``) behind a fault proxy
on loopback; called with the ``openai`` client and ``httpx``. The key the upstream wants is a canary: it must never
show in a response or in the Serve logs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.serve_helpers import (
    ask,
    default_app_args,
    free_port,
    missing_prerequisites,
    serve_log_text,
    start_serve,
    stop_serve,
)
from tests.upstreams import SERVED_NAME, FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
CONFIG = "configs/serve_remote.yaml"
KEY_ENV = "LLMROUTER_REMOTE_KEY"
HOSTED = "smollm2-135m-instruct"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def served(proxy: FaultProxy) -> Iterator[str]:
    missing = missing_prerequisites()
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing: {missing}")
    args = default_app_args(CONFIG)
    args["models"]["large"]["endpoint"]["base_url"] = proxy.base_url
    args["resilience"] = {"cooldown_failures": 1, "cooldown_s": 2, "max_retry_after_s": 2}
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, UPSTREAM_KEY)  # Ray's workers inherit it: the ingress reads it there
        url = start_serve(args, free_port(), num_cpus=2)
        try:
            yield url
        finally:
            stop_serve()


@pytest.fixture(autouse=True)
def proxy_passes(proxy: FaultProxy) -> Iterator[None]:
    yield
    proxy.mode = "pass"
    if proxy.server is None:
        proxy.start()


def routing_of(reply: Any) -> dict[str, Any]:
    return reply.model_extra["routing"]


def test_routers_choose_between_the_hosted_and_the_remote_model(openai_client: Any) -> None:
    for model, answered_by in (("router-hybrid:0", HOSTED), ("router-hybrid:1", SERVED_NAME),
                               ("router-smallest", HOSTED), ("router-largest", SERVED_NAME)):
        reply = ask(openai_client, model)
        routing = routing_of(reply)
        assert reply.model == routing["model"] == answered_by, (model, routing)
        assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens > 0
        assert routing["cost"] > 0 and "fallbacks" not in routing
    blend = routing_of(ask(openai_client, "router"))
    assert blend["router"] == "blend" and blend["model"] in (HOSTED, SERVED_NAME)


def test_n_samples_from_the_remote_model(openai_client: Any) -> None:
    reply = ask(openai_client, "router-largest", "Name a colour.", n=3, temperature=1.0, seed=7)
    assert len(reply.choices) == 3 and all(c.message.content for c in reply.choices)


def test_a_streamed_remote_answer_with_usage(openai_client: Any) -> None:
    chunks = list(openai_client.chat.completions.create(
        model="router-largest", messages=[{"role": "user", "content": "Count to five."}], max_tokens=12,
        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].model_extra["routing"]["model"] == SERVED_NAME
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage.completion_tokens > 0
    final = chunks[-1].model_extra["routing"]
    assert final["cost"] > 0 and not final.get("usage_estimated")
    assert len({c.id for c in chunks}) == 1


def test_a_tool_call_goes_to_the_model_that_takes_tools(openai_client: Any) -> None:
    """router-smallest picks the hosted model, which takes no tools: the remote one answers, and says why."""
    reply = ask(openai_client, "router-smallest", "What is the weather in Paris?", max_tokens=100,
                tools=[WEATHER_TOOL], tool_choice="required")
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
    routing = routing_of(reply)
    assert routing["model"] == SERVED_NAME and routing["rerouted_from"] == "small" and routing["needs"] == ["tools"]
    follow_up = openai_client.chat.completions.create(
        model="router-hybrid", max_tokens=16, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "tool_calls": [tc.model_dump() for tc in choice.message.tool_calls]},
        {"role": "tool", "tool_call_id": choice.message.tool_calls[0].id, "content": "18C and sunny"}])
    assert routing_of(follow_up)["model"] == SERVED_NAME  # a tool turn needs a model that takes tools


def test_json_schema_and_logprobs_pass_through(openai_client: Any) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    reply = ask(openai_client, "router-blend", "Which city is the Eiffel Tower in? Answer in JSON.", max_tokens=30,
                response_format=schema, logprobs=True, top_logprobs=2)
    assert "city" in json.loads(reply.choices[0].message.content)
    assert len(reply.choices[0].logprobs.content[0].top_logprobs) == 2
    assert routing_of(reply)["model"] == SERVED_NAME


def test_the_hosted_model_names_a_field_it_cannot_take(served: str) -> None:
    body = {"model": HOSTED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "presence_penalty": 1}
    response = httpx.post(f"{served}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400 and response.json()["error"]["param"] == "presence_penalty"
    body["model"] = SERVED_NAME  # the remote model takes it, and fields the router has never heard of
    response = httpx.post(f"{served}/v1/chat/completions", json={**body, "top_k": 5}, timeout=120)
    assert response.status_code == 200, response.text


def test_models_list_the_remote_model_and_no_secret(served: str) -> None:
    listing = httpx.get(f"{served}/v1/models", timeout=30)
    assert SERVED_NAME in {m["id"] for m in listing.json()["data"]} and UPSTREAM_KEY not in listing.text


def test_a_dead_upstream_falls_back_then_recovers(openai_client: Any, proxy: FaultProxy) -> None:
    proxy.stop()
    reply = ask(openai_client, "router-largest")
    routing = routing_of(reply)
    assert routing["model"] == HOSTED and routing["fallbacks"] == [{"model": "large", "error": "connect"}]
    streamed = list(openai_client.chat.completions.create(
        model="router-largest", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True))
    assert streamed[0].model_extra["routing"]["model"] == HOSTED  # in cooldown: straight to the fallback
    proxy.start()
    time.sleep(2.5)  # the cooldown ends
    assert routing_of(ask(openai_client, "router-largest"))["model"] == SERVED_NAME


def test_an_upstream_cut_mid_stream_ends_with_an_error_event(served: str, proxy: FaultProxy) -> None:
    proxy.mode, proxy.cut_after_chunks = "cut_stream", 3
    body = {"model": "router-largest", "messages": [{"role": "user", "content": "Count from one to thirty."}],
            "max_tokens": 60, "stream": True}
    with httpx.stream("POST", f"{served}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "model_unavailable" and "mid-stream" in error["message"]
    assert len(events) >= 4  # the chunks before the cut were relayed


def test_a_client_that_goes_away_closes_the_upstream_request(served: str, proxy: FaultProxy) -> None:
    time.sleep(2.5)  # a fault test before this one may have cooled 'large' down (cooldown_s 2)
    abandoned = proxy.abandoned
    body = {"model": "router-largest", "messages": [{"role": "user", "content": "Write a long story about a fox."}],
            "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{served}/v1/chat/completions", json=body, timeout=120) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["routing"]["model"] == SERVED_NAME
    deadline = time.time() + 20  # the client hung up after one chunk: the ingress closes its upstream stream
    while proxy.abandoned == abandoned and time.time() < deadline:
        time.sleep(0.2)
    assert proxy.abandoned == abandoned + 1


def test_the_upstream_key_never_reaches_the_logs(openai_client: Any, served: str) -> None:
    ask(openai_client, "router-largest")
    time.sleep(1)
    logs = serve_log_text()
    assert "remote" in logs.lower() or "large" in logs  # the logs are there and were read
    assert UPSTREAM_KEY not in logs
