"""Streamed answers as Server-Sent Events: the model's own chunks relayed one by one (tool-call deltas,
logprobs and finish reasons as it sent them), each under this response's id and the answering model's
name, the first one carrying the ``routing`` object; then, if the client asked for it, the usage chunk with
the finished routing object (cost). A failure after the 200 has started is reported in-band as an OpenAI-style
error event (``{"error": {...}}``), and every stream ends with ``[DONE]``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from serve_app.answers import Answers, OpenStream
from serve_app.api import completion_id, now
from serve_app.observability import RouterMetrics, log_event
from serve_app.openai_shapes import AnswerRequest
from serve_app.routing import ModelCall, Routing


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


async def stream_chunks(answers: Answers, metrics: RouterMetrics,
                        finish_routing: Callable[[Routing, ModelCall, float], dict[str, Any]], served: str,
                        routing: Routing, opened: OpenStream, request: AnswerRequest, latency: float,
                        include_usage: bool, request_id: str) -> AsyncIterator[str]:
    """SSE events: the model's chunks (the first with the routing object), then usage, then ``[DONE]``.

    ``served`` is the answering model's public name; ``finish_routing`` completes the routing object (cost,
    metrics) once the usage is known.
    """
    meta = {"id": completion_id("cmpl" if request.api == "completions" else "chatcmpl"), "created": now(),
            "model": served}
    empty = {**meta, "object": "text_completion" if request.api == "completions" else "chat.completion.chunk",
             "choices": []}
    head: dict[str, Any] | None = {**routing.info, "model": served, "model_key": routing.model_key,
                                   "router_latency_ms": round(1000 * latency, 2)}
    try:
        async for chunk in answers.chunks(opened):
            out = {**chunk, **meta}
            if head is not None:  # the routing object rides on the first chunk
                out["routing"], head = head, None
            yield sse(out)
        if head is not None:  # the model finished without a chunk: the routing object still goes first
            yield sse({**empty, "routing": head})
        counted, estimated = answers.usage(opened, request)
        routing.usage_estimated = estimated
        final = ModelCall(model_key=routing.model_key, prompt_tokens=counted["prompt_tokens"],
                          completion_tokens=counted["completion_tokens"], purpose="final")
        info = finish_routing(routing, final, latency)
        if include_usage:
            usage = {**counted, "total_tokens": counted["prompt_tokens"] + counted["completion_tokens"]}
            yield sse({**empty, "usage": usage, "routing": info})
    except Exception as exc:  # noqa: BLE001 - a started stream cannot change its status: report in-band
        log_event("stream_failed", request_id=request_id, model=routing.model_key,
                  error=f"{type(exc).__name__}: {exc}"[:500])
        metrics.record_error(routing.router, routing.model_key, "stream_error")
        yield sse({"error": {"message": f"answer model {routing.model_key!r} failed mid-stream: {type(exc).__name__}",
                             "type": "server_error", "param": None, "code": "model_unavailable"}})
    yield sse("[DONE]")
