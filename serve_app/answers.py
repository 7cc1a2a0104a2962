"""Calls to the answer models, with the policy of answering (routing's is in ``serve_app.pipelines``):

- **capabilities**: a request that needs tools, a JSON schema, images, logprobs or a long context is answered
  only by a model that declares it (``Capabilities``): the router's choice when it can, else the first capable
  model of its fallback chain, then of the rest; none: a 400 naming what is missing;
- **fallback chains**: a model that fails for a reason of its own (unreachable, timed out, 5xx, 429, refused
  credentials, a malformed answer; a hosted replica that died) passes the request to the next model of its
  ``fallbacks``; when every one failed, a 503 with ``Retry-After``;
- **cooldowns**: a model that keeps failing is tried last until it recovers (``serve_app.model_health``);
- **the request's fault** (a model rejects its content: ``ValueError``, an upstream 400/422) is a 400 with
  the model's message, and a bug in a model a 500; neither moves to another model.

Streams fall back the same way until their first chunk has arrived; after it, a failure ends the stream with
an error event (``serve_app.sse``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from routers.engines import GenerationResult
from serve_app.adapters import with_timeout
from serve_app.answer_clients import AnswerClient, AnswerStream, ModelFailure
from serve_app.api import ApiError
from serve_app.config import AppConfig
from serve_app.model_health import FleetHealth
from serve_app.observability import RouterMetrics, log_event
from serve_app.openai_shapes import Answer, AnswerRequest, ApiKind, body_from_result, text_chunk
from serve_app.routing import Routing

RETRY_AFTER = {"Retry-After": "5"}
#: the request field each capability comes from, for the 400 that names it
CAPABILITY_FIELDS = {"tools": "tools", "json_schema": "response_format", "images": "messages",
                     "logprobs": "logprobs"}
Chunk = dict[str, Any]


# --- classifying answer-model failures --------------------------------------------------------------------
# Infrastructure failures of hosted models: the request itself was fine, so another model may answer it.
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
    return isinstance(cause, (*_TRANSIENT, ModelFailure)) or type(cause).__name__ == "OutOfMemoryError"


def failure_kind(exc: BaseException) -> str:
    cause = root_cause(exc)
    if isinstance(cause, ModelFailure):
        return cause.kind
    if isinstance(cause, TimeoutError):
        return "timeout"
    return "unavailable"


def client_error_message(exc: BaseException) -> str | None:
    """The message of a ``ValueError`` a model raised on the request itself, else None."""
    cause = root_cause(exc)
    if isinstance(cause, ValueError) and not isinstance(cause, ray_errors.RayError):
        return str(cause)[:300]  # the cause's own message: no remote traceback
    return None


@dataclass
class OpenStream:
    """A stream whose first chunk has arrived (so the model is known to work)."""

    model_key: str
    first: Chunk | None  # None: the model finished without a chunk
    stream: AnswerStream | None  # the rest; None when there is nothing more
    counted: dict[str, int] | None = None  # token counts known already (an AutoMix answer that was kept)


class Answers:
    """Calls the answer models: capability checks, fallback chains, cooldowns, timeouts on every wait, clean
    HTTP errors otherwise."""

    def __init__(self, config: AppConfig, clients: dict[str, AnswerClient], metrics: RouterMetrics | None = None,
                 health: FleetHealth | None = None) -> None:
        self.config = config
        self.clients = clients
        self.metrics = metrics
        self.health = health or FleetHealth(config.resilience)

    # --- who may answer -----------------------------------------------------------------------------------
    def lacks(self, key: str, request: AnswerRequest) -> str | None:
        """What model ``key`` lacks to answer the request ("tools", "context"), else None."""
        capabilities = self.config.models[key].capabilities_resolved()
        for need in request.needs():
            if not getattr(capabilities, need):
                return need
        if capabilities.context_tokens is not None and request.fewest_tokens() > capabilities.context_tokens:
            return "context"
        return None

    def candidates(self, routing: Routing, request: AnswerRequest) -> list[str]:
        """The models to try, in order: the router's choice (or the nearest model that can take the request),
        then its fallback chain, cooled-down models last."""
        chosen = routing.model_key
        chain = self.config.fallback_chain(chosen)
        nearest = list(dict.fromkeys([chosen, *chain, *self.clients]))
        capable = [key for key in nearest if self.lacks(key, request) is None]
        routing.needs = request.needs()
        if not capable:
            raise self.nobody_can(request)
        primary = capable[0]
        if primary != chosen:
            routing.rerouted(primary, self.why_not(chosen, request))
        followers = [key for key in self.config.fallback_chain(primary) if key in capable]
        ordered = self.health.order([primary, *followers])
        for key in ordered:
            if self.health.cooling(key):
                routing.failed_on(key, "cooldown")  # skipped for now; tried last
        return ordered

    def why_not(self, key: str, request: AnswerRequest) -> str:
        lack = self.lacks(key, request)
        if lack == "context":
            return "has no room for this prompt"
        return f"cannot take {lack}"

    def nobody_can(self, request: AnswerRequest) -> ApiError:
        lacks = {key: self.lacks(key, request) for key in self.clients}
        missing = sorted({lack for lack in lacks.values() if lack is not None})
        if missing == ["context"]:
            return ApiError(400, f"the prompt and max_tokens (at least {request.fewest_tokens()} tokens) do not fit "
                            "the context of any model", param="messages", code="context_length_exceeded")
        need = next(lack for lack in missing if lack != "context")
        return ApiError(400, f"no model of this router can take {need} (the request's "
                        f"{CAPABILITY_FIELDS[need]!r}); models: {sorted(self.clients)}",
                        param=CAPABILITY_FIELDS[need], code="unsupported_capability")

    def check_fields(self, key: str, request: AnswerRequest) -> None:
        """A model that cannot take a field of the request (a hosted transformers model and ``logit_bias``,
        say) answers 400 naming the field, rather than dropping it."""
        field = self.clients[key].unsupported_field(request)
        if field is not None:
            raise ApiError(400, f"answer model {key!r} ({self.config.models[key].public_name()}) does not support "
                           f"{field!r}; send it to a model that does, or leave it out", param=field,
                           code="unsupported_parameter")

    def callable_models(self, routing: Routing, request: AnswerRequest) -> list[str]:
        """``candidates`` that can take every field of the request: the first one must (else a 400 naming the
        field), a fallback that cannot is passed over."""
        ordered = self.candidates(routing, request)
        self.check_fields(ordered[0], request)
        return [ordered[0], *(key for key in ordered[1:] if self.clients[key].unsupported_field(request) is None)]

    def timeout_s(self, key: str) -> float:
        endpoint = self.config.models[key].endpoint
        return self.config.timeouts.answer_s if endpoint is None else min(endpoint.timeout_s,
                                                                          self.config.timeouts.answer_s)

    # --- answering ----------------------------------------------------------------------------------------
    async def generate(self, routing: Routing, request: AnswerRequest) -> Answer:
        """The answer: AutoMix's kept answer when it fits the request, else the first model of the chain that
        answers."""
        kept = routing.answer
        if kept is not None and request.params.n == 1 and not request.shapes_the_answer():
            return Answer(body_from_result(kept, request.api))
        failures: list[str] = []
        for key in self.callable_models(routing, request):
            started = time.perf_counter()
            try:
                answer = await with_timeout(self.clients[key].complete(request), self.timeout_s(key),
                                            f"answer model {key}")
            except Exception as exc:  # noqa: BLE001 - classified right away: fall back, 400, or 500
                failures.append(self.failed_or_raise(routing, key, exc))
                continue
            self.answered(routing, key, time.perf_counter() - started)
            routing.usage_estimated = answer.usage_estimated
            return answer
        raise unavailable(failures)

    async def open_stream(self, routing: Routing, request: AnswerRequest) -> OpenStream:
        """Start streaming and wait for the first chunk, so a dead model is a fallback (or a 503), not a 200
        stream that breaks after its head chunk."""
        kept = routing.answer
        if kept is not None and not request.shapes_the_answer():
            return kept_stream(routing.model_key, kept, request.api)
        failures: list[str] = []
        for key in self.callable_models(routing, request):
            stream = None
            started = time.perf_counter()
            try:
                stream = self.clients[key].stream(request)
                first = await with_timeout(next_or_none(stream), self.timeout_s(key),
                                           f"answer model {key} (first chunk)")
            except Exception as exc:  # noqa: BLE001 - classified right away: fall back, 400, or 500
                await close_quietly(stream)
                failures.append(self.failed_or_raise(routing, key, exc))
                continue
            self.answered(routing, key, time.perf_counter() - started)
            return OpenStream(key, first, None if first is None else stream)
        raise unavailable(failures)

    async def chunks(self, opened: OpenStream) -> AsyncIterator[Chunk]:
        """Every chunk of an open stream; a model silent for ``timeouts.stream_chunk_s`` raises ``StepTimeout``."""
        if opened.first is not None:
            yield opened.first
        if opened.stream is None:
            return
        timeout = self.config.timeouts.stream_chunk_s
        finished = False
        try:
            while True:
                chunk = await with_timeout(next_or_none(opened.stream), timeout,
                                           f"answer model {opened.model_key} (next chunk)")
                if chunk is None:
                    finished = True
                    return
                yield chunk
        except Exception as exc:
            self.count_failure(opened.model_key, failure_kind(exc) if is_transient(exc) else "stream_error")
            raise
        finally:
            if not finished:  # timed out, failed, or the client went away: stop the model generating
                await close_quietly(opened.stream)

    def usage(self, opened: OpenStream, request: AnswerRequest) -> tuple[dict[str, int], bool]:
        """Token counts of a finished stream, and whether they are estimated."""
        if opened.counted is not None:
            return opened.counted, False
        stream = opened.stream
        if stream is None or stream.usage is None:
            return {"prompt_tokens": request.estimated_prompt_tokens(), "completion_tokens": 0}, True
        return stream.usage, stream.usage_estimated

    # --- bookkeeping --------------------------------------------------------------------------------------
    def answered(self, routing: Routing, key: str, seconds: float) -> None:
        if key != routing.model_key:
            routing.retried(key)
        if self.health.succeeded(key):
            log_event("answer_model_recovered", model=key)
        if self.metrics is not None:
            self.metrics.record_model_call(key, "ok", seconds)

    def count_failure(self, key: str, kind: str, retry_after: float | None = None) -> None:
        cooled = self.health.failed(key, retry_after, rate_limited=kind == "rate_limited")
        if self.metrics is not None:
            self.metrics.record_model_call(key, kind, None)
            if cooled:
                self.metrics.record_cooldown(key)
        if cooled:
            log_event("answer_model_cooldown", model=key, seconds=round(self.health.seconds_left(key), 1), error=kind)

    def failed_or_raise(self, routing: Routing, key: str, exc: Exception) -> str:
        """A model's failure: noted (a fallback follows), or raised when it is the request's fault or a bug."""
        if isinstance(exc, ApiError):
            raise exc
        cause = root_cause(exc)
        if is_transient(exc):
            kind = failure_kind(exc)
            retry_after = cause.retry_after if isinstance(cause, ModelFailure) else None
            log_event("answer_model_unavailable", model=key, kind=kind, error=f"{type(cause).__name__}: {cause}"[:500])
            self.count_failure(key, kind, retry_after)
            routing.failed_on(key, kind)
            return f"{key}: {kind}"
        message = client_error_message(exc)
        if message is not None:
            if self.metrics is not None:
                self.metrics.record_model_call(key, "rejected", None)
            raise ApiError(400, f"answer model {key!r} rejected the request: {message}") from exc
        log_event("answer_model_error", model=key, error=f"{type(cause).__name__}: {cause}"[:500])
        if self.metrics is not None:
            self.metrics.record_model_call(key, "error", None)
        raise ApiError(500, f"answer model {key!r} failed ({type(cause).__name__})", kind="server_error",
                       code="model_error") from exc


def unavailable(failures: list[str]) -> ApiError:
    return ApiError(503, "answer models unavailable: " + " | ".join(failures), kind="server_error",
                    code="model_unavailable", headers=dict(RETRY_AFTER))


class KeptStream(AnswerStream):
    """AutoMix's verified answer, already generated, as a stream's finish chunk."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk: Chunk | None = chunk

    async def __anext__(self) -> Chunk:
        if self.chunk is None:
            raise StopAsyncIteration
        chunk, self.chunk = self.chunk, None
        return chunk

    async def aclose(self) -> None:
        self.chunk = None


def kept_stream(model_key: str, kept: GenerationResult, api: ApiKind) -> OpenStream:
    completion = kept.completions[0]
    finish = text_chunk(api, None, finish=completion.finish_reason)
    counted = {"prompt_tokens": kept.prompt_tokens, "completion_tokens": completion.completion_tokens}
    return OpenStream(model_key, text_chunk(api, kept.text, first=True), KeptStream(finish), counted=counted)


async def next_or_none(stream: Any) -> Any | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


async def close_quietly(stream: AnswerStream | None) -> None:
    if stream is None:
        return
    try:
        await stream.aclose()
    except Exception:  # noqa: BLE001, S110 - closing a broken stream must not mask the real error
        pass

