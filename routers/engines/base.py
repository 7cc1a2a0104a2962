"""The one small interface every model engine implements: embedding and generation.

Routers and Serve deployments only talk to these two classes, so the same pipeline runs on a laptop
(transformers on CPU) and on a GPU cluster (vLLM with tensor parallelism) by changing config alone.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass as validated_dataclass

from routers.errors import ConfigError, EngineError
from routers.paths import resolve_model_path
from routers.strict import StrictModel

PromptFormat = Literal["chat", "plain"]

# Base (non-instruct) models have no chat template; they answer this completion prompt and are
# stopped before they invent the next question.
PLAIN_PROMPT = "Question: {question}\nAnswer:"
PLAIN_STOP = ("\nQuestion:", "\n\n\n")


def render_plain_chat(messages: Sequence[dict[str, str]]) -> str:
    """OpenAI messages -> the Q/A completion prompt base models follow."""
    parts: list[str] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            parts.append(content.strip())
        elif role == "user":
            parts.append(PLAIN_PROMPT.format(question=content.strip()))
        elif role == "assistant":
            parts[-1:] = [f"{parts[-1]} {content.strip()}"] if parts else [content.strip()]
    if not parts or not parts[-1].endswith("Answer:"):
        parts.append("Answer:")
    return "\n".join(parts)


def model_identity(model: str) -> dict[str, Any]:
    """A model as fingerprints and caches see it: its name, its config and its weight files' sizes.

    The directory *name*, not the full path: the same model mounted elsewhere (another node, a moved
    checkout) is the same model, while replaced weights under the same name are not.
    """
    path = Path(model)
    if not path.is_dir():
        return {"name": model}
    config = path / "config.json"
    return {
        "name": path.name,
        "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None,
        "weights": sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors")),
    }


class SamplingParams(StrictModel):
    """How to sample: the OpenAI-style knobs the router uses."""

    n: int = Field(default=1, ge=1, le=64)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=64, ge=1, le=8192)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


Messages = list[dict[str, str]]


# Validated dataclasses, not plain ones: a result that crosses a Ray handle (an answer deployment, a remote
# engine) is checked when it is rebuilt on the other side, and pydantic models can hold it as a field.
@validated_dataclass
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    completion_tokens: int


@validated_dataclass
class GenerationResult:
    """All ``n`` completions of one prompt."""

    prompt_tokens: int
    completions: list[Completion] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.completions[0].text

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.completions)


class EngineConfigBase(StrictModel):

    backend: Literal["transformers", "vllm"] = "transformers"
    model: str = Field(description="local model directory (safetensors) or a hub id on GPU clusters")
    device: str = Field(default="auto", description="'auto' picks cuda when present, else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = Field(default=16, ge=1)
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads for this engine")

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must name a directory or a hub id")
        return value

    def resolved_model(self) -> str:
        try:
            return resolve_model_path(self.model)
        except ConfigError as exc:
            raise EngineError(f"cannot load model: {exc}") from exc


#: an embedder's numeric form: float32 as trained, or int8 weights (backend onnx)
Quantize = Literal["none", "int8"]


class EmbedderConfig(EngineConfigBase):
    """Sentence embedder (MiniLM on CPU, Longformer in the GPU config)."""

    backend: Literal["transformers", "onnx"] = Field(
        default="transformers", description="'onnx': ONNX Runtime on the CPU (same weights, exported once, "
        "faster); 'transformers': the reference, and the one for GPUs and Longformer"
    )
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    max_length: int = Field(default=512, ge=8)
    lanes: int = Field(
        default=1, ge=1, description="backend onnx: a call with several texts splits them over this many "
        "single-thread sessions run side by side (on a few cores, queries in parallel beat one query's ops in "
        "parallel); a lone text still runs on all num_threads"
    )
    quantize: Quantize = Field(
        default="none", description="backend onnx: 'int8' runs the encoder's matrix products on int8 weights "
        "(dynamic, per-channel): about twice the speed on CPUs with int8 dot products, vectors at cosine >= 0.98 "
        "to float32, and ~1.5% of the shipped routers' decisions flip, at no measured cost in routing quality "
        "(bench/embedder_quantisation.py)"
    )
    global_attention_first_token: bool = Field(
        default=True, description="Longformer: global attention on the first (<s>/CLS) token"
    )

    @model_validator(mode="after")
    def _onnx_options_need_onnx(self) -> EmbedderConfig:
        if self.lanes > 1 and self.backend != "onnx":
            raise ValueError(f"lanes: {self.lanes} needs backend: onnx (the transformers embedder runs one call "
                             "at a time on its torch threads)")
        if self.quantize != "none" and self.backend != "onnx":
            raise ValueError(f"quantize: {self.quantize} needs backend: onnx (the transformers embedder is the "
                             "float32 reference)")
        return self


class GeneratorConfig(EngineConfigBase):
    """A causal LM that generates: answer models, the causal-LM router, the policy router."""

    prompt_format: PromptFormat | Literal["auto"] = Field(
        default="auto", description="'chat' uses the tokenizer's chat template; 'plain' a Q/A completion prompt"
    )
    max_input_tokens: int = Field(default=2048, ge=16)
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=64)
    enforce_eager: bool = False
    async_engine: bool = Field(default=True, description="vLLM: AsyncLLMEngine (serving) instead of LLM (batch jobs)")
    kv_cache_memory_gb: float | None = Field(
        default=None, gt=0, description="vLLM: KV-cache size in GiB (CPU or GPU); unset = vLLM's own sizing "
        "(gpu_memory_utilization on GPUs, VLLM_CPU_KVCACHE_SPACE or 4 GiB on CPUs)"
    )
    cpu_threads_bind: str | None = Field(
        default=None,
        description="vLLM on CPU: cores per tensor-parallel rank, '|'-separated (VLLM_CPU_OMP_THREADS_BIND, "
        "e.g. '0|1'); unset = this process's cores split evenly over the ranks",
    )
    distributed_executor_backend: Literal["auto", "ray", "mp"] = Field(
        default="auto",
        description="vLLM tensor-parallel shards: 'ray' workers in the replica's placement group, 'mp' local "
        "processes; 'auto' = ray on GPUs, mp on CPUs (vLLM's CPU platform refuses Ray)",
    )

    def resolved_prompt_format(self, has_chat_template: bool) -> PromptFormat:
        """``prompt_format`` with ``auto`` decided: the chat template where the model has one."""
        if self.prompt_format != "auto":
            return self.prompt_format
        return "chat" if has_chat_template else "plain"


class AsyncEmbedder(ABC):
    """What routing needs of an embedder: vectors for texts, awaited. A local ``Embedder`` is one; so is
    the Serve app's adapter over its Embedder deployment."""

    @abstractmethod
    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 array."""


class Embedder(AsyncEmbedder):
    """Turns texts into fixed-size vectors, in this process."""

    dim: int
    model_name: str

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 array."""

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts)


def checked_engine_overrides(engine: dict[str, Any] | None) -> dict[str, Any] | None:
    """``GeneratorConfig`` fields that override an artifact's own engine (no model of their own), checked as a
    ``GeneratorConfig`` checks them, so a typo fails when the config is read."""
    if engine is not None:
        GeneratorConfig.model_validate({"model": "placeholder", **engine})
    return engine


class ChatModel(ABC):
    """What a router that calls an answer model needs (AutoMix's small model): chats in, results out.

    A local ``Generator`` is one (it renders each chat with its template, one batched call); so is the
    Serve app's adapter over an answer-model deployment, which applies the template on its side."""

    @abstractmethod
    async def achat(self, chats: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        """One result per chat, each with ``params.n`` completions."""


class SequenceScorer(ABC):
    """What a router that reads its own LM's probabilities needs (the N-model causal-LM router): log P of
    fixed continuations after each prompt. A local ``Generator`` is one; so is the Serve app's adapter over a
    router-LM deployment."""

    @abstractmethod
    async def abatch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """(len(prompts), len(continuations)): log P(continuation | prompt), summed over its tokens."""


class Generator(ChatModel, SequenceScorer):
    """Generates text from prompts, n samples per prompt, batched."""

    model_name: str
    prompt_format: PromptFormat

    @abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        """One result per prompt, each with ``params.n`` completions."""

    @abstractmethod
    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """Text deltas of one completion as they are produced."""

    @abstractmethod
    def sequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """log P(continuation | prompt), summed over the continuation's tokens, for each continuation."""

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @abstractmethod
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """Render OpenAI-style messages into this model's prompt text."""

    def shutdown(self) -> None:
        """Release the model (engine processes, GPU memory); engines without any keep the default."""

    def default_stop(self) -> list[str]:
        return list(PLAIN_STOP) if self.prompt_format == "plain" else []

    def with_default_stop(self, params: SamplingParams) -> SamplingParams:
        stops = list(dict.fromkeys([*params.stop, *self.default_stop()]))
        return params if stops == params.stop else params.model_copy(update={"stop": stops})

    def batch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """(len(prompts), len(continuations)) ``sequence_logprobs``; engines that can score many prompts in
        one pass (a transformers forward pass, one vLLM call) override this."""
        return np.array([self.sequence_logprobs(p, continuations) for p in prompts], dtype=np.float64)

    async def agenerate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        return await asyncio.to_thread(self.generate, prompts, params)

    async def achat(self, chats: Sequence[Messages], params: SamplingParams) -> list[GenerationResult]:
        if not chats:
            return []
        return await self.agenerate([self.chat_prompt(chat) for chat in chats], params)

    async def astream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str]:
        """Async wrapper that drives the sync stream in a worker thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str | BaseException | None]] = asyncio.Queue()

        def pump() -> None:
            try:
                for delta in self.stream(prompt, params):
                    loop.call_soon_threadsafe(queue.put_nowait, ("delta", delta))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        task = loop.run_in_executor(None, pump)
        try:
            while True:
                kind, item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if kind == "delta" and isinstance(item, str):
                    yield item
                else:
                    break
        finally:
            await task

    async def asequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        return await asyncio.to_thread(self.sequence_logprobs, prompt, continuations)

    async def abatch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.batch_sequence_logprobs, prompts, continuations)


@dataclass(frozen=True)
class Engines:
    """The engines a router decides with, by role: ``embedder``; ``small`` / ``large`` answer models;
    ``router``, a router's own language model. Local engines in a script, adapters over deployment
    handles in the Serve app: the router's ``aroute`` cannot tell them apart."""

    embedder: AsyncEmbedder | None = None
    models: Mapping[str, ChatModel] = field(default_factory=dict)
    #: LMs that only score (a router-LM deployment's adapter), by role
    scorers: Mapping[str, SequenceScorer] = field(default_factory=dict)

    def require_embedder(self, who: str) -> AsyncEmbedder:
        if self.embedder is None:
            raise ConfigError(f"{who} needs an embedder engine")
        return self.embedder

    def chat_model(self, role: str, who: str) -> ChatModel:
        model = self.models.get(role)
        if model is None:
            raise ConfigError(f"{who} needs a {role!r} model engine")
        return model

    def generator(self, role: str, who: str) -> Generator:
        """A model that scores and generates from raw prompts (a router's own LM), not only chats."""
        model = self.chat_model(role, who)
        if not isinstance(model, Generator):
            raise ConfigError(f"{who} needs a local {role!r} generator (prompts and log-probabilities), "
                              f"got a {type(model).__name__}")
        return model

    def scorer(self, role: str, who: str) -> SequenceScorer:
        """A model that gives log-probabilities of continuations: a scorer, or a local generator."""
        scorer = self.scorers.get(role)
        if scorer is not None:
            return scorer
        model = self.models.get(role)
        if not isinstance(model, SequenceScorer):
            raise ConfigError(f"{who} needs a {role!r} language model that scores continuations")
        return model


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; returns (text, whether a stop was found)."""
    cut = len(text)
    for stop in stops:
        if stop:
            index = text.find(stop)
            if index != -1:
                cut = min(cut, index)
    return text[:cut], cut != len(text)


class StopStringFilter:
    """Streams text while holding back anything that could be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.buffer += delta
        text, found = truncate_at_stop(self.buffer, self.stops)
        if found:
            self.stopped = True
            self.buffer = ""
            return text
        hold = self._partial_stop_suffix(self.buffer)
        ready, self.buffer = self.buffer[: len(self.buffer) - hold], self.buffer[len(self.buffer) - hold :]
        return ready

    def flush(self) -> str:
        rest, self.buffer = ("" if self.stopped else self.buffer), ""
        return rest

    def _partial_stop_suffix(self, text: str) -> int:
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    longest = max(longest, size)
                    break
        return longest
