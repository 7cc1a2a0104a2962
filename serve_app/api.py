"""Request and response models of the HTTP API (OpenAI-compatible, plus ``/v1/route``).

Requests are strict: an unknown field, a wrong type or a value out of range is a 400 with the field named,
the same way the OpenAI API answers, so a client bug never turns into a silent default.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROUTER_MODEL_PREFIX = "router-"
_ROUTER_MODEL = re.compile(r"^router-(?P<kind>[a-z_]+)(?::(?P<arg>[^:]+))?$")


class ApiError(Exception):
    """An error with an HTTP status and an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(Strict):
    """The sampling knobs shared by chat and text completions."""

    model: str = Field(min_length=1, max_length=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)
    # Accepted for client compatibility; the local engines do not implement these penalties.
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_user_turn(self) -> "ChatCompletionRequest":
        if not any(m.role == "user" and m.text().strip() for m in self.messages):
            raise ValueError("messages must contain a non-empty user message")
        return self

    def query(self) -> str:
        """The text the router decides on: the last user message."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user" and m.text().strip())

    def chat(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1:
            raise ValueError("exactly one prompt per request")
        if not prompts[0].strip():
            raise ValueError("prompt is empty")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class RouteRequest(Strict):
    """Route-only: the decision and scores, no generation. ``query`` or ``queries``."""

    model: str = Field(default="router-hybrid", min_length=1, max_length=128)
    query: str | None = None
    queries: list[str] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "RouteRequest":
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' or 'queries'")
        texts = [self.query] if self.query is not None else self.queries or []
        if not texts:
            raise ValueError("'queries' is empty")
        if any(not t.strip() for t in texts):
            raise ValueError("queries must be non-empty strings")
        return self

    def texts(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


class RouterChoice(BaseModel):
    """What the ``model`` field asks for: a router (with an optional threshold) or a model by name."""

    kind: str
    threshold: float | None = None
    direct_model: str | None = None


def parse_model_field(model: str, routers: list[str], models: dict[str, str]) -> RouterChoice:
    """``router-hybrid``, ``router-hybrid:0.4`` (threshold), or an answer model's name."""
    if model in models:
        return RouterChoice(kind="direct", direct_model=models[model])
    match = _ROUTER_MODEL.match(model)
    if not match:
        raise ApiError(404, f"unknown model {model!r}; use one of {available_models(routers, models)}",
                       param="model", code="model_not_found")
    kind = match["kind"]
    if kind not in routers:
        raise ApiError(404, f"unknown router {kind!r}; enabled routers: {routers}", param="model", code="model_not_found")
    threshold = None
    if match["arg"] is not None:
        try:
            threshold = float(match["arg"])
        except ValueError:
            raise ApiError(400, f"threshold {match['arg']!r} in {model!r} is not a number", param="model") from None
        if not 0.0 <= threshold <= 1.0:
            raise ApiError(400, f"threshold {threshold} in {model!r} must be within [0, 1]", param="model")
        if kind in ("smallest", "largest"):
            raise ApiError(400, f"router {kind!r} takes no threshold", param="model")
    return RouterChoice(kind=kind, threshold=threshold)


def available_models(routers: list[str], models: dict[str, str]) -> list[str]:
    return [ROUTER_MODEL_PREFIX + r for r in routers] + sorted(models)


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
