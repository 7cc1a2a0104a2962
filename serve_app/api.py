"""Request and response models of the HTTP API (OpenAI-compatible, plus ``/v1/route``).

Requests are checked where the router knows the field: a wrong type or a value out of range is a 400 with the
field named, the same way the OpenAI API answers. Fields the router does not know pass through to the answering
model (as an OpenAI-compatible proxy forwards them); a model that cannot take one answers 400 naming it, so a
client's field is never silently dropped. Responses of the
JSON endpoints are declared too, so the OpenAPI schema describes what clients really get (the fuzz test
checks every response against it).

The ``model`` field picks the router, RouteLLM-style:

- ``router-hybrid``: the router with its configured threshold;
- ``router-hybrid:0.4``: with threshold 0.4 (small model iff score >= 0.4); for ``router-random`` the
  number is the share of queries sent to the large model;
- ``router-hybrid:share=0.3``: the threshold that sends 30% of queries to the large model, taken from the
  router's reference score distribution (``reference_scores()``; a router without one answers 400), or
  from the scores of the app's recent traffic (``share_calibration.source: traffic``);
- ``router-hybrid:quality=0.95``: the cheapest threshold whose bootstrap lower bound of quality / always-large
  quality on the artifact's labelled calibration queries is at least 0.95 (``llmrouter calibrate-quality``;
  an artifact without calibration answers 400);
- ``router-hybrid:cost=500`` / ``router-hybrid:budget=0.002``: the N-model rules on the pair, at the app's
  prices (``routers.nmodel.pair``: the score s and 1 as the two models' predicted quality; small iff
  s >= 1 - 500 x (USD of the large call - USD of the small one); the large model whenever its call costs at
  most 0.002 USD); the routing object then lists both candidates with their quality and cost;
- ``router`` (optionally ``router:0.4`` / ``router:share=0.3`` / ``router:quality=0.95``): the app's
  ``default_router``;
- an answer model by name to bypass routing;
- RouteLLM's names, ``router-mf-0.11593`` (``router-<its router>-<its threshold>``), for clients written
  against RouteLLM's server: see ``routellm_choice``.

``router-smallest``, ``router-largest`` and ``router-policy`` take neither a threshold nor a share.

N-model routers (``routers.multimodel.<name>``) take a selection rule instead (``routers.selection``):
``router-<name>`` (the configured rule), ``router-<name>:cost=0.5`` (most quality minus 0.5 x USD),
``:quality=0.95`` (the cheapest choice reaching 95% of the best single model's quality), ``:budget=0.002``
(USD per query at most), ``:share=0.3`` (at most 30% of queries to the dearest model) or ``:default``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from routers.errors import ConfigError
from routers.nmodel.pair import routellm_threshold
from routers.registry import routellm_names, served_entries
from routers.selection import parse_rule
from routers.strict import StrictModel

ROUTER_MODEL_PREFIX = "router-"
DEFAULT_ROUTER_MODEL = "router"  # the app's default_router, for clients that want "whatever routes best here"
_ROUTER_MODEL = re.compile(r"^router-(?P<kind>[a-z_]+)(?::(?P<arg>[^:]+))?$")
_ROUTELLM_MODEL = re.compile(r"^router-(?P<kind>[a-z_]+)-(?P<threshold>[^:]+)$")
#: RouteLLM's router names -> ours; each scores P(the small model wins / will do), RouteLLM's 1 - win rate
ROUTELLM_ROUTERS = routellm_names()
SHARE_PREFIX = "share="
QUALITY_PREFIX = "quality="
#: the rules that weigh each call's USD cost, which two-model routers take too
PRICED_PREFIXES = ("cost=", "budget=")
# torch.manual_seed and the engines take an unsigned 64-bit seed at most; int64 keeps every back end happy.
MAX_SEED = 2**63 - 1
# Routers whose decision has no tunable score: a threshold or share would be silently ignored.
NO_THRESHOLD = {kind: entry.no_threshold for kind, entry in served_entries().items() if entry.no_threshold}


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


class OpenModel(BaseModel):
    """A request part that passes through: the fields we know are checked, any other is kept and forwarded
    (as an OpenAI-compatible proxy does), to be taken by a model that knows it or named in a 400 by one that
    does not (``Answers.check_fields``)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ContentPart(OpenModel):
    """One part of a message's content: ``text``, ``image_url``, ``input_audio``, ``file``, ..."""

    type: str = Field(min_length=1)
    text: str | None = None
    image_url: dict[str, Any] | str | None = None

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a 'text' content part needs 'text'")
        if self.type == "image_url" and not self.image_url:
            raise ValueError("an 'image_url' content part needs 'image_url'")
        return self


class ChatMessage(OpenModel):
    role: Literal["system", "user", "assistant", "developer", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and (self.tool_calls or self.model_extra
                                                                       and self.model_extra.get("function_call"))):
            raise ValueError(f"a {self.role!r} message needs 'content' (only an assistant turn with tool_calls may "
                             "leave it out)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(OpenModel):
    include_usage: bool = False


class ResponseFormat(OpenModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("response_format of type 'json_schema' needs 'json_schema'")
        return self


class ToolFunction(OpenModel):
    name: str = Field(min_length=1, max_length=64)


class Tool(OpenModel):
    type: str = "function"
    function: ToolFunction | None = None


class SamplingFields(OpenModel):
    """The fields shared by chat and text completions. The router reads and caps the sampling knobs; every
    other field the client sends, known or not, passes through to the answering model (``passthrough``)."""

    model: str = Field(min_length=1, max_length=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias[{token!r}] = {bias} must be within [-100, 100]")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def passthrough(self) -> dict[str, Any]:
        """Every field the client set that the router does not set itself, as it sent them."""
        from serve_app.openai_shapes import ROUTER_FIELDS

        sent = self.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        return {key: value for key, value in sent.items() if key not in ROUTER_FIELDS}


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _has_user_turn(self) -> ChatCompletionRequest:
        if not any(m.role == "user" and (m.text().strip() or isinstance(m.content, list)) for m in self.messages):
            raise ValueError("messages must contain a non-empty user message")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def query(self) -> str:
        """The text the router decides on: the last user turn, with the tool results that followed it (the
        conversation so far, as far as the router can read it)."""
        last_user = max(i for i, m in enumerate(self.messages) if m.role == "user")
        parts = [self.messages[last_user].text()]
        parts += [m.text() for m in self.messages[last_user + 1:] if m.role in ("tool", "function") and m.text()]
        return "\n".join(p for p in parts if p.strip()) or "(image)"

    def raw_messages(self) -> list[dict[str, Any]]:
        """The messages as the client sent them (for models that take the whole request)."""
        return [m.model_dump(mode="json", exclude_unset=True, exclude_none=True) for m in self.messages]


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)

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


class RouteRequest(StrictModel):
    """Route-only: the decision and scores, no generation. ``query`` or ``queries``."""

    model: str = Field(default="router-hybrid", min_length=1, max_length=128)
    query: str | None = None
    queries: list[str] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RouteRequest:
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
    """What the ``model`` field asks for: a router (with an optional threshold or large-model share) or a
    model by name."""

    kind: str
    threshold: float | None = None
    large_share: float | None = None
    #: target quality / always-large quality (``router-X:quality=0.95``)
    quality_target: float | None = None
    #: the threshold a RouteLLM-style name gave (``router-mf-0.11593``), before mapping onto ``threshold``
    routellm_threshold: float | None = None
    direct_model: str | None = None
    #: an N-model router's selection rule as text (``cost=0.5``; None: its configured rule)
    rule: str | None = None


def parse_model_field(model: str, routers: list[str], models: dict[str, str],
                      default_router: str | None = None, multimodel: Collection[str] = ()) -> RouterChoice:
    """``router-hybrid``, ``router-hybrid:0.4`` (threshold), ``router-hybrid:share=0.3`` (large share),
    ``router-hybrid:quality=0.95`` (quality target), ``router`` / ``router:...`` (``default_router``), or an
    answer model's name; for the N-model routers named in ``multimodel``, ``router-<name>:<rule>``."""
    if model in models:
        return RouterChoice(kind="direct", direct_model=models[model])
    if default_router is not None and (model == DEFAULT_ROUTER_MODEL or model.startswith(DEFAULT_ROUTER_MODEL + ":")):
        model = ROUTER_MODEL_PREFIX + default_router + model[len(DEFAULT_ROUTER_MODEL):]
    routellm = _ROUTELLM_MODEL.match(model)
    if routellm:
        return routellm_choice(routellm["kind"], routellm["threshold"], routers, model)
    match = _ROUTER_MODEL.match(model)
    if not match:
        raise ApiError(404, f"unknown model {model!r}; use one of {available_models(routers, models)}",
                       param="model", code="model_not_found")
    kind = match["kind"]
    if kind not in routers:
        raise ApiError(404, f"unknown router {kind!r}; enabled routers: {routers}", param="model",
                       code="model_not_found")
    arg = match["arg"]
    if kind in multimodel:
        return multimodel_choice(kind, arg, model)
    if arg is None:
        return RouterChoice(kind=kind)
    if kind in NO_THRESHOLD:
        what = ("large-model share" if arg.startswith(SHARE_PREFIX)
                else "quality target" if arg.startswith(QUALITY_PREFIX) else "threshold")
        raise ApiError(400, f"router {kind!r} takes no {what} ({NO_THRESHOLD[kind]}); use {ROUTER_MODEL_PREFIX}{kind}",
                       param="model")
    if arg.startswith(PRICED_PREFIXES):
        return priced_choice(kind, arg, model)
    if arg.startswith(QUALITY_PREFIX):
        if kind == "random":
            raise ApiError(400, "router 'random' takes no quality target (its argument is the large-model share)",
                           param="model")
        target = _unit_number(arg[len(QUALITY_PREFIX):], "quality target", model)
        if target == 0.0:
            raise ApiError(400, f"quality target 0 in {model!r} must be above 0", param="model")
        return RouterChoice(kind=kind, quality_target=target)
    if arg.startswith(SHARE_PREFIX):
        return RouterChoice(kind=kind, large_share=_unit_number(arg[len(SHARE_PREFIX):], "large-model share", model))
    return RouterChoice(kind=kind, threshold=_unit_number(arg, "threshold", model))


def priced_choice(kind: str, arg: str, model: str) -> RouterChoice:
    """``router-X:cost=L`` / ``:budget=USD`` for a two-model router: the N-model rules on the pair
    (``routers.nmodel.pair``), at the app's prices; checked here (a 400 naming ``model``)."""
    try:
        parse_rule(arg)
    except ConfigError as exc:
        raise ApiError(400, f"{exc} in {model!r}", param="model") from None
    return RouterChoice(kind=kind, rule=arg.strip())


def multimodel_choice(kind: str, arg: str | None, model: str) -> RouterChoice:
    """``router-<name>[:rule]`` for an N-model router: the rule is checked here (a 400 naming ``model``)."""
    if arg is None:
        return RouterChoice(kind=kind)
    if "=" not in arg and arg.strip() != "default":
        raise ApiError(400, f"router {kind!r} chooses among N models by a selection rule, not a threshold: use "
                       f"{ROUTER_MODEL_PREFIX}{kind}:cost=L, :quality=R, :budget=USD, :share=S or :default "
                       f"(got {model!r})", param="model")
    try:
        parse_rule(arg)
    except ConfigError as exc:
        raise ApiError(400, f"{exc} in {model!r}", param="model") from None
    return RouterChoice(kind=kind, rule=arg.strip())


def routellm_choice(name: str, threshold_text: str, routers: list[str], model: str) -> RouterChoice:
    """RouteLLM's ``router-<router>-<threshold>``, mapped onto our threshold by
    ``routers.nmodel.pair.routellm_threshold`` (our routers score the other side). A threshold calibrated
    with RouteLLM's own ``calibrate_threshold`` keeps its meaning only for a router trained on the same data;
    ``router-mf:share=0.5`` is our equivalent of its ``--strong-model-pct 0.5``."""
    kind = ROUTELLM_ROUTERS.get(name)
    if kind is None:
        raise ApiError(404, f"unknown model {model!r}: RouteLLM-style names (router-<router>-<threshold>) are for "
                       f"its routers {sorted(ROUTELLM_ROUTERS)}; ours take router-{name}:<threshold>",
                       param="model", code="model_not_found")
    if kind not in routers:
        raise ApiError(404, f"RouteLLM router {name!r} (ours: {kind!r}) is not enabled; enabled routers: {routers}",
                       param="model", code="model_not_found")
    theta = _unit_number(threshold_text, "RouteLLM threshold", model)
    return RouterChoice(kind=kind, threshold=routellm_threshold(kind, theta), routellm_threshold=theta)


def _unit_number(text: str, what: str, model: str) -> float:
    """A number in [0, 1] from the ``model`` field, else a 400 naming it."""
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{what} {text!r} in {model!r} is not a number", param="model") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ApiError(400, f"{what} {value} in {model!r} must be within [0, 1]", param="model")
    return value


def available_models(routers: list[str], models: dict[str, str], default_router: str | None = None) -> list[str]:
    default = [DEFAULT_ROUTER_MODEL] if default_router is not None else []
    return default + [ROUTER_MODEL_PREFIX + r for r in routers] + sorted(models)


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


# --- responses ------------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error shape every 4xx/5xx of this API uses."""

    error: ErrorBody


class RoutingInfo(BaseModel):
    """Which model answered and why. Router-specific details (``decision_model``, ``verification_samples``,
    ``generated``, ``retried_on``, ...) ride along as extra keys."""

    model_config = ConfigDict(extra="allow")

    router: str | None
    model: str
    model_key: str
    use_large: bool | None = None
    score: float | None = None
    threshold: float | None = None
    verification_score: float | None = None
    escalated: bool | None = None
    policy: str | None = None
    reason: str
    fallback: bool
    cost: float
    cost_saved: float = Field(description="cost of sending this request to the large model, minus cost; "
                                          "negative when routing cost more (an AutoMix escalation)")
    router_latency_ms: float


class Usage(BaseModel):
    """Token counts as the answering model reported them (its extra details, if any, ride along)."""

    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    """The model's message as it sent it: text, or ``tool_calls`` with no text (and any other field it adds)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


#: stop, length, tool_calls, content_filter, ... as the model said
FinishReason = str | None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    routing: RoutingInfo


class TextChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    text: str
    finish_reason: FinishReason
    logprobs: dict[str, Any] | None = None


class CompletionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    routing: RoutingInfo


class RouteItem(BaseModel):
    """One route-only decision; the routing fields of an answer minus the answer's cost and latency."""

    model_config = ConfigDict(extra="allow")

    query: str
    model: str
    model_key: str
    router: str
    use_large: bool | None = None
    score: float | None = None
    threshold: float | None = None
    reason: str
    fallback: bool


class RouteResponse(BaseModel):
    object: Literal["route"]
    router: str
    data: list[RouteItem]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]
    routers: list[str]
    models: list[str]
    replica: str | None = Field(default=None, description="id of the ingress replica that answered")
