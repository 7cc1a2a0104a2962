"""Calls to the answer models, with the failure policy of answering (routing's is in ``serve_app.pipelines``):

- an answer model that fails for an infrastructure reason (replica died or unavailable, backpressure,
  timeout) is retried once on the other model, else 503 with ``Retry-After``;
- an answer model that rejects the request (``ValueError``: bad sampling parameters) is a 400, and any
  other answer-model error a 500; neither is retried, since the other model would fail the same way.

Results are ``GenerationResult``s whichever deployment produced them (an AutoMix answer that was kept, our
AnswerModel deployment, a Ray Serve LLM server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from routers.engines import GenerationResult, SamplingParams
from serve_app.adapters import generation_result, with_timeout
from serve_app.answer_clients import AnswerClient
from serve_app.api import ApiError
from serve_app.config import AppConfig
from serve_app.observability import log_event
from serve_app.routing import Routing

Messages = list[dict[str, str]]
RETRY_AFTER = {"Retry-After": "5"}


# --- classifying answer-model failures --------------------------------------------------------------------
# Infrastructure failures: the request itself was fine, so the other model (another replica, another
# deployment) may well answer it.
_TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError,  # asyncio's, StepTimeout, Ray's GetTimeoutError
    ray_errors.RayActorError,  # ActorDiedError, ActorUnavailableError
    ray_errors.WorkerCrashedError,
    ray_errors.NodeDiedError,
    ray_errors.LocalRayletDiedError,
    ray_errors.ObjectLostError,
    ray_errors.RaySystemError,
    ray_errors.OutOfMemoryError,
    ray_errors.ObjectStoreFullError,
    serve_errors.BackPressureError,
    serve_errors.DeploymentUnavailableError,
    serve_errors.ReplicaUnavailableError,
    MemoryError,
)


def root_cause(exc: BaseException) -> BaseException:
    """The exception a remote call really raised: Ray wraps it in (nested) ``RayTaskError``s."""
    for _ in range(8):
        cause = getattr(exc, "cause", None) if isinstance(exc, ray_errors.RayTaskError) else None
        if cause is None or cause is exc:
            break
        exc = cause
    return exc


def is_transient(exc: BaseException) -> bool:
    cause = root_cause(exc)
    # torch.OutOfMemoryError (CUDA OOM) without importing torch here.
    return isinstance(cause, _TRANSIENT) or type(cause).__name__ == "OutOfMemoryError"


def client_error_message(exc: BaseException) -> str | None:
    """The message of a ``ValueError`` a model raised on the request's parameters, else None."""
    cause = root_cause(exc)
    if isinstance(cause, ValueError) and not isinstance(cause, ray_errors.RayError):
        return str(cause)[:300]  # the cause's own message: no remote traceback
    return None



@dataclass
class OpenStream:
    """A token stream whose first delta has arrived (so the model is known to work)."""

    model_key: str
    first: str | None  # None: the model finished without a token
    rest: Any | None  # the remote generator after ``first``; None when there is nothing more
    stream: Any | None = None  # the stream itself (its client may read the token counts off it)
    counted: dict[str, int] | None = None  # token counts known already (an AutoMix answer that was kept)


class Answers:
    """Calls the answer models: one retry on the other model for infrastructure failures, timeouts on every
    wait, clean HTTP errors otherwise."""

    def __init__(self, config: AppConfig, clients: dict[str, AnswerClient]) -> None:
        self.config = config
        self.clients = clients

    def candidates(self, model_key: str) -> list[str]:
        small, large = self.config.small_model, self.config.large_model
        other = {small: large, large: small}.get(model_key)
        return [model_key] if other is None else [model_key, other]

    async def generate(self, routing: Routing, messages: Messages, params: SamplingParams) -> GenerationResult:
        """The answer: AutoMix's kept answer, else the routed model's, else the other model's."""
        if routing.answer is not None and params.n == 1:
            return routing.answer
        failures: list[str] = []
        for key in self.candidates(routing.model_key):
            try:
                call = self.clients[key].generate(messages, params)
                result = await with_timeout(call, self.config.timeouts.answer_s, f"answer model {key}")
            except Exception as exc:  # noqa: BLE001 - classified right away: retry, 400, or 500
                failures.append(self.transient_or_raise(key, exc))
                continue
            note_retry(routing, key)
            return generation_result(result)
        raise unavailable(failures)

    async def open_stream(self, routing: Routing, messages: Messages, params: SamplingParams) -> OpenStream:
        """Start streaming and wait for the first delta, so a dead model is a 503 (or a retry), not a
        200 stream that breaks after its head chunk."""
        if routing.answer is not None:
            kept = routing.answer
            return OpenStream(routing.model_key, kept.text, None, counted={
                "prompt_tokens": kept.prompt_tokens, "completion_tokens": kept.completions[0].completion_tokens})
        failures: list[str] = []
        for key in self.candidates(routing.model_key):
            stream = None
            try:
                stream = self.clients[key].stream(messages, params)
                first = await with_timeout(next_or_none(stream), self.config.timeouts.answer_s,
                                           f"answer model {key} (first token)")
            except Exception as exc:  # noqa: BLE001 - classified right away: retry, 400, or 500
                cancel_quietly(stream)
                failures.append(self.transient_or_raise(key, exc))
                continue
            note_retry(routing, key)
            return OpenStream(key, first, None if first is None else stream, stream=stream)
        raise unavailable(failures)

    async def deltas(self, opened: OpenStream) -> AsyncIterator[str]:
        """Every delta of an open stream; a model silent for ``timeouts.stream_chunk_s`` raises ``StepTimeout``."""
        if opened.first is not None:
            yield opened.first
        if opened.rest is None:
            return
        timeout = self.config.timeouts.stream_chunk_s
        finished = False
        try:
            while True:
                delta = await with_timeout(next_or_none(opened.rest), timeout,
                                           f"answer model {opened.model_key} (next token)")
                if delta is None:
                    finished = True
                    return
                yield delta
        finally:
            if not finished:  # timed out, failed, or the client went away: stop the model generating
                cancel_quietly(opened.rest)

    async def usage(self, opened: OpenStream, messages: Messages, text: str) -> dict[str, int]:
        """Token counts of a finished stream."""
        if opened.counted is not None:
            return opened.counted
        return await with_timeout(self.clients[opened.model_key].usage(messages, text, opened.stream),
                                  self.config.timeouts.answer_s, f"answer model {opened.model_key} (token count)")

    @staticmethod
    def transient_or_raise(model_key: str, exc: Exception) -> str:
        """A one-line note of an infrastructure failure (worth a retry); any other failure ends the request."""
        if isinstance(exc, ApiError):
            raise exc
        cause = root_cause(exc)
        if is_transient(exc):
            log_event("answer_model_unavailable", model=model_key, error=f"{type(cause).__name__}: {cause}"[:500])
            return f"{model_key}: {type(cause).__name__}"
        message = client_error_message(exc)
        if message is not None:
            raise ApiError(400, f"answer model {model_key!r} rejected the request: {message}") from exc
        log_event("answer_model_error", model=model_key, error=f"{type(cause).__name__}: {cause}"[:500])
        raise ApiError(500, f"answer model {model_key!r} failed ({type(cause).__name__})", kind="server_error",
                       code="model_error") from exc


def note_retry(routing: Routing, model_key: str) -> None:
    if model_key != routing.model_key:
        routing.retried(model_key)


def unavailable(failures: list[str]) -> ApiError:
    return ApiError(503, "answer models unavailable: " + " | ".join(failures), kind="server_error",
                    code="model_unavailable", headers=dict(RETRY_AFTER))


async def next_or_none(stream: Any) -> Any | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def cancel_quietly(stream: Any) -> None:
    cancel = getattr(stream, "cancel", None)
    if callable(cancel):
        try:
            cancel()
        except Exception:  # noqa: BLE001, S110 - cancelling a broken stream must not mask the real error
            pass
