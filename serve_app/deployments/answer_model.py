"""An answer model deployment (one per model: ``small``, ``large``, ...).

Concurrent requests with the same sampling settings are batched into one ``generate`` call; ``n``
samples of one prompt (AutoMix verification) are produced by a single call, never ``n`` calls.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from routers.engines import GenerationResult, Generator, GeneratorConfig, SamplingParams, build_generator
from serve_app.config import BatchingSettings

Messages = list[dict[str, str]]


def result_to_dict(result: GenerationResult, model: str) -> dict[str, Any]:
    return {
        "model": model,
        "prompt_tokens": result.prompt_tokens,
        "completions": [
            {"text": c.text, "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens}
            for c in result.completions
        ],
    }


@serve.deployment(name="AnswerModel")
class AnswerModelDeployment:
    def __init__(self, name: str, served_name: str, engine: dict[str, Any], batching: dict[str, Any]) -> None:
        self.name = name
        self.served_name = served_name
        self.config = GeneratorConfig.model_validate(engine)
        self.generator: Generator = build_generator(self.config)
        self.apply_batching(BatchingSettings.model_validate(batching))

    def apply_batching(self, batching: BatchingSettings) -> None:
        self._generate_batched.set_max_batch_size(batching.max_batch_size)
        self._generate_batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """``user_config: {batching: {...}}``; any other key is an error (never silently ignored)."""
        user_config = user_config or {}
        unknown = sorted(set(user_config) - {"batching"})
        if unknown:
            raise ValueError(f"AnswerModel-{self.name} user_config: unknown key(s) {unknown}; allowed: ['batching']")
        if "batching" in user_config:
            self.apply_batching(BatchingSettings.model_validate(user_config["batching"]))

    def prompt_for(self, messages: Messages) -> str:
        return self.generator.chat_prompt(messages)

    async def generate(self, messages: Messages, params: dict[str, Any]) -> dict[str, Any]:
        """All ``params['n']`` completions of one chat, batched with concurrent calls."""
        sampling = self.generator.with_default_stop(SamplingParams.model_validate(params))
        prompt = self.prompt_for(messages)
        return await self._generate_batched((prompt, sampling))

    async def generate_unbatched(self, messages: Messages, params: dict[str, Any]) -> dict[str, Any]:
        sampling = self.generator.with_default_stop(SamplingParams.model_validate(params))
        results = await self.generator.agenerate([self.prompt_for(messages)], sampling)
        return result_to_dict(results[0], self.served_name)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _generate_batched(self, requests: list[tuple[str, SamplingParams]]) -> list[dict[str, Any]]:
        """Group the batch by sampling settings (one engine call needs one setting) and run each group."""
        groups: dict[str, list[int]] = {}
        for index, (_, params) in enumerate(requests):
            groups.setdefault(json.dumps(params.model_dump(), sort_keys=True), []).append(index)
        outputs: list[dict[str, Any] | None] = [None] * len(requests)
        for indices in groups.values():
            params = requests[indices[0]][1]
            results = await self.generator.agenerate([requests[i][0] for i in indices], params)
            for index, result in zip(indices, results, strict=True):
                outputs[index] = result_to_dict(result, self.served_name)
        return outputs  # type: ignore[return-value]

    async def stream(self, messages: Messages, params: dict[str, Any]) -> AsyncIterator[str]:
        """Text deltas of one completion as the model produces them."""
        sampling = self.generator.with_default_stop(SamplingParams.model_validate(params))
        async for delta in self.generator.astream(self.prompt_for(messages), sampling):
            if delta:
                yield delta

    def usage(self, messages: Messages, completion: str) -> dict[str, int]:
        """Token counts of a streamed exchange (the stream itself yields only text)."""
        return {
            "prompt_tokens": self.generator.count_tokens(self.prompt_for(messages)),
            "completion_tokens": self.generator.count_tokens(completion),
        }

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "served_name": self.served_name,
            "backend": self.config.backend,
            "prompt_format": self.generator.prompt_format,
        }
