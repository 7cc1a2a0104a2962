"""The language model of an N-model router that scores with its own LM (``routers.multimodel.<name>`` holding an
``nmodel_causal`` artifact): it hosts the engine, and the router itself decides in the ingress.

``score(prompts, continuations)`` answers log P(continuation | prompt) for a batch (one engine call);
``score_one`` is one prompt, and concurrent calls share one pass through ``@serve.batch``. The engine is the
artifact's merged model (base + LoRA adapter, merged on first start), with the config's ``engine`` fields on top
(``backend: vllm``, ``tensor_parallel_size`` on GPUs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from routers.engines import Generator, GeneratorConfig, build_generator
from routers.nmodel.base import read_manifest
from routers.paths import existing_path
from routers.progress import set_quiet
from routers.registry import multimodel_router_class
from serve_app.config import BatchingSettings


def router_lm_config(artifact: str, engine: dict[str, Any] | None) -> GeneratorConfig:
    """The artifact router's own LM engine, with ``engine`` overriding its fields."""
    directory = Path(artifact)
    router = multimodel_router_class(read_manifest(directory)["router"]).load(directory)
    return GeneratorConfig.model_validate({**router.engine_config().model_dump(), **(engine or {})})


@serve.deployment(name="RouterLM")
class RouterLMDeployment:
    """Scores continuations with an N-model router's LM; concurrent single prompts share a forward pass."""

    def __init__(self, name: str, artifact: str, engine: dict[str, Any] | None = None,
                 batching: dict[str, Any] | None = None) -> None:
        set_quiet(True)  # a replica has no terminal: no progress bars per batch
        path = existing_path(artifact, f"routers.multimodel.{name}.artifact")
        self.generator: Generator = build_generator(router_lm_config(path, engine))
        settings = BatchingSettings.model_validate(batching or {"max_batch_size": 8})
        self._score_batched.set_max_batch_size(settings.max_batch_size)
        self._score_batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    async def score(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        rows = await self.generator.abatch_sequence_logprobs(prompts, continuations)
        return [[float(v) for v in row] for row in rows]

    async def score_one(self, prompt: str, continuations: list[str]) -> list[float]:
        return await self._score_batched((prompt, tuple(continuations)))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _score_batched(self, items: list[tuple[str, tuple[str, ...]]]) -> list[list[float]]:
        """One engine call per distinct continuation list in the batch (one router: one list)."""
        out: list[list[float]] = [[] for _ in items]
        for continuations in dict.fromkeys(conts for _, conts in items):
            positions = [i for i, (_, conts) in enumerate(items) if conts == continuations]
            rows = await self.score([items[i][0] for i in positions], list(continuations))
            for i, row in zip(positions, rows, strict=True):
                out[i] = row
        return out
