"""One OpenAI request on its way to an answer model (``AnswerRequest``), and the OpenAI shapes every answer
client returns, whatever hosts the model: a completion body (``Answer``) or a stream of chunk dicts.

The router reads and sets only a few fields of a request (``ROUTER_FIELDS``: the model, the prompt, the
sampling knobs it caps); every other field the client sent (``tools``, ``response_format``, ``logprobs``,
``logit_bias``, fields the router has never heard of, ...) rides along in ``extra`` and reaches a model that
can take it unchanged, as an OpenAI-compatible proxy forwards it. ``needs()`` says which capabilities such a
request asks of the model that answers it (``serve_app.config.Capabilities``).

Answer clients may serve either API (``chat``, ``completions``) whatever the client called: the converters
here turn one shape into the other, so the ingress always answers in the shape its endpoint promises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from routers.engines import Completion, GenerationResult, SamplingParams
from routers.engines.base import PLAIN_STOP, render_plain_chat

ApiKind = Literal["chat", "completions"]

#: the request fields the router itself reads or sets; every other field passes through to the model
ROUTER_FIELDS = frozenset({"model", "messages", "prompt", "n", "max_tokens", "max_completion_tokens", "temperature",
                           "top_p", "stop", "seed", "stream", "stream_options"})
#: fields that change nothing about an answer, so a model that cannot use them still answers
HARMLESS_FIELDS = frozenset({"user", "metadata"})
IMAGE_PARTS = frozenset({"image_url", "input_image"})
#: a rough English average, used only where no tokenizer is at hand (a server that sends no usage)
CHARS_PER_TOKEN = 4
#: more characters per token than BPE tokenizers give ordinary text: a prompt judged too long for a model's
#: context by this count surely is (borderline prompts are left to the server, which answers 400 if needed)
MAX_CHARS_PER_TOKEN = 6
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict)
                   and part.get("type") == "text")


@dataclass(frozen=True)
class AnswerRequest:
    """What an answer model is asked: the conversation as the client sent it, the sampling the router set, and
    every other field of the request (``extra``), untouched."""

    api: ApiKind
    messages: list[dict[str, Any]]
    params: SamplingParams
    extra: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None  # a /v1/completions request's prompt (``messages`` then holds it as one user turn)

    @classmethod
    def chat(cls, messages: Sequence[dict[str, Any]], params: SamplingParams,
             extra: dict[str, Any] | None = None) -> AnswerRequest:
        return cls(api="chat", messages=[dict(m) for m in messages], params=params, extra=dict(extra or {}))

    @classmethod
    def completion(cls, prompt: str, params: SamplingParams, extra: dict[str, Any] | None = None) -> AnswerRequest:
        return cls(api="completions", messages=[{"role": "user", "content": prompt}], params=params,
                   extra=dict(extra or {}), prompt=prompt)

    def with_params(self, params: SamplingParams) -> AnswerRequest:
        return replace(self, params=params)

    # --- what it asks of a model ----------------------------------------------------------------------
    def needs(self) -> list[str]:
        """The capabilities (``Capabilities`` field names) a model must have to answer this request."""
        needs = []
        if self.uses_tools():
            needs.append("tools")
        if (self.extra.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
            needs.append("json_schema")
        if self.has_images():
            needs.append("images")
        if self.extra.get("logprobs") or self.extra.get("top_logprobs") is not None:
            needs.append("logprobs")
        return needs

    def uses_tools(self) -> bool:
        if self.extra.get("tools") or self.extra.get("functions"):
            return True
        return any(m.get("role") in ("tool", "function") or m.get("tool_calls") or m.get("function_call")
                   for m in self.messages)

    def has_images(self) -> bool:
        return any(isinstance(part, dict) and part.get("type") in IMAGE_PARTS
                   for m in self.messages if isinstance(m.get("content"), list) for part in m["content"])

    def shapes_the_answer(self) -> bool:
        """Whether the answer must be generated with the request's own fields (a router's ready answer, such as
        AutoMix's verified small-model text, would ignore them)."""
        return bool(set(self.extra) - HARMLESS_FIELDS) or any(
            not isinstance(m.get("content"), str) or m.get("role") not in ("system", "user", "assistant")
            for m in self.messages)

    def estimated_prompt_tokens(self) -> int:
        """The prompt's tokens, estimated from characters (no tokenizer of the upstream is at hand)."""
        return sum(estimate_tokens(content_text(m.get("content"))) + TOKENS_PER_MESSAGE for m in self.messages)

    def estimated_tokens(self) -> int:
        """Prompt plus (at most) completion tokens, estimated from characters."""
        return self.estimated_prompt_tokens() + self.params.max_tokens * self.params.n

    def fewest_tokens(self) -> int:
        """A lower bound of the prompt's tokens plus ``max_tokens``: what must fit a model's context."""
        chars = sum(len(content_text(m.get("content"))) for m in self.messages)
        return math.ceil(chars / MAX_CHARS_PER_TOKEN) + self.params.max_tokens

    # --- as text, for routers and models that take plain text ------------------------------------------
    def text_messages(self) -> list[dict[str, str]]:
        """The conversation as plain-text turns (system / user / assistant): tool results read as user turns."""
        out = []
        for message in self.messages:
            role, text = message.get("role"), content_text(message.get("content"))
            if role in ("tool", "function"):
                out.append({"role": "user", "content": f"Tool result: {text}"})
            else:
                out.append({"role": "system" if role == "developer" else str(role), "content": text})
        return out

    # --- the body sent to an OpenAI-compatible server ----------------------------------------------------
    def upstream_body(self, model: str, api: ApiKind, stream: bool) -> dict[str, Any]:
        """The request for ``model`` on a server's ``api``: every field the client sent, with the router's
        sampling and, streaming, the token counts asked for in the last chunk."""
        params = self.params
        body: dict[str, Any] = {**self.extra, "model": model, "n": params.n, "temperature": params.temperature,
                                "top_p": params.top_p, "max_tokens": params.max_tokens, "stream": stream}
        if params.seed is not None:
            body["seed"] = params.seed
        stops = list(params.stop)
        if api == "chat":
            body["messages"] = [{**m, "role": "system" if m.get("role") == "developer" else m.get("role")}
                                for m in self.messages]
        else:
            body["prompt"] = self.prompt if self.prompt is not None and self.api == "completions" \
                else render_plain_chat(self.text_messages())
            if self.api == "chat":  # a chat rendered as the Q/A prompt: stop before the next question
                stops = list(dict.fromkeys([*stops, *PLAIN_STOP]))
        if stops:
            body["stop"] = stops
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body


# --- the answer --------------------------------------------------------------------------------------------
@dataclass
class Answer:
    """A completion as the model gave it: an OpenAI ``chat.completion`` or ``text_completion`` body (the shape of
    the request's ``api``), its usage counted by the model unless ``usage_estimated``."""

    body: dict[str, Any]
    usage_estimated: bool = False

    @property
    def usage(self) -> dict[str, int]:
        usage = self.body.get("usage") or {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def texts(self) -> list[str]:
        return [choice_text(c) for c in sorted(self.body.get("choices") or [], key=lambda c: c.get("index", 0))]

    def generation_result(self) -> GenerationResult:
        """The answer as the library's result (AutoMix reads its texts); the completion tokens, counted for the
        whole response by the server, are split over the choices."""
        choices = sorted(self.body.get("choices") or [], key=lambda c: c.get("index", 0))
        usage = self.usage
        shares = split_evenly(usage["completion_tokens"], len(choices))
        completions = [Completion(text=choice_text(c), completion_tokens=tokens,
                                  finish_reason="length" if c.get("finish_reason") == "length" else "stop")
                       for c, tokens in zip(choices, shares, strict=True)]
        return GenerationResult(prompt_tokens=usage["prompt_tokens"], completions=completions)


def split_evenly(total: int, parts: int) -> list[int]:
    if parts == 0:
        return []
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def choice_text(choice: dict[str, Any]) -> str:
    if "message" in choice:
        return content_text((choice.get("message") or {}).get("content"))
    return str(choice.get("text") or "")


def body_from_result(result: GenerationResult, api: ApiKind) -> dict[str, Any]:
    """A library result (our hosted models, AutoMix's kept answer) as the OpenAI body of ``api``."""
    if api == "chat":
        choices: list[dict[str, Any]] = [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
             "logprobs": None} for i, c in enumerate(result.completions)]
    else:
        choices = [{"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                   for i, c in enumerate(result.completions)]
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens}
    return {"object": "chat.completion" if api == "chat" else "text_completion", "choices": choices, "usage": usage}


def convert_body(body: dict[str, Any], to: ApiKind) -> dict[str, Any]:
    """A completion body in the other API's shape (a chat model answering /v1/completions, or the reverse)."""
    is_chat = any("message" in c for c in body.get("choices") or []) or body.get("object") == "chat.completion"
    if (to == "chat") == is_chat:
        return body
    choices = []
    for c in body.get("choices") or []:
        common = {"index": c.get("index", 0), "finish_reason": c.get("finish_reason"), "logprobs": c.get("logprobs")}
        if to == "chat":
            choices.append({**common, "message": {"role": "assistant", "content": choice_text(c)}})
        else:
            choices.append({**common, "text": choice_text(c)})
    return {**body, "object": "chat.completion" if to == "chat" else "text_completion", "choices": choices}


def convert_chunk(chunk: dict[str, Any], to: ApiKind) -> dict[str, Any]:
    """A stream chunk in the other API's shape."""
    choices = chunk.get("choices") or []
    is_chat = any("delta" in c for c in choices) or chunk.get("object") == "chat.completion.chunk"
    if (to == "chat") == is_chat or not choices:
        return chunk
    out = []
    for c in choices:
        common = {"index": c.get("index", 0), "finish_reason": c.get("finish_reason"), "logprobs": c.get("logprobs")}
        if to == "chat":
            out.append({**common, "delta": {"content": c.get("text") or ""}})
        else:
            out.append({**common, "text": content_text((c.get("delta") or {}).get("content"))})
    return {**chunk, "object": "chat.completion.chunk" if to == "chat" else "text_completion", "choices": out}


def chunk_text(chunk: dict[str, Any]) -> str:
    """The text a chunk adds (for usage estimates when a server sends no counts)."""
    total = []
    for c in chunk.get("choices") or []:
        total.append(content_text((c.get("delta") or {}).get("content")) if "delta" in c else str(c.get("text") or ""))
    return "".join(total)


def text_chunk(api: ApiKind, delta: str | None, finish: str | None = None, first: bool = False) -> dict[str, Any]:
    """One chunk of a stream that produces text only (our hosted models), in ``api``'s shape."""
    if api == "completions":
        choice: dict[str, Any] = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return {"object": "text_completion", "choices": [choice]}
    d: dict[str, Any] = {"role": "assistant"} if first else {}
    if delta is not None:
        d["content"] = delta
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}]}
