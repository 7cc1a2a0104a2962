"""vLLM implementation of the generator interface (GPU, tensor parallelism).

Two engines behind one class: ``AsyncLLMEngine`` for serving (continuous batching across concurrent
requests, token streaming) and the offline ``LLM`` for batch jobs such as AutoMix verification sampling.
vLLM is imported lazily so that CPU installs never need it.

Token ids are built here, not by vLLM: a plain-string prompt would be tokenised by vLLM's own rules
(which add BOS to every prompt), while the transformers engine and training add special tokens only to
``plain`` prompts (chat templates carry their own; the causal-LM router was trained on raw prompts
without them). :meth:`VLLMGenerator.encode_prompt` applies the transformers engine's rules and every
request goes to vLLM as ``TokensPrompt(prompt_token_ids=...)``, so both back ends see the same tokens.
Scored continuations are tokenised apart from the prompt and appended (as in training), so the
prompt/continuation boundary cannot merge into one token. Weights load as safetensors only.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from routers.engines.base import (
    Completion,
    GenerationResult,
    Generator,
    GeneratorConfig,
    SamplingParams,
    StopStringFilter,
)
from routers.engines.hf import _load_tokenizer, render_plain_chat
from routers.errors import EngineError

T = TypeVar("T")

# Never unpickle weights (.bin / .pt checkpoints can run code on load): the same rule as the transformers engine.
SAFE_LOAD_FORMAT = "safetensors"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:  # pragma: no cover - exercised only where vllm is missing
        raise EngineError(
            "backend 'vllm' needs the vllm package (pip install 'ray-llm-router[gpu]') and a CUDA GPU"
        ) from exc
    return vllm


class VLLMGenerator(Generator):
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.vllm = _import_vllm()
        path = config.resolved_model()
        self.model_name = path
        self.tokenizer = _load_tokenizer(path)
        # Long prompts keep their end, where the question and the answer cue are (as the transformers engine).
        self.tokenizer.truncation_side = "left"
        from vllm.inputs import TokensPrompt

        self._tokens_prompt = TokensPrompt
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if config.prompt_format == "auto":
            self.prompt_format = "chat" if has_template else "plain"
        else:
            self.prompt_format = config.prompt_format
        engine_args: dict[str, Any] = {
            "model": path,
            "tensor_parallel_size": config.tensor_parallel_size,
            "gpu_memory_utilization": config.gpu_memory_utilization,
            "dtype": "auto" if config.dtype == "auto" else config.dtype,
            "enforce_eager": config.enforce_eager,
            "max_num_seqs": max(config.max_batch_size, 1),
            "load_format": SAFE_LOAD_FORMAT,
        }
        if config.max_model_len:
            engine_args["max_model_len"] = config.max_model_len
        if config.tensor_parallel_size > 1:
            # Inside a Ray Serve replica the shards must be Ray workers placed in the replica's
            # placement group (one GPU bundle per shard), not local processes.
            engine_args["distributed_executor_backend"] = "ray"
        self._loop: asyncio.AbstractEventLoop | None = None
        if config.async_engine:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.engine.async_llm_engine import AsyncLLMEngine

            self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_args))
            self.llm = None
        else:
            self.engine = None
            self.llm = self.vllm.LLM(**engine_args)

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
        return self.vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)

    def _sampling(self, params: SamplingParams, **extra: Any) -> Any:
        return self.vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            **extra,
        )

    @staticmethod
    def _result(output: Any) -> GenerationResult:
        completions = [
            Completion(
                text=c.text,
                finish_reason="length" if c.finish_reason == "length" else "stop",
                completion_tokens=len(c.token_ids),
            )
            for c in output.outputs
        ]
        return GenerationResult(prompt_tokens=len(output.prompt_token_ids or []), completions=completions)

    # --- running coroutines from sync callers --------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # --- generation ----------------------------------------------------------------------------
    async def _agenerate_one(self, prompt: Any, sampling: Any) -> Any:
        final = None
        async for output in self.engine.generate(prompt, sampling, request_id=uuid.uuid4().hex):
            final = output
        if final is None:
            raise EngineError("vLLM returned no output")
        return final

    async def agenerate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        params = self.with_default_stop(params)
        if self.engine is None:
            return await asyncio.to_thread(self.generate, prompts, params)
        sampling = self._sampling(params)
        requests = [self.generation_request(p) for p in prompts]
        outputs = await asyncio.gather(*(self._agenerate_one(r, sampling) for r in requests))
        return [self._result(o) for o in outputs]

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        params = self.with_default_stop(params)
        if self.llm is not None:
            requests = [self.generation_request(p) for p in prompts]
            outputs = self.llm.generate(requests, self._sampling(params), use_tqdm=False)
            return [self._result(o) for o in outputs]
        return self._run(self.agenerate(prompts, params))

    async def astream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str]:
        params = self.with_default_stop(params.model_copy(update={"n": 1}))
        if self.engine is None:
            for delta in self.stream(prompt, params):
                yield delta
            return
        from vllm.sampling_params import RequestOutputKind

        sampling = self._sampling(params, output_kind=RequestOutputKind.DELTA)
        stop_filter = StopStringFilter(params.stop)  # vLLM already stops; this only guards partial matches
        request = self.generation_request(prompt)
        async for output in self.engine.generate(request, sampling, request_id=uuid.uuid4().hex):
            ready = stop_filter.push(output.outputs[0].text)
            if ready:
                yield ready
        rest = stop_filter.flush()
        if rest:
            yield rest

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        if self.engine is None:
            # The offline engine cannot stream; emit the whole completion as one delta.
            yield self.generate([prompt], params.model_copy(update={"n": 1}))[0].text
            return
        queue: list[str] = []

        async def collect() -> None:
            async for delta in self.astream(prompt, params):
                queue.append(delta)

        self._run(collect())
        yield from queue

    # --- scoring -------------------------------------------------------------------------------
    async def asequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        if self.engine is None:
            return await asyncio.to_thread(self.sequence_logprobs, prompt, continuations)
        return (await self._abatch_sequence_logprobs([prompt], continuations))[0]

    def sequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        return self.batch_sequence_logprobs([prompt], continuations)[0]

    def batch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """log P(continuation | prompt) for every prompt and continuation, in ONE vLLM call."""
        if self.llm is None:
            return self._run(self._abatch_sequence_logprobs(prompts, continuations))
        requests, lengths = self._batch_scoring_requests(prompts, continuations)
        outputs = self.llm.generate(requests, self.scoring_params(), use_tqdm=False)
        return self._group_logprobs(outputs, lengths, len(continuations))

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
