"""Fast tests of the answering policy's parts (no servers: the real upstreams are in
tests/test_remote_answer_client.py): endpoint config, capabilities and who may answer, fallback chains,
cooldowns, and the OpenAI shapes a request and an answer take on the way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from routers.engines import SamplingParams
from routers.engines.base import PLAIN_STOP
from routers.errors import ConfigError
from serve_app.answer_clients import ChunkReader, ModelFailure, ModelRejected, RemoteAnswerClient, retry_after_seconds
from serve_app.answers import Answers
from serve_app.api import ApiError
from serve_app.config import AnswerModelSpec, AppConfig, ResilienceSettings
from serve_app.model_health import FleetHealth
from serve_app.openai_shapes import AnswerRequest, convert_body, convert_chunk
from serve_app.routing import Routing
from tests.fake_handles import ANSWER, Handle, value
from tests.serve_helpers import as_clients

KEY_ENV = "LLMROUTER_UNIT_KEY"


def endpoint(**extra: Any) -> dict[str, Any]:
    return {"endpoint": {"base_url": "http://127.0.0.1:9/v1/", "model": "up-model", "api_key_env": KEY_ENV},
            **extra}


def fleet(**extra: Any) -> AppConfig:
    models = {"small": {"engine": {"model": "models/small"}}, "remote": endpoint(),
              "vision": endpoint(capabilities={"images": True, "context_tokens": 100_000})}
    return AppConfig.model_validate({"models": models, "small_model": "small", "large_model": "remote",
                                     "fallback_model": "remote", "routers": {"hybrid": None, "automix": None},
                                     "default_router": "largest", **extra})


@pytest.fixture
def policy(monkeypatch: pytest.MonkeyPatch) -> Answers:
    monkeypatch.setenv(KEY_ENV, "sk-unit")
    config = fleet()
    clients: dict[str, Any] = as_clients({"small": Handle(generate=lambda m, p: value(ANSWER))})
    clients.update({key: RemoteAnswerClient(key, config.models[key]) for key in ("remote", "vision")})
    return Answers(config, clients)


def routed(key: str) -> Routing:
    return Routing(router="hybrid", model_key=key, use_large=key != "small", reason="test")


def chat(content: Any = "hi", max_tokens: int = 16, **extra: Any) -> AnswerRequest:
    return AnswerRequest.chat([{"role": "user", "content": content}], SamplingParams(max_tokens=max_tokens), extra)


# --- config ---------------------------------------------------------------------------------------------------
def test_a_model_is_hosted_or_at_an_endpoint_never_both() -> None:
    with pytest.raises(ValidationError, match="exactly one of engine"):
        AnswerModelSpec.model_validate({**endpoint(), "engine": {"model": "m"}})
    with pytest.raises(ValidationError, match="exactly one of engine"):
        AnswerModelSpec.model_validate({"input_price": 1.0})
    spec = AnswerModelSpec.model_validate(endpoint())
    assert spec.endpoint is not None and spec.endpoint.base_url == "http://127.0.0.1:9/v1"
    assert spec.public_name() == "up-model" and not spec.hosted


@pytest.mark.parametrize(("field", "value", "message"), [
    ("api_key_env", "sk-live-123", "NAME of an environment variable"),
    ("base_url", "127.0.0.1:8000/v1", "http:// or https://"),
    ("headers_env", {"api-key": "not a name"}, "name of an environment variable"),
])
def test_endpoint_fields_are_checked(field: str, value: Any, message: str) -> None:
    spec = endpoint()
    spec["endpoint"][field] = value
    with pytest.raises(ValidationError, match=message):
        AnswerModelSpec.model_validate(spec)


def test_fallbacks_name_other_models_and_default_to_all_of_them() -> None:
    config = fleet()
    assert config.fallback_chain("small") == ["remote", "vision"]
    with pytest.raises(ValidationError, match="fallbacks: 'nope'"):
        fleet(models={**config.model_dump()["models"], "small": {"engine": {"model": "m"}, "fallbacks": ["nope"]}})


def test_capabilities_default_by_kind_and_declared_ones_win() -> None:
    config = fleet()
    hosted = config.models["small"].capabilities_resolved()
    assert not (hosted.tools or hosted.json_schema or hosted.images or hosted.logprobs)
    remote = config.models["remote"].capabilities_resolved()
    assert remote.tools and remote.json_schema and remote.logprobs and not remote.images
    assert config.models["vision"].capabilities_resolved().images
    vllm = AnswerModelSpec.model_validate({"engine": {"model": "m", "backend": "vllm", "max_model_len": 4096}})
    assert vllm.capabilities_resolved().context_tokens == 4096 and not vllm.capabilities_resolved().tools


def test_a_missing_key_variable_is_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=KEY_ENV):
        RemoteAnswerClient("remote", fleet().models["remote"])


# --- who answers -------------------------------------------------------------------------------------------------
def test_the_routers_choice_answers_what_it_can(policy: Answers) -> None:
    routing = routed("small")
    assert policy.candidates(routing, chat()) == ["small", "remote", "vision"]
    assert routing.model_key == "small" and routing.rerouted_from is None


def test_a_request_needing_tools_goes_to_the_nearest_model_with_them(policy: Answers) -> None:
    routing = routed("small")
    request = chat(tools=[{"type": "function", "function": {"name": "f"}}])
    assert policy.candidates(routing, request) == ["remote", "vision"]
    assert routing.info["rerouted_from"] == "small" and routing.info["needs"] == ["tools"]
    assert "'small' cannot take tools" in routing.reason


def test_an_image_goes_to_the_model_that_sees_and_none_is_a_400(policy: Answers) -> None:
    image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    routing = routed("remote")
    assert policy.candidates(routing, chat(image)) == ["vision"]
    policy.config.models["vision"].capabilities.images = False
    with pytest.raises(ApiError) as caught:
        policy.candidates(routed("remote"), chat(image))
    assert caught.value.status == 400 and caught.value.code == "unsupported_capability"
    assert caught.value.param == "messages"


def test_a_prompt_too_long_for_every_model_is_a_400(policy: Answers) -> None:
    for key in ("small", "remote", "vision"):
        policy.config.models[key].capabilities.context_tokens = 50
    with pytest.raises(ApiError) as caught:
        policy.candidates(routed("small"), chat("x" * 600))
    assert caught.value.code == "context_length_exceeded"


def test_a_hosted_transformers_model_names_the_field_it_cannot_take(policy: Answers) -> None:
    request = chat(presence_penalty=0.5)
    with pytest.raises(ApiError) as caught:
        asyncio.run(policy.generate(routed("small"), request))
    assert caught.value.status == 400 and caught.value.param == "presence_penalty"
    harmless = chat(user="u-1", metadata={"team": "a"})
    answer = asyncio.run(policy.generate(routed("small"), harmless))
    assert answer.texts() == ["blue"]


# --- cooldowns ---------------------------------------------------------------------------------------------------
def test_a_model_failing_in_a_row_cools_down_then_recovers() -> None:
    now = [0.0]
    health = FleetHealth(ResilienceSettings(cooldown_failures=2, cooldown_s=10), lambda: now[0])
    assert not health.failed("m") and not health.cooling("m")
    assert health.failed("m") and health.cooling("m") and health.order(["m", "n"]) == ["n", "m"]
    now[0] = 11
    assert not health.cooling("m") and health.succeeded("m") and health.state("m").failures == 0


def test_a_429_cools_at_once_for_its_retry_after_up_to_the_cap() -> None:
    now = [0.0]
    health = FleetHealth(ResilienceSettings(cooldown_failures=5, cooldown_s=10, max_retry_after_s=20), lambda: now[0])
    assert health.failed("m", retry_after=3, rate_limited=True) and health.seconds_left("m") == 3
    assert not health.failed("m", retry_after=300, rate_limited=True) and health.seconds_left("m") == 20
    assert health.failed("n", rate_limited=True) and health.seconds_left("n") == 10  # no Retry-After: cooldown_s


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None


# --- shapes on the way ---------------------------------------------------------------------------------------------
def test_the_upstream_body_keeps_every_field_and_sets_the_routers_sampling() -> None:
    request = AnswerRequest.chat([{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
                                 SamplingParams(n=2, max_tokens=9, seed=4, stop=["x"]),
                                 {"response_format": {"type": "json_object"}, "vendor_knob": 1})
    body = request.upstream_body("up", "chat", stream=True)
    assert body["model"] == "up" and body["n"] == 2 and body["max_tokens"] == 9 and body["seed"] == 4
    assert body["vendor_knob"] == 1 and body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system" and body["stream_options"] == {"include_usage": True}
    plain = request.upstream_body("up", "completions", stream=False)
    assert plain["prompt"].endswith("Question: hi\nAnswer:") and plain["stop"] == ["x", *PLAIN_STOP]
    assert request.needs() == ["json_schema"] and request.shapes_the_answer()
    assert not chat(user="u").shapes_the_answer()


def test_bodies_and_chunks_convert_between_the_two_apis() -> None:
    text = {"object": "text_completion", "choices": [{"index": 0, "text": "Paris", "finish_reason": "stop"}]}
    chat_body = convert_body(text, "chat")
    assert chat_body["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    assert convert_body(chat_body, "completions")["choices"][0]["text"] == "Paris"
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Pa"}}]}
    assert convert_chunk(chunk, "completions")["choices"][0]["text"] == "Pa"
    assert convert_chunk(chunk, "chat") is chunk


def test_the_chunk_reader_keeps_usage_and_raises_error_events() -> None:
    reader = ChunkReader("chat", "model 'm'")
    assert reader.read(": keep-alive") is None
    assert reader.read('data: {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null}') is not None
    assert reader.read('data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}') is None
    assert reader.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    assert reader.read("data: [DONE]") is None and reader.done
    with pytest.raises(ModelFailure, match="not JSON"):
        ChunkReader("chat", "m").read("data: <html>")
    with pytest.raises(ModelRejected, match="too long"):
        ChunkReader("chat", "m").read('data: {"error": {"message": "too long", "code": 400}}')
    late = ChunkReader("chat", "m")
    late.read('data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}')
    with pytest.raises(ModelFailure):  # after text has gone out, an error is the model's, whatever its code
        late.read('data: {"error": {"message": "oops", "code": 400}}')


def test_the_reason_names_the_served_model_where_the_artifact_named_its_own() -> None:
    from routers.base import RouteDecision

    roles = {"small": "small", "large": "large"}
    baseline = RouteDecision(query="q", use_large=False, model_name="small", reason="always the smallest model: small")
    assert Routing.decided("smallest", baseline, "small", "smol", roles).reason == (
        "always the smallest model: smol (the artifact's small)")  # not 'smol (...)est'
    name = "org/Mixtral-8x7B-v0.1"
    scored = RouteDecision(query="q", use_large=False, model_name=name, reason=f"0.7 -> {name}.")
    assert Routing.decided("hybrid", scored, "small", "smol", roles).reason == f"0.7 -> smol (the artifact's {name})."
