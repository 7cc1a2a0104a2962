"""Bounded load test of the CPU default app over loopback: C concurrent clients, a fixed number of requests
and a time cap. Reports throughput, p50/p99 latency, status counts, and checks nothing is lost (every
request sent gets exactly one response or one recorded client error).

    python bench/load_bench.py [--clients 64] [--requests 256] [--max-seconds 240] [--model router-hybrid]

Writes bench/out/load_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import default_app_args, free_port, missing_prerequisites, start_serve, stop_serve  # noqa: E402

PROMPTS = [
    "What is the capital of Italy?", "What is 9 times 7?", "Name a noble gas.", "Who painted the Mona Lisa?",
    "What is the freezing point of water in Fahrenheit?", "How many legs does a spider have?",
    "What is the chemical symbol for gold?", "Which ocean is the largest?",
]


async def run_load(url: str, model: str, clients: int, total: int, max_seconds: float, max_tokens: int) -> dict[str, Any]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    latencies: list[float] = []
    statuses: Counter = Counter()
    routed: Counter = Counter()
    answered: set[int] = set()
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=max_seconds + 60, limits=limits) as client:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = {"model": model, "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/chat/completions", json=body)
                    statuses[str(response.status_code)] += 1
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                        routed[response.json()["model"]] += 1
                except httpx.HTTPError as exc:
                    statuses[f"client-error:{type(exc).__name__}"] += 1
                answered.add(i)

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        elapsed = time.perf_counter() - started
    sent = len(answered)
    return {
        "model": model, "clients": clients, "requests_planned": total, "requests_sent": sent,
        "elapsed_s": elapsed, "throughput_req_per_s": len(latencies) / elapsed,
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_s": float(np.percentile(latencies, 99)) if latencies else None,
        "statuses": dict(statuses), "answered_by": dict(routed),
        "lost": sent - sum(statuses.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-seconds", type=float, default=240)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--model", default="router-hybrid")
    parser.add_argument("--out", default=str(ROOT / "bench/out/load_bench.json"))
    args = parser.parse_args()
    missing = missing_prerequisites()
    if missing:
        print(f"run `bash scripts/setup.sh` first; missing: {missing}", file=sys.stderr)
        return 2
    app_args = default_app_args()
    # Queue deep enough for every client, so the figure is throughput, not shed load.
    app_args["ingress"] = {"deployment": {"max_ongoing_requests": 128, "max_queued_requests": 512,
                                          "ray_actor_options": {"num_cpus": 0.25}}}
    url = start_serve(app_args, free_port())
    try:
        report = asyncio.run(run_load(url, args.model, args.clients, args.requests, args.max_seconds, args.max_tokens))
    finally:
        stop_serve()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
