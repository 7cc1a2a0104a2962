"""Streamed answers as Server-Sent Events: the event framing (``sse``), the chunk shapes of the chat and
text-completion streams (``make_chunk``), and the stream itself (``stream_chunks``): the routing object first,
then the model's token deltas, then the finish (and usage) chunk; a failure after the 200 has started is
reported in-band as an error event, and every stream ends with ``[DONE]``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from routers.engines import SamplingParams
from serve_app.answers import Answers, OpenStream
from serve_app.api import completion_id, now
from serve_app.observability import RouterMetrics, log_event
from serve_app.routing import ModelCall, Routing


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


def make_chunk(meta: dict[str, Any], delta: str | None, finish: str | None = None,
               first: bool = False) -> dict[str, Any]:
    """One SSE chunk, chat (``delta``) or text-completion (``text``) shaped."""
    if meta["text"]:
        choice: dict[str, Any] = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
    else:
        d: dict[str, Any] = {"role": "assistant"} if first else {}
        if delta is not None:
            d["content"] = delta
        choice = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
    return {"id": meta["id"], "object": meta["object"], "created": meta["created"], "model": meta["model"],
            "choices": [choice]}


async def stream_chunks(answers: Answers, metrics: RouterMetrics,
                        finish_routing: Callable[[Routing, ModelCall, float], dict[str, Any]], served: str,
                        routing: Routing, opened: OpenStream, messages: list[dict[str, str]], params: SamplingParams,
                        latency: float, include_usage: bool, request_id: str, text: bool) -> AsyncIterator[str]:
    """SSE chunks: the first carries the routing object, then token deltas, then finish (and usage).

    ``served`` is the answering model's public name; ``finish_routing`` completes the routing object (cost,
    metrics) once the usage is known.
    """
    meta = {"id": completion_id("cmpl" if text else "chatcmpl"), "created": now(), "model": served, "text": text,
            "object": "text_completion" if text else "chat.completion.chunk"}
    head = make_chunk(meta, "", first=True)
    head["routing"] = {**routing.info, "model": served, "model_key": routing.model_key,
                       "router_latency_ms": round(1000 * latency, 2)}
    yield sse(head)
    pieces: list[str] = []
    try:
        async for delta in answers.deltas(opened):
            pieces.append(delta)
            yield sse(make_chunk(meta, delta))
        counted = await answers.usage(opened, messages, "".join(pieces))
        finish = "length" if counted["completion_tokens"] >= params.max_tokens else "stop"
        yield sse(make_chunk(meta, None, finish=finish))
        final = ModelCall(model_key=routing.model_key, prompt_tokens=counted["prompt_tokens"],
                          completion_tokens=counted["completion_tokens"], purpose="final")
        info = finish_routing(routing, final, latency)
        if include_usage:
            usage = {**counted, "total_tokens": counted["prompt_tokens"] + counted["completion_tokens"]}
            yield sse({**{k: meta[k] for k in ("id", "object", "created", "model")}, "choices": [],
                       "usage": usage, "routing": info})
    except Exception as exc:  # noqa: BLE001 - a started stream cannot change its status: report in-band
        log_event("stream_failed", request_id=request_id, model=routing.model_key,
                  error=f"{type(exc).__name__}: {exc}"[:500])
        metrics.record_error(routing.router, routing.model_key, "stream_error")
        yield sse({"error": {"message": f"answer model {routing.model_key!r} failed mid-stream: {type(exc).__name__}",
                             "type": "server_error", "param": None, "code": "model_unavailable"}})
    yield sse("[DONE]")
