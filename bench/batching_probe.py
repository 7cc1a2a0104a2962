"""The answer deployment's batching, without Ray, in two parts (compare ratios within one run: the figures
move with the machine's load).

``engine``: how fast TransformersGenerator answers 1 prompt per call vs ``--batch`` prompts per call, with the
params the app uses (each model's chat template or plain prompt and default stop strings, greedy,
``--max-tokens`` 4, the engine settings of serve_config.yaml), and what a call costs besides the model (the
stop-string set-up, torch threads in a worker thread).

``concurrency``: ``--clients`` concurrent clients (each waits a random 0..``--think-ms`` between its requests,
as requests come out of the ingress's routing step) against the deployment's batching function: the
``@serve.batch`` one it had (a copy, below) vs its ``EngineBatcher``, in alternating rounds on one engine.

    python bench/batching_probe.py [--parts engine concurrency] [--models small large] [--batch 8]
        [--clients 32] [--requests 96] [--think-ms 100] [--ab-rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import default_app_args

from routers.engines import Generator, GeneratorConfig, SamplingParams, build_generator
from routers.engines.hf import TransformersGenerator
from serve_app.deployments.answer_model import (
    AnswerModelDeployment,
    EngineBatcher,
    result_to_dict,
    sampling_key,
)

PROMPTS = [
    "What is the capital of Italy?", "What is 9 times 7?", "Name a noble gas.", "Who painted the Mona Lisa?",
    "What is the freezing point of water in Fahrenheit?", "How many legs does a spider have?",
    "What is the chemical symbol for gold?", "Which ocean is the largest?",
]


def timed(fn, rounds: int) -> float:
    """Best of ``rounds`` (the least disturbed by other load), in seconds."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def probe(key: str, engine: dict, batch: int, rounds: int, max_tokens: int) -> dict:
    gen = build_generator(GeneratorConfig.model_validate(engine))
    assert isinstance(gen, TransformersGenerator)
    questions = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    prompts = [gen.chat_prompt([{"role": "user", "content": q}]) for q in questions]
    params = gen.with_default_stop(SamplingParams(max_tokens=max_tokens))
    gen.generate(prompts[:1], params)  # warm-up
    one = timed(lambda: [gen.generate([p], params) for p in prompts], rounds)
    many = timed(lambda: gen.generate(prompts, params), rounds)
    report = {
        "model": key, "prompt_format": gen.prompt_format, "stop": params.stop, "batch": batch,
        "one_at_a_time_req_per_s": batch / one, "batched_req_per_s": batch / many,
        "batch_speedup": one / many,
    }
    # Threads: the deployment calls generate in asyncio.to_thread's worker threads.
    report["torch_threads_main"] = torch.get_num_threads()
    report["torch_threads_worker"] = asyncio.run(asyncio.to_thread(torch.get_num_threads))
    report["worker_thread_batched_req_per_s"] = batch / timed(
        lambda: asyncio.run(asyncio.to_thread(gen.generate, prompts, params)), rounds)
    # Fixed cost per call outside the model: the stop-string criteria set-up transformers does per generate.
    if params.stop:
        from transformers.generation.stopping_criteria import StopStringCriteria

        setup = timed(lambda: StopStringCriteria(gen.tokenizer, params.stop), rounds)
        report["stop_criteria_setup_ms"] = 1000 * setup
    return report


class CountingGenerator:
    """Counts the prompts of each engine call of the wrapped generator."""

    def __init__(self, inner: Generator) -> None:
        self.inner, self.sizes = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, prompts: list[str], params: SamplingParams) -> Any:
        self.sizes.append(len(prompts))
        return self.inner.generate(prompts, params)

    async def agenerate(self, prompts: list[str], params: SamplingParams) -> Any:
        return await asyncio.to_thread(self.generate, prompts, params)


def serve_batch_variant(generator: CountingGenerator, max_batch_size: int, timeout_s: float) -> Any:
    """The deployment's batching as it was: ``@serve.batch`` over groups of equal sampling settings."""
    from ray import serve
    from ray.serve import batching

    # Outside a replica there is no max_ongoing_requests to warn about.
    batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = lambda self: None

    class Old:
        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=timeout_s)
        async def run(self, requests: list[tuple[str, SamplingParams]]) -> list[dict[str, Any]]:
            groups: dict[str, list[int]] = {}
            for index, (_, params) in enumerate(requests):
                groups.setdefault(sampling_key(params), []).append(index)
            outputs: list[Any] = [None] * len(requests)
            for indices in groups.values():
                prompts = [requests[i][0] for i in indices]
                results = await generator.agenerate(prompts, requests[indices[0]][1])
                for index, result in zip(indices, results, strict=True):
                    outputs[index] = result_to_dict(result, "probe")
            return outputs

    old = Old()
    return lambda prompt, params: old.run((prompt, params))


def batcher_variant(generator: CountingGenerator, max_batch_size: int, timeout_s: float) -> Any:
    """The deployment's batching now: the real class's ``EngineBatcher`` and ``_run_batch``."""
    cls = AnswerModelDeployment.func_or_class
    app = cls.__new__(cls)
    app.name, app.served_name, app.generator = "probe", "probe", generator
    app.batcher = EngineBatcher(app._run_batch, max_batch_size, timeout_s)
    return app.batcher.submit


async def drive(submit: Any, prompts: list[str], params: SamplingParams, clients: int, total: int,
                think_s: float, seed: int) -> tuple[float, list[float]]:
    rng = random.Random(seed)
    queue = list(range(total))
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            i = queue.pop()
            await asyncio.sleep(rng.uniform(0, think_s))
            started = time.perf_counter()
            await submit(prompts[i % len(prompts)], params)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    return time.perf_counter() - started, latencies


def concurrency(key: str, engine: dict, args: argparse.Namespace, batching: dict) -> list[dict]:
    inner = build_generator(GeneratorConfig.model_validate(engine))
    generator = CountingGenerator(inner)
    prompts = [inner.chat_prompt([{"role": "user", "content": q}]) for q in PROMPTS]
    params = inner.with_default_stop(SamplingParams(max_tokens=args.max_tokens))
    inner.generate(prompts[:1], params)  # warm-up
    size, timeout = batching.get("max_batch_size", 8), batching.get("batch_wait_timeout_s", 0.01)
    variants = {"serve.batch": serve_batch_variant, "EngineBatcher": batcher_variant}
    reports = []
    for round_ in range(args.ab_rounds):
        for name, make in variants.items():
            generator.sizes = []

            async def one(make: Any = make, seed: int = round_) -> tuple[float, list[float]]:
                return await drive(make(generator, size, timeout), prompts, params, args.clients,
                                   args.requests, args.think_ms / 1000, seed=seed)

            elapsed, latencies = asyncio.run(one())
            reports.append({
                "model": key, "variant": name, "round": round_, "clients": args.clients,
                "requests": len(latencies), "req_per_s": round(len(latencies) / elapsed, 2),
                "p50_s": round(float(np.percentile(latencies, 50)), 2),
                "p99_s": round(float(np.percentile(latencies, 99)), 2), "engine_calls": len(generator.sizes),
                "mean_batch_size": round(float(np.mean(generator.sizes)), 2),
            })
            print(json.dumps(reports[-1]), flush=True)
    return reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["engine", "concurrency"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    parser.add_argument("--models", nargs="+", default=["small", "large"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--think-ms", type=float, default=100)
    parser.add_argument("--ab-rounds", type=int, default=2)
    args = parser.parse_args()
    models = default_app_args()["models"]
    for key in args.models:
        engine = dict(models[key]["engine"])
        engine["model"] = str(ROOT / engine["model"])
        if "engine" in args.parts:
            print(json.dumps(probe(key, engine, args.batch, args.rounds, args.max_tokens)), flush=True)
        if "concurrency" in args.parts:
            concurrency(key, engine, args, models[key].get("batching", {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
