"""How the ingress calls an answer model, whichever deployment hosts it.

Two hosts, one interface (:class:`AnswerClient`):

- :class:`DeploymentAnswerClient`: our ``AnswerModel`` deployment (the transformers engine, ``@serve.batch``);
- :class:`LLMServerAnswerClient`: a Ray Serve LLM ``LLMServer`` (vLLM), called with OpenAI request models.

Both return the same result shape (``{"model", "prompt_tokens", "completions": [{"text", "finish_reason",
"completion_tokens"}]}``) and raise the same kinds of errors: a ``ValueError`` for a request the model
rejects (the ingress answers 400), anything else for a failure (retry on the other model, or 5xx). The
calls are returned un-awaited so the ingress's timeouts can cancel them.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

from routers.engines.base import PLAIN_STOP, SamplingParams, render_plain_chat
from routers.errors import EngineError
from serve_app.config import AnswerModelSpec

Messages = list[dict[str, str]]


class AnswerClient(ABC):
    @abstractmethod
    def generate(self, messages: Messages, params: SamplingParams) -> Awaitable[dict[str, Any]]:
        """All ``params.n`` completions of one chat."""

    @abstractmethod
    def stream(self, messages: Messages, params: SamplingParams) -> Any:
        """An async iterator of text deltas with a ``cancel()`` method."""

    @abstractmethod
    def usage(self, messages: Messages, completion: str, stream: Any) -> Awaitable[dict[str, int]]:
        """Token counts of a finished stream (``stream`` as :meth:`stream` returned it; it yields only text)."""


class DeploymentAnswerClient(AnswerClient):
    """Our ``AnswerModel`` deployment: the handle's own responses (``DeploymentResponse`` can be cancelled)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def generate(self, messages: Messages, params: SamplingParams) -> Awaitable[dict[str, Any]]:
        return self.handle.generate.remote(messages, params.model_dump())

    def stream(self, messages: Messages, params: SamplingParams) -> Any:
        return self.handle.options(stream=True).stream.remote(messages, params.model_dump())

    def usage(self, messages: Messages, completion: str, stream: Any) -> Awaitable[dict[str, int]]:
        return self.handle.usage.remote(messages, completion)


def has_chat_template(model: str) -> bool:
    """Whether a local model directory ships a chat template; hub ids (GPU clusters) are assumed to."""
    path = Path(model)
    if not path.is_dir():
        return True
    if (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists():
        return True
    config = path / "tokenizer_config.json"
    return config.exists() and bool(json.loads(config.read_text()).get("chat_template"))


def raise_error(code: int | None, message: str) -> None:
    """vLLM's OpenAI-layer error as the exception the ingress classifies: 4xx = the request's fault."""
    code = int(code or 500)
    if 400 <= code < 500:
        raise ValueError(message)
    raise EngineError(f"vLLM server error {code}: {message}")


def raise_for_error(item: Any) -> None:
    # LLMServer yields the internal ErrorResponse (the public ray.serve.llm class is a subclass of it)
    from ray.llm._internal.serve.core.configs.openai_api_models import ErrorResponse

    if isinstance(item, ErrorResponse):
        raise_error(item.error.code, str(item.error.message))


class LLMServerStream:
    """Deltas from ``LLMServer.chat/completions(stream=True)``: lists of ``data: {json}`` SSE strings."""

    def __init__(self, response: Any, chat: bool) -> None:
        self.response = response
        self.chat = chat
        self.pending: list[str] = []
        self.done = False
        self.usage: dict[str, int] | None = None  # vLLM's token counts, in the stream's last chunk

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while not self.pending:
            if self.done:
                raise StopAsyncIteration
            batch = await self.response.__anext__()
            for event in batch if isinstance(batch, list) else [batch]:
                self.pending.extend(self.deltas(event))
        return self.pending.pop(0)

    def deltas(self, event: Any) -> list[str]:
        raise_for_error(event)
        if not isinstance(event, str):
            raise EngineError(f"unexpected stream item from LLMServer: {type(event).__name__}")
        payload = event.strip().removeprefix("data:").strip()
        if not payload:
            return []
        if payload == "[DONE]":
            self.done = True
            return []
        data = json.loads(payload)
        if "error" in data:
            raise_error(data["error"].get("code"), str(data["error"].get("message")))
        if data.get("usage"):
            self.usage = {"prompt_tokens": int(data["usage"]["prompt_tokens"]),
                          "completion_tokens": int(data["usage"]["completion_tokens"])}
        out = []
        for choice in data.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            if text:
                out.append(text)
        return out

    def cancel(self) -> None:
        self.response.cancel()


class LLMServerAnswerClient(AnswerClient):
    """A Ray Serve LLM ``LLMServer`` (vLLM): chat models through ``chat``; base models without a chat
    template through ``completions`` with the transformers engine's Q/A prompt and stops."""

    def __init__(self, handle: Any, spec: AnswerModelSpec) -> None:
        self.handle = handle
        self.model_id = spec.public_name()
        self.prompt_format = spec.engine.resolved_prompt_format(has_chat_template(spec.engine.model))

    def request(self, messages: Messages, params: SamplingParams, stream: bool = False) -> Any:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

        fields: dict[str, Any] = {
            "model": self.model_id, "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
            "max_tokens": params.max_tokens, "seed": params.seed, "stream": stream,
        }
        if stream:
            fields["stream_options"] = {"include_usage": True}  # the token counts, in the last chunk
        else:
            fields["return_token_ids"] = True  # per-completion token counts
        if self.prompt_format == "chat":
            return ChatCompletionRequest(messages=messages, stop=list(params.stop) or None, **fields)
        stops = list(dict.fromkeys([*params.stop, *PLAIN_STOP]))
        return CompletionRequest(prompt=render_plain_chat(messages), stop=stops, **fields)

    def method(self) -> Any:
        handle = self.handle.options(stream=True)
        return handle.chat if self.prompt_format == "chat" else handle.completions

    async def generate(self, messages: Messages, params: SamplingParams) -> dict[str, Any]:
        response = self.method().remote(self.request(messages, params))
        try:
            async for item in response:
                raise_for_error(item)
                return self.result(item)
        finally:
            response.cancel()  # a timeout or an error above: free the engine's slot
        raise EngineError("LLMServer returned no response")

    def result(self, response: Any) -> dict[str, Any]:
        completions = []
        for choice in sorted(response.choices, key=lambda c: c.index):
            text = choice.message.content if self.prompt_format == "chat" else choice.text
            tokens = choice.token_ids
            completions.append({
                "text": text or "",
                "finish_reason": "length" if choice.finish_reason == "length" else "stop",
                "completion_tokens": len(tokens) if tokens is not None else 0,
            })
        usage = response.usage
        return {"model": self.model_id, "prompt_tokens": int(usage.prompt_tokens if usage else 0),
                "completions": completions}

    def stream(self, messages: Messages, params: SamplingParams) -> LLMServerStream:
        request = self.request(messages, params.model_copy(update={"n": 1}), stream=True)
        return LLMServerStream(self.method().remote(request), chat=self.prompt_format == "chat")

    async def usage(self, messages: Messages, completion: str, stream: LLMServerStream | None) -> dict[str, int]:
        if stream is None or stream.usage is None:
            raise EngineError("LLMServer stream ended without its token counts")
        return stream.usage


def answer_client(spec: AnswerModelSpec, handle: Any) -> AnswerClient:
    if spec.engine.backend == "vllm":
        return LLMServerAnswerClient(handle, spec)
    return DeploymentAnswerClient(handle)
