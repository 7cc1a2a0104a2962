"""Bounded load test of the CPU default app over loopback: C concurrent clients, a fixed number of requests
and a time cap. Reports throughput, p50/p99 latency, status counts, and checks nothing is lost: every planned
request is exactly one of a response (a 200 that is not JSON counts as an error response), a recorded
client error (connection, timeout), ``not_sent`` (still queued at the deadline) or ``lost`` (sent, then
still hanging when the run was cut off; a non-zero ``lost`` fails the run).

    python bench/load_bench.py [--clients 64] [--requests 256] [--max-seconds 240] [--model router-hybrid]

Also reports, per transformers answer model, how many requests each engine call carried (``answer_batching``).
Writes bench/out/load_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import default_app_args, free_port, missing_prerequisites, start_serve, stop_serve

PROMPTS = [
    "What is the capital of Italy?", "What is 9 times 7?", "Name a noble gas.", "Who painted the Mona Lisa?",
    "What is the freezing point of water in Fahrenheit?", "How many legs does a spider have?",
    "What is the chemical symbol for gold?", "Which ocean is the largest?",
]


@dataclass
class Tally:
    """What happened to each planned request: exactly one of response, client error, not sent, or lost."""

    planned: int
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)  # HTTP responses, by status ("200-not-json" is an error)
    client_errors: Counter = field(default_factory=Counter)  # no HTTP response: connection / timeout errors
    routed: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    @property
    def not_sent(self) -> int:
        return self.planned - self.sent

    @property
    def lost(self) -> int:
        """Sent, but neither answered nor failed visibly (still hanging when the run was cut off)."""
        return self.sent - self.responses - sum(self.client_errors.values())


async def send_one(client: httpx.AsyncClient, body: dict[str, Any], tally: Tally) -> None:
    started = time.perf_counter()
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        tally.client_errors[type(exc).__name__] += 1
        return
    if response.status_code != 200:
        tally.statuses[str(response.status_code)] += 1
        return
    try:
        served = response.json()["model"]
    except (ValueError, KeyError, TypeError):  # a 200 that is not the promised JSON is an error, not a crash
        tally.statuses["200-not-json"] += 1
        return
    tally.statuses["200"] += 1
    tally.latencies.append(time.perf_counter() - started)
    tally.routed[served] += 1


async def run_load(url: str, model: str, clients: int, total: int, max_seconds: float,
                   max_tokens: int) -> dict[str, Any]:
    """``clients`` workers send ``total`` requests; none starts after ``max_seconds``, and requests still
    running 60 s later are cut off (and count as lost)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    tally = Tally(planned=total)
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
                tally.sent += 1
                await send_one(client, body, tally)

        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*[worker() for _ in range(clients)]), timeout=max_seconds + 90)
        except TimeoutError:
            pass  # the requests still in flight are counted as lost below
        elapsed = time.perf_counter() - started
    latencies = tally.latencies
    return {
        "model": model, "clients": clients, "requests_planned": total, "requests_sent": tally.sent,
        "not_sent": tally.not_sent, "responses": tally.responses, "ok": tally.statuses["200"],
        "error_responses": tally.responses - tally.statuses["200"], "client_errors": dict(tally.client_errors),
        "lost": tally.lost, "elapsed_s": elapsed, "throughput_req_per_s": len(latencies) / elapsed,
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_s": float(np.percentile(latencies, 99)) if latencies else None,
        "statuses": dict(tally.statuses), "answered_by": dict(tally.routed),
    }


def answer_batch_stats(app_args: dict[str, Any]) -> dict[str, Any]:
    """Per transformers answer model: requests per engine call (mean, histogram) and seconds per call."""
    from ray import serve

    stats: dict[str, Any] = {}
    for key, spec in app_args["models"].items():
        if spec.get("engine", {}).get("backend", "transformers") == "transformers":
            handle = serve.get_deployment_handle(f"AnswerModel-{key}", "llmrouter")
            stats[key] = handle.batch_stats.remote().result()
    return stats


def summary(report: dict[str, Any]) -> str:
    errors = sum(report["client_errors"].values())
    batching = "; ".join(f"{key}: {s['calls']} engine calls, mean batch {s['mean_batch_size']:.2f}"
                         for key, s in report.get("answer_batching", {}).items() if s["calls"])
    return (f"planned {report['requests_planned']} = {report['responses']} responses "
            f"({report['ok']} ok, {report['error_responses']} errors) + {errors} client errors "
            f"+ {report['not_sent']} not sent (deadline) + {report['lost']} lost\n"
            f"{report['throughput_req_per_s']:.2f} req/s, p50 {report['p50_s'] or 0:.2f} s, "
            f"p99 {report['p99_s'] or 0:.2f} s; {batching or 'no engine calls recorded'}")


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
        report["answer_batching"] = answer_batch_stats(app_args)
    finally:
        stop_serve()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(summary(report))
    return 0 if report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
