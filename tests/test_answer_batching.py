"""The answer deployment batches concurrent requests into full engine calls, formed when the engine is free.

The deployment class runs here without Ray, on a stub engine that records its calls and can be held busy;
the transformers engine's stop-string handling runs on a tiny random model (and, slow, on the real Gemma).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from routers.engines import (
    Completion,
    GenerationResult,
    Generator,
    GeneratorConfig,
    SamplingParams,
    build_generator,
)
from routers.engines.hf import TransformersGenerator, _StopOnStrings
from serve_app.config import BatchingSettings
from serve_app.deployments.answer_model import AnswerModelDeployment, EngineBatcher
from tests.tiny_models import save_tiny_llama

GREEDY = {"max_tokens": 4}


class RecordingGenerator(Generator):
    """Echoes each prompt; ``hold`` keeps the engine busy in its call until released."""

    prompt_format = "chat"
    model_name = "stub"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail_next = False

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return messages[-1]["content"]

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        self.calls.append((list(prompts), params))
        self.entered.set()
        self.hold.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("engine failed")
        return [GenerationResult(len(p), [Completion(f"{p}#{j}", "stop", 1) for j in range(params.n)])
                for p in prompts]

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        yield prompt

    def sequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        return [0.0] * len(continuations)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def deployment(max_batch_size: int = 8, batch_wait_timeout_s: float = 0.01) -> tuple[Any, RecordingGenerator]:
    """The real deployment class (Serve's wrapper peeled off) on the recording engine."""
    cls = AnswerModelDeployment.func_or_class
    self = cls.__new__(cls)
    self.name, self.served_name = "small", "stub-model"
    self.generator = RecordingGenerator()
    self.batcher = EngineBatcher(self._run_batch, max_batch_size, batch_wait_timeout_s)
    return self, self.generator


def ask(app: Any, text: str, **params: Any) -> Any:
    return app.generate([{"role": "user", "content": text}], {**GREEDY, **params})


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 5)


def test_concurrent_requests_form_one_engine_call() -> None:
    app, engine = deployment()

    async def main() -> list[dict[str, Any]]:
        return await asyncio.gather(*[ask(app, f"q{i}") for i in range(8)])

    answers = asyncio.run(main())
    assert [prompts for prompts, _ in engine.calls] == [[f"q{i}" for i in range(8)]]
    assert [a["completions"][0]["text"] for a in answers] == [f"q{i}#0" for i in range(8)]
    assert all(a["model"] == "stub-model" for a in answers)
    assert app.batch_stats()["sizes"] == {8: 1}


def test_requests_arriving_while_the_engine_is_busy_form_full_batches() -> None:
    """The regression: ``@serve.batch`` cut these 20 requests into batches of 1-2 while the first call ran."""
    app, engine = deployment(max_batch_size=8)

    async def main() -> list[dict[str, Any]]:
        engine.hold.clear()
        first = asyncio.ensure_future(ask(app, "first"))
        await wait_for(engine.entered)
        rest = []
        for i in range(20):  # trickle in, as a loaded ingress sends them
            rest.append(asyncio.ensure_future(ask(app, f"q{i}")))
            await asyncio.sleep(0.005)
        engine.hold.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    assert [len(prompts) for prompts, _ in engine.calls] == [1, 8, 8, 4]
    assert [a["completions"][0]["text"] for a in answers] == ["first#0"] + [f"q{i}#0" for i in range(20)]
    assert app.batch_stats()["mean_batch_size"] == 21 / 4


def test_sampling_settings_batch_separately_oldest_first() -> None:
    app, engine = deployment(max_batch_size=4)

    async def main() -> list[dict[str, Any]]:
        engine.hold.clear()
        first = asyncio.ensure_future(ask(app, "first"))
        await wait_for(engine.entered)
        waiting = [asyncio.ensure_future(ask(app, f"{kind}{i}", temperature=0.7 if kind == "t" else 0.0))
                   for i in range(3) for kind in ("g", "t")]
        await asyncio.sleep(0.05)
        engine.hold.set()
        return await asyncio.gather(first, *waiting)

    answers = asyncio.run(main())
    calls = [(prompts, params.temperature) for prompts, params in engine.calls]
    assert calls == [(["first"], 0.0), (["g0", "g1", "g2"], 0.0), (["t0", "t1", "t2"], 0.7)]
    texts = [a["completions"][0]["text"] for a in answers[1:]]
    assert texts == [f"{k}{i}#0" for i in range(3) for k in ("g", "t")]


def test_n_samples_of_one_prompt_are_one_request() -> None:
    app, engine = deployment()
    answer = asyncio.run(ask(app, "verify", n=3, temperature=1.0))
    assert len(engine.calls) == 1 and engine.calls[0][1].n == 3
    assert [c["text"] for c in answer["completions"]] == ["verify#0", "verify#1", "verify#2"]


def test_a_cancelled_request_is_left_out_of_its_batch() -> None:
    app, engine = deployment()

    async def main() -> list[dict[str, Any]]:
        engine.hold.clear()
        first = asyncio.ensure_future(ask(app, "first"))
        await wait_for(engine.entered)
        gone = asyncio.ensure_future(ask(app, "gone"))
        kept = asyncio.ensure_future(ask(app, "kept"))
        await asyncio.sleep(0.02)
        gone.cancel()
        engine.hold.set()
        return await asyncio.gather(first, kept)

    asyncio.run(main())
    assert [prompts for prompts, _ in engine.calls] == [["first"], ["kept"]]


def test_an_engine_error_fails_its_batch_only() -> None:
    app, engine = deployment()

    async def main() -> tuple[list[Any], dict[str, Any]]:
        engine.fail_next = True
        failed = await asyncio.gather(ask(app, "a"), ask(app, "b"), return_exceptions=True)
        return failed, await ask(app, "c")

    failed, later = asyncio.run(main())
    assert all(isinstance(f, RuntimeError) for f in failed)
    assert later["completions"][0]["text"] == "c#0"


def test_reconfigure_changes_the_batch_size() -> None:
    app, engine = deployment(max_batch_size=8)
    app.reconfigure({"batching": BatchingSettings(max_batch_size=3, batch_wait_timeout_s=0.05).model_dump()})
    assert (app.batcher.max_batch_size, app.batcher.batch_wait_timeout_s) == (3, 0.05)

    async def main() -> None:
        await asyncio.gather(*[ask(app, f"q{i}") for i in range(7)])

    asyncio.run(main())
    assert [len(prompts) for prompts, _ in engine.calls] == [3, 3, 1]
    with pytest.raises(ValueError, match="unknown key"):
        app.reconfigure({"batchin": {}})


# --- stop strings in the transformers engine ----------------------------------------------------
@pytest.fixture(scope="module")
def tiny_plain_generator(tmp_path_factory: pytest.TempPathFactory) -> TransformersGenerator:
    directory = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-plain"), chat=False)
    return TransformersGenerator(GeneratorConfig(model=str(directory), device="cpu"))


def test_stop_strings_do_not_use_transformers_per_call_vocab_scan(
    tiny_plain_generator: TransformersGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``generate(stop_strings=...)`` re-scans the whole vocabulary on every call (~3 s for Gemma's)."""
    from transformers.generation import stopping_criteria

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("StopStringCriteria built")

    monkeypatch.setattr(stopping_criteria.StopStringCriteria, "__init__", refuse)
    params = tiny_plain_generator.with_default_stop(SamplingParams(max_tokens=8))
    assert params.stop
    assert len(tiny_plain_generator.generate(["a b c", "d e"], params)) == 2


def test_stop_on_strings_stops_rows_one_by_one(tiny_plain_generator: TransformersGenerator) -> None:
    tokenizer = tiny_plain_generator.tokenizer
    prompt = tokenizer(["zz"], add_special_tokens=False).input_ids[0]
    texts = ("a b STOP c", "a b c d e")
    rows = [prompt + tokenizer(text, add_special_tokens=False).input_ids for text in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    criteria = _StopOnStrings(tokenizer, ["STOP"], prompt_len=len(prompt))
    assert criteria(ids, None).tolist() == [True, False]
    # the stop text in the prompt itself does not count
    assert _StopOnStrings(tokenizer, ["zz"], prompt_len=len(prompt))(ids, None).tolist() == [False, False]


def test_stopped_batch_matches_one_at_a_time(tiny_plain_generator: TransformersGenerator) -> None:
    free = tiny_plain_generator.generate(["a b c"], SamplingParams(max_tokens=12))[0].text
    assert len(free) >= 4
    params = SamplingParams(max_tokens=12, stop=[free[2:4]])
    prompts = ["a b c", "What is two plus two?", "d e"]
    alone = [tiny_plain_generator.generate([p], params)[0].completions[0] for p in prompts]
    batched = [r.completions[0] for r in tiny_plain_generator.generate(prompts, params)]
    assert [(c.text, c.finish_reason) for c in batched] == [(c.text, c.finish_reason) for c in alone]
    assert alone[0].finish_reason == "stop" and free[2:4] not in alone[0].text


@pytest.mark.slow
def test_real_gemma_plain_prompts_batch_with_default_stops(models_dir: Path) -> None:
    engine = build_generator(GeneratorConfig(model=str(models_dir / "gemma-3-270m"), num_threads=1))
    assert engine.prompt_format == "plain"
    questions = ["What is the capital of Italy?", "Name a noble gas.", "What is 9 times 7?"]
    prompts = [engine.chat_prompt([{"role": "user", "content": q}]) for q in questions]
    params = engine.with_default_stop(SamplingParams(max_tokens=24))
    engine.generate(prompts[:1], params)
    started = time.perf_counter()
    batched = engine.generate(prompts, params)
    elapsed = time.perf_counter() - started
    alone = [engine.generate([p], params)[0] for p in prompts]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert all("\nQuestion:" not in r.text for r in batched)
    assert elapsed < 20, f"3 prompts x 24 tokens took {elapsed:.1f} s"
