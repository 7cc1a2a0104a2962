"""How the ingress talks to an answer model, wherever it runs. One interface (:class:`AnswerClient`), three hosts:

- :class:`DeploymentAnswerClient`: our ``AnswerModel`` deployment (the transformers engine, batched); it takes
  plain-text chats and the sampling knobs, and names any other field of a request it cannot take (a 400);
- :class:`LLMServerAnswerClient`: a Ray Serve LLM ``LLMServer`` (vLLM in the app), called with vLLM's own
  OpenAI request models, so the whole request passes through;
- :class:`RemoteAnswerClient`: a model at an OpenAI-compatible endpoint (a vLLM server, a hosted API,
  llama.cpp, Ollama), over one pooled async HTTP connection set per ingress replica.

Every client answers an :class:`~serve_app.openai_shapes.AnswerRequest` with an OpenAI body
(:class:`~serve_app.openai_shapes.Answer`) or a stream of OpenAI chunk dicts (:class:`AnswerStream`), in the
shape of the API the client called. Failures come as two kinds: :class:`ModelRejected` (a ``ValueError``: the
request's fault, a 400, no fallback) and :class:`ModelFailure` (this model failed: the next in its fallback
chain may answer). Ray's own errors from the hosted deployments are classified in ``serve_app.answers``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from routers.errors import ConfigError
from serve_app.adapters import generation_result
from serve_app.config import AnswerModelSpec
from serve_app.openai_shapes import (
    HARMLESS_FIELDS,
    Answer,
    AnswerRequest,
    ApiKind,
    body_from_result,
    choice_text,
    chunk_text,
    convert_body,
    convert_chunk,
    estimate_tokens,
    text_chunk,
)

Chunk = dict[str, Any]


class ModelRejected(ValueError):
    """The model refused the request itself (a 4xx for its content): the client's error, never a fallback."""


class ModelFailure(Exception):
    """The model failed (unreachable, timed out, 5xx, 429, bad credentials, a malformed answer): another model
    may answer. ``kind`` labels metrics and the routing object; ``retry_after`` is a 429's ``Retry-After``."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class AnswerStream(ABC):
    """OpenAI chunk dicts of one streamed completion (without the usage-only chunk, kept in ``usage``)."""

    usage: dict[str, int] | None = None
    usage_estimated: bool = False

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self

    @abstractmethod
    async def __anext__(self) -> Chunk: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Stop the model generating (idempotent)."""


class AnswerClient(ABC):
    key: str
    spec: AnswerModelSpec

    def unsupported_field(self, request: AnswerRequest) -> str | None:
        """A field of the request this model cannot take (answered with a 400 naming it), else None."""
        return None

    @abstractmethod
    def complete(self, request: AnswerRequest) -> Awaitable[Answer]:
        """All ``n`` completions of one request, in the shape of ``request.api``."""

    @abstractmethod
    def stream(self, request: AnswerRequest) -> AnswerStream:
        """The chunks of one completion (n=1), in the shape of ``request.api``."""

    async def aclose(self) -> None:
        """Release what the client holds (connections)."""


# --- our AnswerModel deployment (transformers) -------------------------------------------------------------------
class DeploymentStream(AnswerStream):
    """Text deltas from the deployment's ``stream``, as chunks; the finish chunk carries the deployment's token
    count (the finish reason is ``length`` when the cap was reached)."""

    def __init__(self, client: DeploymentAnswerClient, request: AnswerRequest) -> None:
        self.client = client
        self.request = request
        self.response = client.handle.options(stream=True).stream.remote(request.text_messages(),
                                                                         request.params.model_dump())
        self.pieces: list[str] = []
        self.first = True
        self.done = False

    async def __anext__(self) -> Chunk:
        if self.done:
            raise StopAsyncIteration
        try:
            delta = await self.response.__anext__()
        except StopAsyncIteration:
            self.done = True
            return await self.finish_chunk()
        self.pieces.append(delta)
        chunk = text_chunk(self.request.api, delta, first=self.first)
        self.first = False
        return chunk

    async def finish_chunk(self) -> Chunk:
        self.usage = await self.client.handle.usage.remote(self.request.text_messages(), "".join(self.pieces))
        assert self.usage is not None
        finish = "length" if self.usage["completion_tokens"] >= self.request.params.max_tokens else "stop"
        return text_chunk(self.request.api, None, finish=finish, first=self.first)

    async def aclose(self) -> None:
        self.response.cancel()


class DeploymentAnswerClient(AnswerClient):
    """Our ``AnswerModel`` deployment: plain-text chats and the sampling knobs; nothing else of a request."""

    def __init__(self, key: str, spec: AnswerModelSpec, handle: Any) -> None:
        self.key = key
        self.spec = spec
        self.handle = handle

    def unsupported_field(self, request: AnswerRequest) -> str | None:
        for name in request.extra:
            if name not in HARMLESS_FIELDS:
                return name
        for index, message in enumerate(request.messages):
            if message.get("role") not in ("system", "developer", "user", "assistant"):
                return f"messages.{index}.role"
            if not isinstance(message.get("content"), str):
                return f"messages.{index}.content"
        return None

    async def complete(self, request: AnswerRequest) -> Answer:
        response = self.handle.generate.remote(request.text_messages(), request.params.model_dump())
        try:
            raw = await response
        except asyncio.CancelledError:  # the ingress's timeout: free the engine's slot
            response.cancel()
            raise
        return Answer(body_from_result(generation_result(raw), request.api))

    def stream(self, request: AnswerRequest) -> DeploymentStream:
        return DeploymentStream(self, request.with_params(request.params.model_copy(update={"n": 1})))


# --- OpenAI server-sent events (a vLLM LLMServer, a remote server) ------------------------------------------------
class ChunkReader:
    """Reads one stream's ``data:`` events: chunks out, the usage chunk kept, errors raised, text counted."""

    def __init__(self, api: ApiKind, what: str) -> None:
        self.api = api
        self.what = what
        self.usage: dict[str, int] | None = None
        self.text: list[str] = []
        self.done = False

    def read(self, event: str) -> Chunk | None:
        payload = event.strip()
        if not payload.startswith("data:"):
            return None  # blank lines, comments, event names
        payload = payload.removeprefix("data:").strip()
        if payload == "[DONE]":
            self.done = True
            return None
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            raise ModelFailure("bad_response", f"{self.what} sent a stream event that is not JSON") from None
        if not isinstance(data, dict):
            raise ModelFailure("bad_response", f"{self.what} sent a stream event that is not an object")
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            message = str(error.get("message"))[:300]
            if str(error.get("code") or "").isdigit() and 400 <= int(error["code"]) < 500 and not self.text:
                raise ModelRejected(message)  # refused before any text: the request's fault (a prompt too long)
            raise ModelFailure("stream_error", f"{self.what} failed mid-stream: {message}")
        if data.get("usage"):
            self.usage = {"prompt_tokens": int(data["usage"].get("prompt_tokens") or 0),
                          "completion_tokens": int(data["usage"].get("completion_tokens") or 0)}
        data.pop("usage", None)
        if not data.get("choices"):
            return None
        chunk = convert_chunk(data, self.api)
        self.text.append(chunk_text(chunk))
        return chunk

    def final_usage(self, request: AnswerRequest) -> tuple[dict[str, int], bool]:
        """The server's token counts, or (marked estimated) a count from characters when it sent none."""
        if self.usage is not None:
            return self.usage, False
        return {"prompt_tokens": request.estimated_prompt_tokens(),
                "completion_tokens": estimate_tokens("".join(self.text))}, True


def with_usage(body: dict[str, Any], request: AnswerRequest) -> Answer:
    """A completion body with its usage, estimated (and marked so) when the server sent none."""
    usage = body.get("usage")
    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
        return Answer(body)
    prompt = request.estimated_prompt_tokens()
    completion = estimate_tokens("".join(choice_text(c) for c in body["choices"]))
    body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return Answer(body, usage_estimated=True)


# --- Ray Serve LLM (vLLM inside the app) -----------------------------------------------------------------------
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
    """vLLM's OpenAI-layer error as our kinds: a 4xx is the request's fault."""
    code = int(code or 500)
    if 400 <= code < 500:
        raise ModelRejected(message)
    raise ModelFailure("server_error", f"vLLM server error {code}: {message}")


def raise_for_error(item: Any) -> None:
    # LLMServer yields the internal ErrorResponse (the public ray.serve.llm class is a subclass of it)
    from ray.llm._internal.serve.core.configs.openai_api_models import ErrorResponse

    if isinstance(item, ErrorResponse):
        raise_error(item.error.code, str(item.error.message))


class LLMServerStream(AnswerStream):
    """Chunks from ``LLMServer.chat/completions(stream=True)``, which yields lists of ``data: {json}`` strings."""

    def __init__(self, response: Any, request: AnswerRequest, what: str) -> None:
        self.response = response
        self.request = request
        self.reader = ChunkReader(request.api, what)
        self.pending: list[Chunk] = []

    async def __anext__(self) -> Chunk:
        while not self.pending:
            if self.reader.done:
                self.finish()
                raise StopAsyncIteration
            try:
                batch = await self.response.__anext__()
            except StopAsyncIteration:
                self.reader.done = True
                continue
            for event in batch if isinstance(batch, list) else [batch]:
                raise_for_error(event)
                if not isinstance(event, str):
                    raise ModelFailure("bad_response", f"unexpected stream item from LLMServer: {type(event).__name__}")
                chunk = self.reader.read(event)
                if chunk is not None:
                    self.pending.append(chunk)
        return self.pending.pop(0)

    def finish(self) -> None:
        self.usage, self.usage_estimated = self.reader.final_usage(self.request)

    async def aclose(self) -> None:
        self.response.cancel()


class LLMServerAnswerClient(AnswerClient):
    """A Ray Serve LLM ``LLMServer`` (vLLM): chat models through ``chat`` with every field of the request; base
    models without a chat template through ``completions`` with the transformers engine's Q/A prompt and stops."""

    def __init__(self, key: str, spec: AnswerModelSpec, handle: Any) -> None:
        assert spec.engine is not None
        self.key = key
        self.spec = spec
        self.handle = handle
        self.model_id = spec.public_name()
        chat = spec.engine.resolved_prompt_format(has_chat_template(spec.engine.model)) == "chat"
        self.api: ApiKind = "chat" if chat else "completions"

    def request(self, request: AnswerRequest, stream: bool = False) -> Any:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

        body = request.upstream_body(self.model_id, self.api, stream)
        return ChatCompletionRequest(**body) if self.api == "chat" else CompletionRequest(**body)

    def method(self) -> Any:
        handle = self.handle.options(stream=True)
        return handle.chat if self.api == "chat" else handle.completions

    async def complete(self, request: AnswerRequest) -> Answer:
        response = self.method().remote(self.request(request))
        try:
            async for item in response:
                raise_for_error(item)
                body = item.model_dump(mode="json", exclude_none=True) if isinstance(item, BaseModel) else item
                return with_usage(convert_body(body, request.api), request)
        finally:
            response.cancel()  # a timeout or an error above: free the engine's slot
        raise ModelFailure("bad_response", "LLMServer returned no response")

    def stream(self, request: AnswerRequest) -> LLMServerStream:
        request = request.with_params(request.params.model_copy(update={"n": 1}))
        return LLMServerStream(self.method().remote(self.request(request, stream=True)), request,
                               f"answer model {self.key!r}")


# --- a model at an OpenAI-compatible endpoint -----------------------------------------------------------------
def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RemoteStream(AnswerStream):
    """One streamed request to an endpoint; the connection is opened on the first ``__anext__``."""

    def __init__(self, client: RemoteAnswerClient, request: AnswerRequest) -> None:
        self.client = client
        self.request = request
        self.reader = ChunkReader(request.api, f"answer model {client.key!r}")
        self.response: httpx.Response | None = None
        self.lines: AsyncIterator[str] | None = None
        self.holds_slot = False
        self.closed = False

    async def open(self) -> None:
        await self.client.slots().acquire()
        self.holds_slot = True
        body = self.request.upstream_body(self.client.upstream_model, self.client.api, stream=True)
        http = self.client.http()
        request = http.build_request("POST", self.client.path, json=body)
        self.response = await self.client.call(http.send(request, stream=True))
        if self.response.status_code >= 400:
            await self.response.aread()
            self.client.raise_for_status(self.response)
        self.lines = self.response.aiter_lines()

    async def __anext__(self) -> Chunk:
        if self.closed:
            raise StopAsyncIteration
        if self.lines is None:
            await self.open()
        assert self.lines is not None
        while True:
            try:
                line = await self.client.call(self.lines.__anext__())
            except StopAsyncIteration:
                await self.finish()
                raise
            chunk = self.reader.read(line)
            if chunk is not None:
                return chunk
            if self.reader.done:
                await self.finish()
                raise StopAsyncIteration

    async def finish(self) -> None:
        self.usage, self.usage_estimated = self.reader.final_usage(self.request)
        await self.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.response is not None:
                await self.response.aclose()  # closing the connection makes the server abort the request
        finally:
            if self.holds_slot:
                self.holds_slot = False
                self.client.slots().release()


class RemoteAnswerClient(AnswerClient):
    """A model behind an OpenAI-compatible API. Secrets come from the environment and go only into request
    headers: never into an error message, a log line or the routing object."""

    def __init__(self, key: str, spec: AnswerModelSpec) -> None:
        assert spec.endpoint is not None
        self.key = key
        self.spec = spec
        self.endpoint = spec.endpoint
        self.upstream_model = spec.endpoint.model
        self.api: ApiKind = spec.endpoint.api
        self.path = "/chat/completions" if self.api == "chat" else "/completions"
        self.headers, self.secrets = self.read_headers()
        self._http: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def read_headers(self) -> tuple[dict[str, str], list[str]]:
        """The request headers, with the secrets read from their env vars (missing ones named, not guessed)."""
        endpoint = self.endpoint
        headers = dict(endpoint.headers)
        wanted = dict(endpoint.headers_env)
        if endpoint.api_key_env:
            wanted["Authorization"] = endpoint.api_key_env
        secrets = []
        for header, env in wanted.items():
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"models.{self.key}.endpoint: environment variable {env!r} is not set "
                                  f"(it holds the {'API key' if header == 'Authorization' else header + ' header'})")
            secrets.append(value)
            headers[header] = f"Bearer {value}" if header == "Authorization" else value
        return headers, secrets

    def http(self) -> httpx.AsyncClient:
        """One pooled client per replica, made in the loop that uses it."""
        if self._http is None:
            endpoint = self.endpoint
            self._http = httpx.AsyncClient(
                base_url=endpoint.base_url, headers=self.headers,
                timeout=httpx.Timeout(endpoint.timeout_s, connect=endpoint.connect_timeout_s),
                limits=httpx.Limits(max_connections=endpoint.max_in_flight,
                                    max_keepalive_connections=endpoint.max_in_flight))
        return self._http

    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.endpoint.max_in_flight)
        return self._slots

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    async def call(self, awaitable: Awaitable[Any]) -> Any:
        """An httpx call with its failures as ``ModelFailure`` kinds."""
        try:
            return await awaitable
        except httpx.TimeoutException:
            raise ModelFailure("timeout", f"answer model {self.key!r} timed out") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise ModelFailure("connect", f"answer model {self.key!r} unreachable: {type(exc).__name__}") from None

    def raise_for_status(self, response: httpx.Response) -> None:
        """An error status as the request's fault (400, 413, 422: a 400 with the upstream's message) or the
        model's (anything else: a fallback)."""
        status = response.status_code
        if status in (401, 403):  # our credentials, not the client's request: never echo the upstream's text
            raise ModelFailure("auth", f"answer model {self.key!r} refused this router's credentials ({status})")
        message = self.scrub(upstream_message(response))
        if status in (400, 413, 422):
            raise ModelRejected(message)
        if status == 429:
            raise ModelFailure("rate_limited", f"answer model {self.key!r} is rate limited (429)",
                               retry_after=retry_after_seconds(response.headers.get("retry-after")))
        kind = "not_found" if status == 404 else "server_error"
        raise ModelFailure(kind, f"answer model {self.key!r} answered {status}: {message[:200]}")

    async def complete(self, request: AnswerRequest) -> Answer:
        body = request.upstream_body(self.upstream_model, self.api, stream=False)
        async with self.slots():
            response = await self.call(self.http().post(self.path, json=body))
        if response.status_code >= 400:
            self.raise_for_status(response)
        try:
            data = response.json()
        except ValueError:
            raise ModelFailure("bad_response", f"answer model {self.key!r} sent a body that is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise ModelFailure("bad_response", f"answer model {self.key!r} sent a body without choices")
        return with_usage(convert_body(data, request.api), request)

    def stream(self, request: AnswerRequest) -> RemoteStream:
        return RemoteStream(self, request.with_params(request.params.model_copy(update={"n": 1})))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def upstream_message(response: httpx.Response) -> str:
    """The error message of an upstream's error body (OpenAI's shape, or whatever text it sent)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or f"HTTP {response.status_code}"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
        if data.get("message") or data.get("detail"):
            return str(data.get("message") or data.get("detail"))[:300]
    return str(data)[:300]


def answer_client(key: str, spec: AnswerModelSpec, handle: Any | None) -> AnswerClient:
    """The client of answer model ``key``: its endpoint, or the deployment that hosts it."""
    if spec.endpoint is not None:
        return RemoteAnswerClient(key, spec)
    assert spec.engine is not None and handle is not None, f"hosted answer model {key!r} has no deployment"
    if spec.engine.backend == "vllm":
        return LLMServerAnswerClient(key, spec, handle)
    return DeploymentAnswerClient(key, spec, handle)
