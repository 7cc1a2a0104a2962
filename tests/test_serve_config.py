"""Fast checks of the Serve app's config and request models (no Ray started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from routers.errors import ConfigError
from serve_app.api import ApiError, ChatCompletionRequest, CompletionRequest, RouteRequest, parse_model_field
from serve_app.config import AppConfig, parse_app_config

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"small-model": "small", "large-model": "large", "small": "small", "large": "large"}
ROUTERS = ["hybrid", "automix", "smallest", "largest", "random"]


def app_args(path: str = "serve_config.yaml") -> dict[str, Any]:
    return yaml.safe_load((ROOT / path).read_text())["applications"][0]["args"]


@pytest.mark.parametrize("path", ["serve_config.yaml", "configs/serve_gpu.yaml"])
def test_shipped_configs_validate(path: str) -> None:
    config = parse_app_config(app_args(path))
    assert config.small_model in config.models and config.large_model in config.models


def test_gpu_config_is_the_production_layout() -> None:
    config = parse_app_config(app_args("configs/serve_gpu.yaml"))
    large = config.models["large"]
    assert large.engine.backend == "vllm" and large.engine.tensor_parallel_size > 1
    gpu_bundles = [b for b in large.deployment.placement_group_bundles or [] if b.get("GPU")]
    assert len(gpu_bundles) == large.engine.tensor_parallel_size
    assert config.embedder is not None and "longformer" in config.embedder.engine.model
    assert config.routers.causal is not None and config.routers.causal.engine["tensor_parallel_size"] > 1


def test_unknown_key_is_named() -> None:
    args = app_args()
    args["modles"] = {}
    with pytest.raises(ConfigError, match="modles"):
        parse_app_config(args)


def test_unknown_engine_key_is_named() -> None:
    args = app_args()
    args["models"]["small"]["engine"]["temprature"] = 0.3
    with pytest.raises(ConfigError, match="temprature"):
        parse_app_config(args)


def test_missing_model_directory_fails_at_build_time(tmp_path: Path) -> None:
    args = app_args()
    args["models"]["small"]["engine"]["model"] = "models/does-not-exist"
    with pytest.raises(ConfigError, match=r"models\.small\.engine\.model"):
        parse_app_config(args).resolved()


def test_missing_router_artifact_fails_at_build_time() -> None:
    args = app_args()
    args["routers"]["hybrid"] = {"artifact": "artifacts/nope"}
    args["models"]["small"]["engine"]["model"] = str(ROOT)  # an existing dir, so the artifact is what fails
    args["models"]["large"]["engine"]["model"] = str(ROOT)
    args["embedder"]["engine"]["model"] = str(ROOT)
    with pytest.raises(ConfigError, match=r"routers\.hybrid\.artifact"):
        parse_app_config(args).resolved()


def test_inconsistent_names_are_rejected() -> None:
    args = app_args()
    args["fallback_model"] = "medium"
    with pytest.raises(ConfigError, match="fallback_model"):
        parse_app_config(args)
    args = app_args()
    args["routers"]["hybrid"] = None
    args["default_router"] = "hybrid"
    with pytest.raises(ConfigError, match="default_router"):
        parse_app_config(args)


def test_hub_ids_pass_but_local_looking_paths_must_exist() -> None:
    config = AppConfig.model_validate(app_args("configs/serve_gpu.yaml"))
    assert config.models["large"].engine.model == "meta-llama/Llama-3.1-70B-Instruct"


@pytest.mark.parametrize(
    ("model", "kind", "threshold", "direct"),
    [
        ("router-hybrid", "hybrid", None, None),
        ("router-hybrid:0.4", "hybrid", 0.4, None),
        ("router-automix:1", "automix", 1.0, None),
        ("router-random:0.2", "random", 0.2, None),
        ("small-model", "direct", None, "small"),
        ("large", "direct", None, "large"),
    ],
)
def test_model_field_parsing(model: str, kind: str, threshold: float | None, direct: str | None) -> None:
    choice = parse_model_field(model, ROUTERS, MODELS)
    assert (choice.kind, choice.threshold, choice.direct_model) == (kind, threshold, direct)


def test_model_router_is_the_default_router() -> None:
    assert parse_model_field("router", ROUTERS, MODELS, "hybrid").kind == "hybrid"
    choice = parse_model_field("router:share=0.2", ROUTERS, MODELS, "automix")
    assert (choice.kind, choice.large_share) == ("automix", 0.2)
    assert parse_model_field("router:0.4", ROUTERS, MODELS, "hybrid").threshold == 0.4
    with pytest.raises(ApiError):  # without a default router, 'router' is not a model
        parse_model_field("router", ROUTERS, MODELS)


@pytest.mark.parametrize(
    ("model", "status"),
    [("router-hybrid:abc", 400), ("router-hybrid:1.01", 400), ("router-hybrid:-0.1", 400), ("router-causal", 404),
     ("gpt-4o", 404), ("router-smallest:0.3", 400), ("router-", 404)],
)
def test_bad_model_fields(model: str, status: int) -> None:
    with pytest.raises(ApiError) as info:
        parse_model_field(model, ROUTERS, MODELS)
    assert info.value.status == status and info.value.body()["error"]["message"]


def test_chat_request_query_is_the_last_user_turn() -> None:
    req = ChatCompletionRequest.model_validate({"model": "router-hybrid", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": [{"type": "text", "text": "second"}]}]})
    assert req.query() == "second"
    assert req.raw_messages()[-1] == {"role": "user", "content": [{"type": "text", "text": "second"}]}


def test_a_tool_result_turn_is_part_of_what_the_router_reads() -> None:
    req = ChatCompletionRequest.model_validate({"model": "router-hybrid", "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"}]})
    assert req.query() == "weather in Paris?\n18C, sunny"


def test_fields_the_router_does_not_know_pass_through() -> None:
    req = ChatCompletionRequest.model_validate({
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "vendor_knob": {"a": 1},
        "response_format": {"type": "json_object"}, "logprobs": True, "top_logprobs": 3, "presence_penalty": 0.5})
    assert req.passthrough() == {"vendor_knob": {"a": 1}, "response_format": {"type": "json_object"},
                                 "logprobs": True, "top_logprobs": 3, "presence_penalty": 0.5}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "system", "content": "only a system turn"}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema"}},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "18C"}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": 300}},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"model": "", "messages": [{"role": "user", "content": "hi"}]},
    ],
)
def test_invalid_chat_requests(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_completion_and_route_requests() -> None:
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["one"]}).text() == "one"
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": ["one", "two"]})
    assert RouteRequest.model_validate({"query": "q"}).texts() == ["q"]
    for bad in ({}, {"query": "q", "queries": ["q"]}, {"queries": []}, {"queries": ["ok", " "]}):
        with pytest.raises(ValidationError):
            RouteRequest.model_validate(bad)
