"""An answer model deployment (one per model: ``small``, ``large``, ...).

Concurrent requests with the same sampling settings are batched into one ``generate`` call; ``n``
samples of one prompt (AutoMix verification) are produced by a single call, never ``n`` calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ray import serve

from routers.engines import GenerationResult, Generator, GeneratorConfig, SamplingParams, build_generator
from routers.engines.batching import BatchStats
from serve_app.config import BatchingSettings

Messages = list[dict[str, str]]
Request = tuple[str, SamplingParams]

logger = logging.getLogger("ray.serve")


def sampling_key(params: SamplingParams) -> str:
    """Requests batch together only with equal sampling settings (one ``generate`` call takes one)."""
    return json.dumps(params.model_dump(), sort_keys=True)


class EngineBatcher:
    """Batches concurrent requests for one engine, forming each batch when the engine is free to run it.

    ``@serve.batch`` (Ray 2.60's, at least) forms a batch as soon as ``batch_wait_timeout_s`` passes after
    its first request, then waits for the ``max_concurrent_batches`` semaphore with the batch already fixed:
    while one engine call runs, the requests arriving meanwhile are cut into many batches of one or two, which
    then run one after another (measured: 1.5-2.2 requests per call under 32 clients). Here requests queue
    until the engine is idle; the next batch then takes every waiting request with the oldest one's sampling
    settings (up to ``max_batch_size``), waiting ``batch_wait_timeout_s`` after the oldest arrival at most.
    """

    def __init__(self, run: Callable[[list[str], SamplingParams], Awaitable[list[Any]]],
                 max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.stats = BatchStats()
        self._pending: deque[tuple[float, str, Request, asyncio.Future]] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def submit(self, prompt: str, params: SamplingParams) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((loop.time(), sampling_key(params), (prompt, params), future))
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())
        return await future  # a cancelled caller cancels the future; it is then left out of its batch

    def _drop_cancelled(self) -> None:
        if any(entry[3].done() for entry in self._pending):
            self._pending = deque(entry for entry in self._pending if not entry[3].done())

    async def _wait_to_fill(self) -> None:
        """Until ``max_batch_size`` requests wait, or ``batch_wait_timeout_s`` after the oldest one came."""
        loop = asyncio.get_running_loop()
        deadline = self._pending[0][0] + self.batch_wait_timeout_s
        while len(self._pending) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[tuple[float, str, Request, asyncio.Future]]:
        key = self._pending[0][1]
        batch, rest = [], deque()
        for entry in self._pending:
            (batch if entry[1] == key and len(batch) < self.max_batch_size else rest).append(entry)
        self._pending = rest
        return batch

    async def _loop(self) -> None:
        while True:
            self._drop_cancelled()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_to_fill()
            self._drop_cancelled()
            if not self._pending:
                continue
            batch = self._take_batch()
            futures = [entry[3] for entry in batch]
            started = time.perf_counter()
            try:
                results = await self.run([entry[2][0] for entry in batch], batch[0][2][1])
                if len(results) != len(batch):
                    raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} prompts")
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error; the loop goes on
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self.stats.record(len(batch), elapsed)
            logger.debug("answer batch of %d in %.3f s (%d waiting)", len(batch), elapsed, len(self._pending))
            for future, result in zip(futures, results, strict=True):
                if not future.done():
                    future.set_result(result)


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
        settings = BatchingSettings.model_validate(batching)
        self.batcher = EngineBatcher(self._run_batch, settings.max_batch_size, settings.batch_wait_timeout_s)

    def apply_batching(self, batching: BatchingSettings) -> None:
        self.batcher.max_batch_size = batching.max_batch_size
        self.batcher.batch_wait_timeout_s = batching.batch_wait_timeout_s

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
        return await self.batcher.submit(self.prompt_for(messages), sampling)

    async def generate_unbatched(self, messages: Messages, params: dict[str, Any]) -> dict[str, Any]:
        sampling = self.generator.with_default_stop(SamplingParams.model_validate(params))
        results = await self.generator.agenerate([self.prompt_for(messages)], sampling)
        return result_to_dict(results[0], self.served_name)

    async def _run_batch(self, prompts: list[str], params: SamplingParams) -> list[dict[str, Any]]:
        """One engine call for a batch with one sampling setting."""
        results = await self.generator.agenerate(prompts, params)
        return [result_to_dict(result, self.served_name) for result in results]

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

    def batch_stats(self) -> dict[str, Any]:
        """Requests per engine call since the replica started (``bench/load_bench.py`` reports them)."""
        return self.batcher.stats.as_dict()
