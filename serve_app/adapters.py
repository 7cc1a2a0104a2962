"""The library's engine interfaces over Serve deployment handles, so the ingress hands the library's
routers the same kind of engines a script does (``routers.engines.Engines``) and the router decides.

- ``DeploymentEmbedder``: an ``AsyncEmbedder`` over the Embedder deployment (one query: its request
  batcher; a list: one call);
- ``AnswerModelChat``: a ``ChatModel`` over an answer model's client (our AnswerModel deployment or a Ray
  Serve LLM server), as AutoMix's small model;
- ``DeploymentScorer``: a ``SequenceScorer`` over a router-LM deployment (the N-model causal-LM router's
  model: log-probabilities of every candidate's name; one query: the deployment's batcher);
- ``HostedRouter``: a router that lives in a deployment of its own with its model (causal-LM, policy,
  BERT): the deployment runs the library router's ``aroute_many``; this passes the request on and checks
  the typed decision that comes back.

Every remote call has the app's timeout. A failure is a ``RouterUnavailable`` that names the step (the
ingress then answers with the fallback model), so the library never sees Ray's exception types.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import TypeAdapter

from routers.base import RouteContext, RouteDecision
from routers.engines import (
    AsyncEmbedder,
    ChatModel,
    Engines,
    GenerationResult,
    Messages,
    SamplingParams,
    SequenceScorer,
)
from serve_app.api import ApiError

if TYPE_CHECKING:  # the answer clients use this module's helpers
    from serve_app.answer_clients import AnswerClient

T = TypeVar("T")
GENERATION = TypeAdapter(GenerationResult)


class RouterUnavailable(Exception):
    """A router step failed or timed out; the ingress falls back to the configured model."""


class StepTimeout(RouterUnavailable, TimeoutError):
    """A remote call ran past its timeout (a router step, or an answer model: then it is transient)."""


async def with_timeout(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout=seconds)
    except TimeoutError:
        cancel = getattr(awaitable, "cancel", None)  # a DeploymentResponse can be cancelled, a coroutine not
        if callable(cancel):
            cancel()
        raise StepTimeout(f"{what} timed out after {seconds:.1f}s") from None


@contextmanager
def router_step(what: str) -> Iterator[None]:
    """Turn any failure of a router step into ``RouterUnavailable`` (so the ingress falls back, not 500s).

    ``ApiError`` passes through: it is a decision about the request (e.g. a router that is not enabled);
    a ``RouterUnavailable`` from an inner step keeps that step's name.
    """
    try:
        yield
    except (RouterUnavailable, ApiError):
        raise
    except Exception as exc:
        raise RouterUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def generation_result(raw: Any) -> GenerationResult:
    """An answer model's result (a dict from a deployment, or already typed) as a ``GenerationResult``."""
    return raw if isinstance(raw, GenerationResult) else GENERATION.validate_python(raw)


class DeploymentEmbedder(AsyncEmbedder):
    def __init__(self, handle: Any, timeout_s: float) -> None:
        self.handle = handle
        self.timeout_s = timeout_s

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        with router_step("embedder"):
            if len(texts) == 1:  # concurrent requests share a forward pass in the deployment's batcher
                vector = await with_timeout(self.handle.embed_one.remote(texts[0]), self.timeout_s, "embedder")
                return np.asarray(vector, dtype=np.float32)[None, :]
            vectors = await with_timeout(self.handle.embed.remote(list(texts)), self.timeout_s, "embedder")
            return np.asarray(vectors, dtype=np.float32)


class DeploymentScorer(SequenceScorer):
    """``what`` names the step in failures ("causal_n router LM")."""

    def __init__(self, handle: Any, timeout_s: float, what: str) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self.what = what

    async def abatch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        with router_step(self.what):
            if len(prompts) == 1:  # concurrent requests share a forward pass in the deployment's batcher
                row = await with_timeout(self.handle.score_one.remote(prompts[0], list(continuations)),
                                         self.timeout_s, self.what)
                return np.asarray(row, dtype=np.float64)[None, :]
            rows = await with_timeout(self.handle.score.remote(list(prompts), list(continuations)),
                                      self.timeout_s, self.what)
            return np.asarray(rows, dtype=np.float64).reshape(len(prompts), len(continuations))


class AnswerModelChat(ChatModel):
    """``what`` names the step in failures ("AutoMix small-model step")."""

    def __init__(self, client: AnswerClient, timeout_s: float, what: str) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.what = what

    async def achat(self, chats: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        from serve_app.openai_shapes import AnswerRequest

        # One request per chat: the answer deployment (or server) batches concurrent requests itself.
        with router_step(self.what):
            answers = await asyncio.gather(*[
                with_timeout(self.client.complete(AnswerRequest.chat(chat, params)), self.timeout_s, self.what)
                for chat in chats])
            return [answer.generation_result() for answer in answers]


class HostedRouter:
    """A router served by its own deployment; ``aroute`` has the library router's signature."""

    def __init__(self, kind: str, handle: Any, timeout_s: float) -> None:
        self.kind = kind
        self.handle = handle
        self.timeout_s = timeout_s

    async def aroute(self, query: str, engines: Engines, threshold: float | None = None,
                     context: RouteContext | None = None) -> RouteDecision:
        what = f"{self.kind} router"
        with router_step(what):
            raw = await with_timeout(self.handle.route.remote(query, threshold), self.timeout_s, what)
            # A replica on another code version may send junk: validated, it is a router failure.
            return raw if isinstance(raw, RouteDecision) else RouteDecision.model_validate(raw)

    async def reference_quantiles(self) -> list[float] | None:
        return await with_timeout(self.handle.reference_quantiles.remote(), self.timeout_s, f"{self.kind} router")
