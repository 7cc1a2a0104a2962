"""Per-key budgets under load: C concurrent clients on one API key with a small budget, against the real
ingress app (routes, guard, budgets) in process and the real ledger (a detached Ray actor on a local Ray),
with fake answer models that take ``--delay-ms`` and answer between max_tokens / 4 and max_tokens tokens.

Two budget runs, refusing once the budget is spent: ``reserved`` (the default reservation: the large model's
price of the request) and ``unreserved`` (``reserve_usd: 0``, what the ledger would do without reservations),
each printing the budget, the spend admitted, the overrun (spend beyond the budget) against its bound, and
requests admitted / refused (a client retries a 429 whose ``Retry-After`` is 1 s: budget held in flight).
Then the ledger's cost: p50 latency with budgets on (a budget and rate limit that never bind, so every
request takes the ledger round trip) vs without budgets, in alternating rounds.

    python bench/budget_load.py [--clients 32] [--requests 400] [--budget 0.05] [--delay-ms 50] [--rounds 4]

Writes bench/out/budget_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_handles import Handle, answering, fake_metrics, value

SECRET = "sk-bench-budget-0123456789abcdef"
PROMPTS = ["What is the capital of Italy?", "Explain the difference between TCP and UDP in two sentences.",
           "Name a noble gas.", "Write a haiku about routers.", "What is 9 times 7?"]
PRICES = {"small": (0.15, 0.60), "large": (2.50, 10.00)}  # USD per 1M prompt / completion tokens


def answer_handle(delay_s: float, rng: random.Random) -> Handle:
    def generate(messages: list[dict[str, str]], params: dict[str, Any]) -> Any:
        chars = sum(len(m["content"]) for m in messages)
        tokens = rng.randint(max(1, params["max_tokens"] // 4), params["max_tokens"])
        result = {"prompt_tokens": chars // 4 + 8,
                  "completions": [{"text": "x", "finish_reason": "length", "completion_tokens": tokens}]}
        return value(result, delay_s)

    return Handle(generate=generate)


def app_args(budgets: dict[str, Any] | None, ledger: str = "bench-ledger") -> dict[str, Any]:
    models = {key: {"engine": {"model": f"org/{key}"}, "input_price": i, "output_price": o}
              for key, (i, o) in PRICES.items()}
    args: dict[str, Any] = {"models": models, "routers": {"hybrid": None, "automix": None}, "default_router": "random",
                            "auth": {"keys": {"bench": {"key": SECRET}}, "api_keys_env": None},
                            "limits": {"max_tokens": 1024}, "timeouts": {"answer_s": 60}}
    if budgets is not None:
        args["budgets"] = {"keys": {"bench": budgets}, "ledger_name": ledger, "ledger_timeout_s": 5.0}
    return args


def make_ingress(budgets: dict[str, Any] | None, delay_s: float, seed: int, ledger: str = "bench-ledger") -> Any:
    from serve_app import ingress as ingress_module

    rng = random.Random(seed)
    cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
    ingress = cls(app_args(budgets, ledger), {key: answer_handle(delay_s, rng) for key in PRICES})
    ingress.metrics = fake_metrics()
    if ingress.budgets is not None:
        ingress.budgets.metrics = ingress.metrics
    return ingress


async def run_clients(clients: int, total: int, max_tokens: int, retries: int = 0) -> dict[str, Any]:
    from serve_app import ingress as ingress_module

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    statuses: Counter = Counter()
    latencies: list[float] = []
    costs: list[float] = []
    transport = httpx.ASGITransport(app=ingress_module.app)
    headers = {"Authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers, timeout=120) as client:
        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = {"model": "router-random:0.5", "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                for _ in range(retries):  # "Retry-After: 1": the budget is held by requests in flight
                    if response.status_code != 429 or response.headers.get("Retry-After") != "1":
                        break
                    await asyncio.sleep(1.0)
                    started = time.perf_counter()
                    response = await client.post("/v1/chat/completions", json=body)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                    costs.append(response.json()["routing"]["cost"])

        await asyncio.gather(*[worker() for _ in range(clients)])
    return {"statuses": dict(statuses), "latencies": latencies, "costs": costs}


def budget_run(name: str, args: argparse.Namespace, reserve: float | None) -> dict[str, Any]:
    policy: dict[str, Any] = {"usd_per_window": args.budget, "window_s": 86400.0, "when_exhausted": "refuse"}
    if reserve is not None:
        policy["reserve_usd"] = reserve
    ingress = make_ingress(policy, args.delay_ms / 1000, seed=1, ledger=f"bench-ledger-{name}")  # a fresh ledger
    with answering(ingress):
        out = asyncio.run(run_clients(args.clients, args.requests, args.max_tokens, args.retries))
    spent = sum(out["costs"])
    spec = ingress.config.models["large"]
    prompt_tokens = max(len(p) for p in PROMPTS) // 4 + 8
    max_cost = spec.call_cost(prompt_tokens, args.max_tokens)
    reservation = reserve if reserve is not None else spec.call_cost(
        max(len(p) for p in PROMPTS) // 2 + 16, args.max_tokens)
    # overrun <= sum over requests in flight of max(0, cost - reservation); at most `clients` are in flight
    bound = args.clients * max(0.0, max_cost - reservation)
    snapshot = ingress.budgets.ledger.snapshot.remote("bench")
    import ray

    ledger = ray.get(snapshot)
    ray.kill(ingress.budgets.ledger)
    return {"run": name, "budget_usd": args.budget, "reservation_usd": reservation, "max_request_cost_usd": max_cost,
            "spend_admitted_usd": spent, "ledger_spent_usd": ledger["spent_usd"],
            "overrun_usd": max(0.0, spent - args.budget), "overrun_bound_usd": bound,
            "admitted": out["statuses"].get(200, 0), "refused": out["statuses"].get(429, 0),
            "statuses": out["statuses"],
            "refusals_metric": ingress.metrics.key_refusals.total(key="bench", reason="budget")}


def overhead_runs(args: argparse.Namespace) -> dict[str, Any]:
    """Budgets that never bind (every request takes the ledger round trip) vs none, in alternating rounds."""
    never = {"usd_per_window": 1e9, "requests_per_minute": 1e9}
    latencies: dict[str, list[float]] = {"no budgets": [], "budgets": []}
    admits: list[float] = []
    for round_ in range(args.rounds):
        for name, policy in (("no budgets", None), ("budgets", never)):
            ingress = make_ingress(policy, args.delay_ms / 1000, seed=round_)
            if ingress.budgets is not None:
                timed = ingress.budgets.admit

                async def admit(*a: Any, _timed: Any = timed) -> Any:
                    started = time.perf_counter()
                    try:
                        return await _timed(*a)
                    finally:
                        admits.append(time.perf_counter() - started)

                ingress.budgets.admit = admit
            with answering(ingress):
                out = asyncio.run(run_clients(args.overhead_clients or args.clients, args.overhead_requests,
                                              args.max_tokens))
            assert out["statuses"] == {200: args.overhead_requests}, out["statuses"]
            latencies[name] += out["latencies"]
    p50 = {name: float(np.percentile(v, 50)) for name, v in latencies.items()}
    return {"rounds": args.rounds, "requests_each": args.overhead_requests, "p50_no_budgets_s": p50["no budgets"],
            "p50_budgets_s": p50["budgets"], "p50_overhead_ms": 1000 * (p50["budgets"] - p50["no budgets"]),
            "ledger_admit_p50_ms": 1000 * float(np.percentile(admits, 50)),
            "ledger_admit_p99_ms": 1000 * float(np.percentile(admits, 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--budget", type=float, default=0.05, help="USD for the key's window")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--delay-ms", type=float, default=50.0, help="each fake answer's generation time")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of the overhead comparison")
    parser.add_argument("--overhead-requests", type=int, default=200)
    parser.add_argument("--overhead-clients", type=int, default=None, help="default: --clients")
    parser.add_argument("--retries", type=int, default=10,
                        help="times a client retries a 429 with Retry-After: 1 (budget held by requests in flight)")
    parser.add_argument("--out", default=str(ROOT / "bench/out/budget_load.json"))
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, namespace="budget-bench")
    try:
        runs = [budget_run("reserved", args, None), budget_run("unreserved", args, 0.0)]
        overhead = overhead_runs(args)
    finally:
        ray.shutdown()
    report = {"clients": args.clients, "requests": args.requests, "max_tokens": args.max_tokens,
              "delay_ms": args.delay_ms, "runs": runs, "overhead": overhead}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{args.clients} clients, {args.requests} requests on one key, max_tokens {args.max_tokens}, "
          f"answers take {args.delay_ms:g} ms, router-random:0.5")
    print(f"{'run':<11} {'budget $':>9} {'reserve $':>10} {'admitted $':>11} {'overrun $':>10} {'bound $':>9} "
          f"{'admitted':>9} {'refused':>8}")
    for r in runs:
        print(f"{r['run']:<11} {r['budget_usd']:>9.4f} {r['reservation_usd']:>10.5f} {r['spend_admitted_usd']:>11.5f} "
              f"{r['overrun_usd']:>10.5f} {r['overrun_bound_usd']:>9.5f} {r['admitted']:>9} {r['refused']:>8}")
    o = overhead
    print(f"ledger overhead ({args.overhead_clients or args.clients} clients, {o['rounds']} alternating rounds x "
          f"{o['requests_each']} requests, never binding): "
          f"p50 {1000 * o['p50_no_budgets_s']:.1f} ms without budgets, {1000 * o['p50_budgets_s']:.1f} ms with "
          f"(+{o['p50_overhead_ms']:.1f} ms); the admit call itself p50 {o['ledger_admit_p50_ms']:.2f} ms, "
          f"p99 {o['ledger_admit_p99_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
