"""The ingress's client for Ray Serve LLM answer models: the OpenAI requests it sends an LLMServer handle, and
how it reads responses, streams and errors back (a recording stand-in for the handle; the real LLMServer is
tests/test_serve_vllm_e2e.py's)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from routers.engines import SamplingParams
from routers.engines.base import PLAIN_STOP
from serve_app.answer_clients import LLMServerAnswerClient, LLMServerStream, ModelFailure, ModelRejected
from serve_app.config import AnswerModelSpec, AppConfig
from serve_app.openai_shapes import AnswerRequest
from serve_app.pipelines import Pipelines
from tests.fake_handles import Stream

ROOT = Path(__file__).resolve().parents[1]
AUTOMIX = ROOT / "artifacts/automix"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class FakeLLMServer:
    """Records each request; answers with ``reply(method, request)``."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.requests: list[tuple[str, Any]] = []

    def options(self, **_: Any) -> FakeLLMServer:
        return self

    def __getattr__(self, method: str) -> Any:
        server = self

        class Method:
            @staticmethod
            def remote(request: Any) -> Stream:
                server.requests.append((method, request))
                return Stream(server.reply(method, request))

        return Method()


def chat_response(request: Any, texts: list[str]) -> Any:
    from ray.serve.llm.openai_api_models import ChatCompletionResponse

    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop",
                "token_ids": list(range(len(t.split())))} for i, t in enumerate(texts)]
    return ChatCompletionResponse.model_validate({
        "id": "x", "created": 0, "model": request.model, "choices": choices,
        "usage": {"prompt_tokens": 11, "completion_tokens": sum(len(t.split()) for t in texts), "total_tokens": 0}})


def spec(model: str = "org/chat-model") -> AnswerModelSpec:
    return AnswerModelSpec.model_validate({"engine": {"backend": "vllm", "model": model}, "served_name": "m"})


@pytest.mark.skipif(not (AUTOMIX / "router.json").exists(), reason="automix artifact not shipped")
def test_automix_sends_one_request_with_n_verdicts() -> None:
    from routers.automix.router import AutomixRouter

    samples = AutomixRouter.load(AUTOMIX).config.num_samples

    def reply(method: str, request: Any) -> list[Any]:
        return [chat_response(request, ["42"] if request.n == 1 else ["Yes"] * request.n)]

    server = FakeLLMServer(reply)
    config = AppConfig.model_validate({
        "models": {"small": {"engine": {"backend": "vllm", "model": "org/small"}},
                   "large": {"engine": {"backend": "vllm", "model": "org/large"}}},
        "routers": {"hybrid": None, "automix": {"artifact": str(AUTOMIX)}}, "default_router": "automix"})
    clients = {key: LLMServerAnswerClient(key, config.models[key], server) for key in config.models}
    pipelines = Pipelines(config, clients, None, None, None)
    query = "What is 12 + 30?"
    routing = run(pipelines.route("automix", query, [{"role": "user", "content": query}],
                                  SamplingParams(max_tokens=8)))
    assert [(method, request.n) for method, request in server.requests] == [("chat", 1), ("chat", samples)]
    assert routing.info["verification_samples"] == samples and routing.info["verification_score"] == 1.0
    verify = server.requests[1][1]
    assert verify.model == "small" and not verify.stream
    assert routing.calls[1].completion_tokens == samples  # one token per verdict, per completion


def chat(content: str = "hi", **params: Any) -> AnswerRequest:
    return AnswerRequest.chat([{"role": "user", "content": content}], SamplingParams(**params))


def test_a_chat_result_keeps_every_completion_and_the_servers_token_counts() -> None:
    server = FakeLLMServer(lambda method, request: [chat_response(request, ["a b", "c"])])
    answer = run(LLMServerAnswerClient("m", spec(), server).complete(chat(n=2, temperature=0.5, seed=3, stop=["\n"])))
    assert answer.texts() == ["a b", "c"] and not answer.usage_estimated
    assert answer.usage == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert [c.completion_tokens for c in answer.generation_result().completions] == [2, 1]  # 3 split over 2
    (_, request), = server.requests
    assert (request.n, request.temperature, request.seed, request.stop) == (2, 0.5, 3, ["\n"])


def test_the_whole_request_reaches_the_llm_server() -> None:
    """Tools, a JSON schema and logprobs pass through to vLLM's own request model untouched."""
    server = FakeLLMServer(lambda method, request: [chat_response(request, ["{}"])])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    request = AnswerRequest.chat([{"role": "user", "content": "weather?"}], SamplingParams(),
                                 {"tools": tools, "tool_choice": "none", "response_format": schema,
                                  "logprobs": True, "top_logprobs": 2})
    run(LLMServerAnswerClient("m", spec(), server).complete(request))
    (_, sent), = server.requests
    assert sent.tools[0].function.name == "get_weather" and sent.tool_choice == "none"
    assert sent.response_format.type == "json_schema" and sent.logprobs is True and sent.top_logprobs == 2


def test_a_base_model_without_chat_template_gets_the_plain_prompt_and_stops(tmp_path: Path) -> None:
    from ray.serve.llm.openai_api_models import CompletionResponse

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))

    def reply(method: str, request: Any) -> list[Any]:
        return [CompletionResponse.model_validate({
            "id": "x", "created": 0, "model": "m", "choices": [{"index": 0, "text": " Paris", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}})]

    server = FakeLLMServer(reply)
    client = LLMServerAnswerClient("m", spec(str(tmp_path)), server)
    answer = run(client.complete(chat("Capital of France?", stop=["."])))
    (method, request), = server.requests
    assert method == "completions" and request.prompt == "Question: Capital of France?\nAnswer:"
    assert request.stop == [".", *PLAIN_STOP]
    assert answer.body["choices"][0]["message"] == {"role": "assistant", "content": " Paris"}  # a chat answer


def sse(data: Any) -> str:
    return f"data: {json.dumps(data)}\n\n"


def test_streams_relay_chunks_and_keep_vllms_token_counts() -> None:
    chunks = [
        [sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
         sse({"choices": [{"index": 0, "delta": {"content": "Bl"}}]})],
        [sse({"choices": [{"index": 0, "delta": {"content": "ue"}, "finish_reason": "stop"}]}),
         sse({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
         "data: [DONE]\n\n"],
    ]
    server = FakeLLMServer(lambda method, request: chunks)
    stream = LLMServerAnswerClient("m", spec(), server).stream(chat("colour?", n=3))

    async def collect() -> list[dict[str, Any]]:
        return [chunk async for chunk in stream]

    relayed = run(collect())
    assert [c["choices"][0]["delta"].get("content") for c in relayed] == ["", "Bl", "ue"]
    assert relayed[-1]["choices"][0]["finish_reason"] == "stop"
    (_, request), = server.requests
    assert request.stream and request.n == 1 and request.stream_options.include_usage
    assert stream.usage == {"prompt_tokens": 9, "completion_tokens": 2} and not stream.usage_estimated


def test_vllm_errors_become_400s_for_the_request_and_failures_otherwise() -> None:
    from ray.llm._internal.serve.core.configs.openai_api_models import ErrorInfo, ErrorResponse

    def failing(code: int) -> Any:
        error = ErrorResponse(error=ErrorInfo(message=f"boom {code}", type="BadRequestError", code=code))
        return FakeLLMServer(lambda method, request: [error])

    with pytest.raises(ModelRejected, match="boom 400"):
        run(LLMServerAnswerClient("m", spec(), failing(400)).complete(chat()))
    with pytest.raises(ModelFailure, match="boom 500"):
        run(LLMServerAnswerClient("m", spec(), failing(500)).complete(chat()))
    in_stream = LLMServerStream(Stream([[sse({"error": {"message": "too long", "code": 400}})]]), chat(), "m")
    with pytest.raises(ValueError, match="too long"):
        run(in_stream.__anext__())
