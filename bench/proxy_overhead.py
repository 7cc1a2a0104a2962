"""What the router adds in front of a model it does not host: the same chat requests sent straight to vLLM's
OpenAI server and through the router (``router-largest``: no decision to make; ``router``: the default router,
which embeds and scores every query first), at 1 and at 32 concurrent clients, arms interleaved in one run.

Both answer models of the app are endpoint models on that one server, so every arm ends at the same vLLM
engine with the same greedy request; the difference is the router's own path (Serve's HTTP proxy, the ingress,
the routing decision, the HTTP hop to the upstream). "Added beyond the decision" subtracts the routing object's
``router_latency_ms``.

A third table compares the two async HTTP clients the remote answer client could use, httpx and the ``openai``
SDK, straight to the server at 32 clients (the client that measures better is the one ``RemoteAnswerClient`` uses).

    python bench/proxy_overhead.py [--requests 96] [--solo 36] [--max-tokens 16] [--rounds 2]
    python bench/proxy_overhead.py --upstream http://host:8000/v1 --model NAME --key-env ENV   # your server

Without ``--upstream`` it starts vLLM's server on the project's SmolLM2 (``tests/upstreams.py``). Writes
bench/out/proxy_overhead.json. Numbers vary with the machine; ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import default_app_args, free_port, start_serve, stop_serve

from bench.serve_bench import QUERIES
from tests.upstreams import SERVED_NAME, VLLMServer

BENCH_KEY_ENV = "LLMROUTER_BENCH_UPSTREAM_KEY"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def app_args(upstream: str, model: str, key_env: str | None) -> dict[str, Any]:
    """The shipped remote example, with both answer models at the upstream (only the router differs per arm)."""
    args = default_app_args("configs/serve_remote.yaml")
    endpoint = {"base_url": upstream, "model": model, "api_key_env": key_env, "timeout_s": 300, "max_in_flight": 128}
    for key, price in (("small", 0.6), ("large", 10.0)):
        args["models"][key] = {"served_name": f"{key}-remote", "endpoint": endpoint, "input_price": price,
                               "output_price": price}
    args["ingress"] = {"deployment": {"max_ongoing_requests": 256, "max_queued_requests": 1024,
                                      "ray_actor_options": {"num_cpus": 0.25}}}
    return args


class Arm:
    def __init__(self, name: str, url: str, model: str, headers: dict[str, str]) -> None:
        self.name = name
        self.url = url
        self.model = model
        self.headers = headers

    async def one(self, client: httpx.AsyncClient, query: str, max_tokens: int) -> tuple[float, float]:
        """Seconds for one request, and the router's decision time it reported (0 straight to the server)."""
        body = {"model": self.model, "messages": [{"role": "user", "content": query}], "max_tokens": max_tokens,
                "temperature": 0}
        started = time.perf_counter()
        response = await client.post(self.url, json=body, headers=self.headers)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        routing = response.json().get("routing") or {}
        return elapsed, float(routing.get("router_latency_ms") or 0.0) / 1000


async def load(arm: Arm, requests: int, clients: int, max_tokens: int) -> dict[str, Any]:
    """``requests`` requests from ``clients`` concurrent clients: latencies, decision times, throughput."""
    latencies: list[float] = []
    decisions: list[float] = []
    queue = list(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker() -> None:
            while queue:
                index = queue.pop()
                elapsed, decision = await arm.one(client, QUERIES[index % len(QUERIES)], max_tokens)
                latencies.append(elapsed)
                decisions.append(decision)

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        wall = time.perf_counter() - started
    return {"requests": requests, "clients": clients, "throughput_rps": requests / wall,
            "p50_ms": 1000 * pct(latencies, 50), "p99_ms": 1000 * pct(latencies, 99),
            "decision_p50_ms": 1000 * pct(decisions, 50)}


async def client_compare(upstream: str, model: str, key: str, requests: int, clients: int,
                         max_tokens: int) -> dict[str, Any]:
    """httpx vs the openai SDK (both async, pooled), straight to the server."""
    from openai import AsyncOpenAI

    body = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    results: dict[str, Any] = {}
    for name in ("httpx", "openai", "httpx", "openai"):  # twice each, interleaved
        latencies: list[float] = []
        queue = list(range(requests))
        http = httpx.AsyncClient(base_url=upstream, headers={"Authorization": f"Bearer {key}"}, timeout=600,
                                 limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients))
        sdk = AsyncOpenAI(base_url=upstream, api_key=key, timeout=600, max_retries=0)

        async def worker(name: str = name, queue: list[int] = queue, latencies: list[float] = latencies,
                         http: httpx.AsyncClient = http, sdk: AsyncOpenAI = sdk) -> None:
            while queue:
                messages = [{"role": "user", "content": QUERIES[queue.pop() % len(QUERIES)]}]
                started = time.perf_counter()
                if name == "httpx":
                    response = await http.post("/chat/completions", json={**body, "messages": messages})
                    response.raise_for_status()
                    response.json()
                else:
                    await sdk.chat.completions.create(messages=messages, **body)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        wall = time.perf_counter() - started
        await http.aclose()
        await sdk.close()
        results.setdefault(name, []).append({"throughput_rps": requests / wall, "p50_ms": 1000 * pct(latencies, 50)})
    return {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """The median over rounds of each arm's figures."""
    arms = rounds[0].keys()
    return {arm: {k: statistics.median(r[arm][k] for r in rounds) for k in rounds[0][arm] if k != "clients"}
            for arm in arms}


def print_table(title: str, figures: dict[str, dict[str, float]], direct: str) -> None:
    print(f"\n{title}")
    print(f"{'arm':<22}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'decide p50':>12}{'added p50':>11}{'beyond decide':>15}"
          f"{'vs direct':>11}")
    base = figures[direct]
    for arm, f in figures.items():
        added = f["p50_ms"] - base["p50_ms"]
        ratio = f["throughput_rps"] / base["throughput_rps"]
        print(f"{arm:<22}{f['throughput_rps']:>8.2f}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}{f['decision_p50_ms']:>12.1f}"
              f"{added:>11.1f}{added - f['decision_p50_ms']:>15.1f}{ratio:>11.3f}")


async def paired_solo(arms: list[Arm], requests: int, max_tokens: int) -> dict[str, dict[str, float]]:
    """One client: each query sent to every arm in turn (the order rotating), so each request through the router
    has a twin straight to the server, run moments apart with the same prompt; the added latency is the median
    (and the 90th percentile) of those paired differences, which the machine's drift and the queries' spread
    leave out."""
    times: dict[str, list[float]] = {arm.name: [] for arm in arms}
    decisions: dict[str, list[float]] = {arm.name: [] for arm in arms}
    async with httpx.AsyncClient(timeout=600) as client:
        for index in range(requests):
            query = QUERIES[index % len(QUERIES)]
            shift = index % len(arms)
            for arm in arms[shift:] + arms[:shift]:
                elapsed, decision = await arm.one(client, query, max_tokens)
                times[arm.name].append(elapsed)
                decisions[arm.name].append(decision)
    direct = np.asarray(times[arms[0].name])
    out = {}
    for arm in arms:
        added = 1000 * (np.asarray(times[arm.name]) - direct)
        beyond = added - 1000 * np.asarray(decisions[arm.name])
        out[arm.name] = {"p50_ms": 1000 * pct(times[arm.name], 50), "p99_ms": 1000 * pct(times[arm.name], 99),
                         "decision_p50_ms": 1000 * pct(decisions[arm.name], 50),
                         "added_p50_ms": float(np.median(added)), "added_p90_ms": pct(list(added), 90),
                         "beyond_decision_p50_ms": float(np.median(beyond))}
    return out


def print_solo(figures: dict[str, dict[str, float]], requests: int) -> None:
    print(f"\n1 client, {requests} queries, each sent to every arm in turn (paired differences against direct)")
    print(f"{'arm':<22}{'p50 ms':>9}{'p99 ms':>9}{'decide p50':>12}{'added p50':>11}{'added p90':>11}"
          f"{'beyond decide p50':>19}")
    for arm, f in figures.items():
        print(f"{arm:<22}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}{f['decision_p50_ms']:>12.1f}{f['added_p50_ms']:>11.1f}"
              f"{f['added_p90_ms']:>11.1f}{f['beyond_decision_p50_ms']:>19.1f}")


async def measure(arms: list[Arm], args: argparse.Namespace) -> dict[str, Any]:
    for arm in arms:  # warm every path (connections, the embedder, vLLM's prefix cache for these prompts)
        await load(arm, len(QUERIES), 4, args.max_tokens)
    out: dict[str, Any] = {"1_client": await paired_solo(arms, args.solo, args.max_tokens)}
    print_solo(out["1_client"], args.solo)
    rounds = []
    for round_index in range(args.rounds):
        order = arms if round_index % 2 == 0 else arms[::-1]  # ABC then CBA: drift hits every arm alike
        rounds.append({arm.name: await load(arm, args.requests, 32, args.max_tokens) for arm in order})
    out["32_clients"] = summarise(rounds)
    print_table(f"32 clients, {args.requests} requests x {args.rounds} rounds (medians over rounds)",
                out["32_clients"], arms[0].name)
    return out


def serve_floor(serve_url: str, requests: int = 200) -> dict[str, float]:
    """What any Ray Serve FastAPI app pays per request on this machine: a one-line JSON echo served by a bare
    Serve deployment vs the same echo served by uvicorn in this process, paired, one client. The router's
    added latency is this floor plus its own work."""
    import threading

    import uvicorn
    from fastapi import FastAPI
    from ray import serve

    echo = FastAPI()

    @echo.post("/echo")
    async def reply(body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    @serve.deployment(name="FloorEcho")
    @serve.ingress(echo)
    class FloorEcho:
        pass

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(echo, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    serve.run(FloorEcho.bind(), name="floor", route_prefix="/floor")
    arms = (("uvicorn", f"http://127.0.0.1:{port}/echo"), ("serve", f"{serve_url}/floor/echo"))
    times: dict[str, list[float]] = {"uvicorn": [], "serve": []}
    with httpx.Client(timeout=30) as client:
        while not server.started:
            time.sleep(0.05)
        for index in range(requests + 20):
            for name, url in arms if index % 2 else arms[::-1]:
                started = time.perf_counter()
                client.post(url, json={"q": index}).raise_for_status()
                if index >= 20:  # warm-up left out
                    times[name].append(time.perf_counter() - started)
    server.should_exit = True
    serve.delete("floor")
    added = 1000 * (np.asarray(times["serve"]) - np.asarray(times["uvicorn"]))
    return {"uvicorn_p50_ms": 1000 * pct(times["uvicorn"], 50), "serve_p50_ms": 1000 * pct(times["serve"], 50),
            "serve_added_p50_ms": float(np.median(added))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="requests per arm at 32 clients")
    parser.add_argument("--solo", type=int, default=36, help="queries sent to every arm at 1 client")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--upstream", help="an OpenAI-compatible API root (default: start vLLM on SmolLM2 here)")
    parser.add_argument("--model", default=SERVED_NAME, help="the upstream's model id")
    parser.add_argument("--key-env", help="env var holding the upstream's key")
    args = parser.parse_args()

    server = None
    if args.upstream is None:
        key = "sk-bench-" + os.urandom(8).hex()
        log = Path(tempfile.mkdtemp()) / "vllm.log"
        print(f"starting vLLM's OpenAI server on {SERVED_NAME} (log: {log})", flush=True)
        server = VLLMServer(free_port(), key, log).start()
        upstream, key_env = server.base_url, BENCH_KEY_ENV
        os.environ[BENCH_KEY_ENV] = key
    else:
        upstream, key_env = args.upstream.rstrip("/"), args.key_env
        key = os.environ.get(key_env or "", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        url = start_serve(app_args(upstream, args.model, key_env), free_port(), num_cpus=2)
        try:
            arms = [Arm("direct (vLLM)", f"{upstream}/chat/completions", args.model, headers),
                    Arm("router-largest", f"{url}/v1/chat/completions", "router-largest", {}),
                    Arm("router (default)", f"{url}/v1/chat/completions", "router", {})]
            results = asyncio.run(measure(arms, args))
            clients = asyncio.run(client_compare(upstream, args.model, key, args.requests, 32, args.max_tokens))
            print("\nasync HTTP clients straight to the server, 32 clients (medians of 2 interleaved runs)")
            for name, f in clients.items():
                print(f"  {name:<8} {f['throughput_rps']:7.2f} req/s   p50 {f['p50_ms']:7.1f} ms", flush=True)
            results["http_clients"] = clients
            floor = serve_floor(url)
            print(f"\nRay Serve's own hop on this machine (bare FastAPI echo, paired, 1 client): uvicorn "
                  f"{floor['uvicorn_p50_ms']:.1f} ms, Serve {floor['serve_p50_ms']:.1f} ms p50, added "
                  f"{floor['serve_added_p50_ms']:.1f} ms", flush=True)
            results["serve_floor"] = floor
        finally:
            stop_serve()
    finally:
        if server is not None:
            server.stop()
    out = ROOT / "bench/out/proxy_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), **results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
