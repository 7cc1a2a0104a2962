"""Model engines: one interface for embedding and generation, transformers (CPU) or vLLM (GPU) behind it."""

from __future__ import annotations

from routers.engines.base import (
    AsyncEmbedder,
    ChatModel,
    Completion,
    Embedder,
    EmbedderConfig,
    Engines,
    GenerationResult,
    Generator,
    GeneratorConfig,
    Messages,
    SamplingParams,
    SequenceScorer,
    checked_engine_overrides,
    model_identity,
    resolve_model_path,
)


def build_embedder(config: EmbedderConfig) -> Embedder:
    if config.backend == "onnx":
        from routers.engines.onnx import OnnxEmbedder

        return OnnxEmbedder(config)
    from routers.engines.hf import TransformersEmbedder

    return TransformersEmbedder(config)


def build_generator(config: GeneratorConfig) -> Generator:
    if config.backend == "vllm":
        from routers.engines.vllm_engine import VLLMGenerator

        return VLLMGenerator(config)
    from routers.engines.hf import TransformersGenerator

    return TransformersGenerator(config)


__all__ = [
    "AsyncEmbedder",
    "ChatModel",
    "Completion",
    "Embedder",
    "EmbedderConfig",
    "Engines",
    "GenerationResult",
    "Generator",
    "GeneratorConfig",
    "Messages",
    "SamplingParams",
    "SequenceScorer",
    "build_embedder",
    "build_generator",
    "checked_engine_overrides",
    "model_identity",
    "resolve_model_path",
]
