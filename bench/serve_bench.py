"""Serving benchmark on the CPU default app, every comparison measured side by side in one run.

1. Router overhead per pipeline: latency of ``router-<kind>`` against calling the model it chose directly
   (same query, same max_tokens, greedy), p50/p95 over the queries.
2. Embedder throughput under 32 concurrent clients: the Embedder deployment's shared engine calls
   (``BatchingEmbedder``) vs one call per text. The app runs with ``embedder.placement: deployment`` here so
   the deployment exists (``serve_config.yaml`` embeds in the ingress; ``bench/route_throughput.py``
   compares the two placements).
3. AutoMix verification: N samples in one ``generate`` call vs N sequential calls.

    python bench/serve_bench.py [--queries 12] [--max-tokens 8] [--samples 8]

Writes bench/out/serve_bench.json. Numbers vary with the machine; ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
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

from serve_helpers import default_app_args, free_port, missing_prerequisites, start_serve, stop_serve

QUERIES = [
    "What is the capital of France?",
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did she sell altogether?"),
    "Which gas do plants absorb from the air for photosynthesis?",
    "Translate 'good morning' into Spanish.",
    "What is 17 times 3?",
    "Name the largest planet in the solar system.",
    "If a train travels 60 miles in 1.5 hours, what is its average speed?",
    "Who wrote 'Pride and Prejudice'?",
    "What is the boiling point of water at sea level in Celsius?",
    "A rectangle has sides 4 and 9. What is its area?",
    "Which organ pumps blood through the human body?",
    "What is the square root of 144?",
]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def timed_chat(client: httpx.Client, model: str, query: str, max_tokens: int) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": query}], "max_tokens": max_tokens, "temperature": 0})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def router_overhead(client: httpx.Client, kinds: list[str], queries: list[str], max_tokens: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in kinds:
        routed, direct, added, decided = [], [], [], []
        mismatched = 0
        for i, query in enumerate(queries):
            # An untimed routed call learns the chosen model; then the two timed calls alternate their order,
            # so neither side always runs second (warmer caches, or after a noisy neighbour's burst).
            _, first = timed_chat(client, f"router-{kind}", query, max_tokens)
            if i % 2 == 0:
                t_routed, body = timed_chat(client, f"router-{kind}", query, max_tokens)
                t_direct, _ = timed_chat(client, first["model"], query, max_tokens)
            else:
                t_direct, _ = timed_chat(client, first["model"], query, max_tokens)
                t_routed, body = timed_chat(client, f"router-{kind}", query, max_tokens)
            decided.append(body["routing"]["router_latency_ms"] / 1000)
            if body["model"] != first["model"]:
                mismatched += 1  # a random draw chose the other model: the pair compares two models
                continue
            routed.append(t_routed)
            direct.append(t_direct)
            added.append(t_routed - t_direct)
        results[kind] = {
            "routed_p50_s": pct(routed, 50), "routed_p95_s": pct(routed, 95),
            "direct_p50_s": pct(direct, 50), "direct_p95_s": pct(direct, 95),
            "added_p50_s": pct(added, 50), "added_p95_s": pct(added, 95),
            "decision_p50_s": pct(decided, 50), "decision_p95_s": pct(decided, 95),
            "n": len(queries), "pairs": len(added), "pairs_with_another_model": mismatched,
        }
    return results


async def embedder_throughput(app_name: str, clients: int, requests_per_client: int) -> dict[str, Any]:
    from ray import serve

    handle = serve.get_deployment_handle("Embedder", app_name)
    texts = [f"{q} (variant {i})" for i, q in enumerate(QUERIES * 8)]

    async def run(method: str) -> float:
        async def one_client(offset: int) -> None:
            for k in range(requests_per_client):
                text = texts[(offset * requests_per_client + k) % len(texts)]
                await getattr(handle, method).remote(text)

        await asyncio.gather(*[one_client(i) for i in range(4)])  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*[one_client(i) for i in range(clients)])
        return clients * requests_per_client / (time.perf_counter() - started)

    unbatched = await run("embed_unbatched")
    batched = await run("embed_one")
    return {"clients": clients, "requests": clients * requests_per_client,
            "batched_req_per_s": batched, "unbatched_req_per_s": unbatched, "speedup": batched / unbatched}


async def verification_sampling(app_name: str, samples: int, rounds: int) -> dict[str, Any]:
    from ray import serve

    from routers.automix.router import AutomixRouter

    router = AutomixRouter.load(ROOT / "artifacts/automix")
    small = serve.get_deployment_handle("AnswerModel-small", app_name)
    query = QUERIES[1]
    answer = "She sold 48 + 24 = 72 clips."
    prompt, params = router.verification_request(query, answer)
    params = params.model_copy(update={"n": samples})
    messages = [{"role": "user", "content": prompt}]
    one_call, sequential = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        await small.generate_unbatched.remote(messages, params.model_dump())
        one_call.append(time.perf_counter() - started)
        single = params.model_copy(update={"n": 1}).model_dump()
        started = time.perf_counter()
        for _ in range(samples):
            await small.generate_unbatched.remote(messages, single)
        sequential.append(time.perf_counter() - started)
    return {"samples": samples, "rounds": rounds, "one_call_s": statistics.median(one_call),
            "sequential_s": statistics.median(sequential),
            "speedup": statistics.median(sequential) / statistics.median(one_call)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--routers", default="hybrid,automix,causal,policy,random")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench/out/serve_bench.json"))
    args = parser.parse_args()
    missing = missing_prerequisites()
    if missing:
        print(f"run `bash scripts/setup.sh` first; missing: {missing}", file=sys.stderr)
        return 2
    app_args = default_app_args()
    app_args["embedder"]["placement"] = "deployment"
    url = start_serve(app_args, free_port())
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            timed_chat(client, "router-largest", "warm up", 2)
            overhead = router_overhead(client, args.routers.split(","), QUERIES[: args.queries], args.max_tokens)
        embed = asyncio.run(embedder_throughput("llmrouter", args.clients, args.requests_per_client))
        verify = asyncio.run(verification_sampling("llmrouter", args.samples, args.rounds))
    finally:
        stop_serve()
    report = {"router_overhead": overhead, "embedder": embed, "automix_verification": verify,
              "max_tokens": args.max_tokens}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nrouter overhead (s), {args.queries} queries, max_tokens={args.max_tokens}:")
    print(f"{'router':10} {'routed p50':>10} {'p95':>7} {'direct p50':>10} {'p95':>7} {'added p50':>9} {'p95':>7} "
          f"{'decide p50':>10} {'pairs':>5}")
    for kind, r in overhead.items():
        print(f"{kind:10} {r['routed_p50_s']:10.3f} {r['routed_p95_s']:7.3f}"
              f" {r['direct_p50_s']:10.3f} {r['direct_p95_s']:7.3f}"
              f" {r['added_p50_s']:9.3f} {r['added_p95_s']:7.3f} {r['decision_p50_s']:10.3f} {r['pairs']:5d}")
    print(f"\nembedder, {embed['clients']} concurrent clients: batched {embed['batched_req_per_s']:.1f} req/s vs "
          f"unbatched {embed['unbatched_req_per_s']:.1f} req/s ({embed['speedup']:.2f}x)")
    print(f"AutoMix verification, N={verify['samples']}: one call {verify['one_call_s']:.3f}s vs "
          f"{verify['samples']} sequential calls {verify['sequential_s']:.3f}s ({verify['speedup']:.2f}x)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
