"""What deciding costs: route-only throughput of the shipped app against what this machine can embed.

One run, side by side (these machines are noisy: compare the ratios, which share the run's conditions):

1. **The limit**: all-MiniLM-L6-v2 in plain torch (``AutoModel``, ``--threads`` threads, one query at a
   time, no server) over the same queries: queries/s and the p50 of one forward (tokenising and pooling
   included).
2. **Runtimes** (``--runtimes``): the library's embedders one query at a time and in length-bucketed
   batches of 32 (transformers, ONNX Runtime, ONNX Runtime with one single-thread lane per thread, and the
   shipped one: the same lanes on int8 weights, one text per call), with each one's largest distance from
   the plain-torch vectors and how many of the default router's decisions (whole queries) it changes
   (what int8 does to routing quality: ``bench/embedder_quantisation.py``).
3. **Served**: ``serve_config.yaml`` as shipped (``--config``), started once; ``POST /v1/route`` with one
   query per request at ``--clients`` concurrent clients for the default router and ``router-hybrid``,
   with the gadget defence on (the shipped artifacts) and off (the undefended artifacts swapped in through
   the ingress's ``user_config``, no restart), plus ``router-random`` (no embedding: the HTTP and Serve
   path alone). Every request carries a query no earlier request sent, so the embedding cache never hits;
   every request must come back 200 (anything else is counted and fails the run). With
   ``--compare-placement`` the app is redeployed with the embedder in a deployment of its own
   (``embedder.placement: deployment``) and ``router-hybrid`` measured again: what the extra hop costs.
   With ``--direct-ingress`` Ray starts with its experimental ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``: the
   ingress replica also serves HTTP on a port of its own (30000 up), and the shipped rows and
   ``router-random`` are measured again there, without the proxy hop, on the same replicas.
   With ``--compare-float32`` it is redeployed with the float32 encoder (``quantize: none``) and both
   routers measured again: what the shipped int8 weights buy.
   With ``--compare-lanes`` it is redeployed with the embedder's ``lanes: 1`` (one multi-thread ONNX
   session for every call) and the default router measured again: what running queries side by side buys.

Prints one table and the two goals' ratios (issue: served req/s at 16 clients over the plain-torch limit,
with the defence on, at least 0.75; p50 at 1 client at most 1.5x one plain forward). Writes
``bench/out/route_throughput.json``.

    python bench/route_throughput.py [--clients 1 16 64] [--requests 64 320 512] [--runtimes]
        [--compare-placement] [--compare-float32] [--compare-lanes] [--direct-ingress]
        [--config serve_config.yaml] [--threads 2] [--skip-served]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from routers.data.location import data_dir

EMBEDDER = ROOT / "models" / "all-minilm-l6-v2"
#: the shipped default router's artifact
DEFAULT_ARTIFACT = "artifacts/blend_defended"
#: the defended artifacts the shipped config serves, by router
DEFENDED = {"blend": "artifacts/blend_defended", "hybrid_llm": "artifacts/hybrid_llm_defended",
            "mf": "artifacts/mf_defended", "domain_prior": "artifacts/domain_prior_defended"}
#: the undefended artifacts of the routers the shipped config defends
UNDEFENDED = {"hybrid": "artifacts/hybrid_llm", "blend": "artifacts/blend", "mf": "artifacts/mf",
              "domain_prior": "artifacts/domain_prior"}


def load_queries() -> list[str]:
    """Distinct MMLU questions from the routing data (test split first), in a fixed shuffled order."""
    seen: dict[str, None] = {}
    for name in ("mmlu_test.jsonl", "mmlu_train.jsonl"):
        with open(data_dir() / name) as f:
            for line in f:
                seen.setdefault(json.loads(line)["query"], None)
    queries = list(seen)
    np.random.default_rng(0).shuffle(queries)
    return queries


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- 1. the plain-torch limit ---------------------------------------------------------------------------
def windows_needed(vectors: np.ndarray) -> dict[str, float]:
    """The share of queries whose halves each shipped defended router embeds when routing: those whose
    whole text goes large (``defence.windows: when_needed``), from the plain-torch vectors."""
    from routers.registry import router_class

    out = {}
    for kind, artifact in DEFENDED.items():
        router = router_class(kind).load(ROOT / artifact)
        out[kind] = float((router.score_embeddings(vectors.astype(np.float64)) < router.threshold).mean())
    return out


def plain_torch_limit(queries: list[str], threads: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(EMBEDDER))
    model = AutoModel.from_pretrained(str(EMBEDDER)).eval()

    def forward(text: str) -> np.ndarray:
        encoded = tokenizer([text], return_tensors="pt", truncation=True, max_length=512)
        with torch.inference_mode():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1)[0].numpy()

    for text in queries[:20]:
        forward(text)  # warm-up
    passes = []
    for _ in range(2):  # the better of two passes: a limit, so noise must not lower it
        times, vectors = [], []
        started = time.perf_counter()
        for text in queries:
            t0 = time.perf_counter()
            vectors.append(forward(text))
            times.append(time.perf_counter() - t0)
        passes.append((time.perf_counter() - started, times, vectors))
    elapsed, times, vectors = min(passes, key=lambda p: p[0])
    return {"queries": len(queries), "qps": len(queries) / elapsed, "p50_ms": 1000 * percentile(times, 50),
            "vectors": np.stack(vectors)}


# --- 2. runtimes ------------------------------------------------------------------------------------------
def runtime_rows(queries: list[str], threads: int, reference: np.ndarray) -> list[dict[str, Any]]:
    from routers.engines import EmbedderConfig, build_embedder

    rows = []
    for label, backend, lanes, quantize in (
            ("transformers", "transformers", 1, "none"), ("onnx", "onnx", 1, "none"),
            (f"onnx, {threads} single-thread lanes", "onnx", threads, "none"),
            (f"onnx int8, {threads} single-thread lanes (shipped)", "onnx", threads, "int8")):
        embedder = build_embedder(EmbedderConfig(model=str(EMBEDDER), backend=backend, num_threads=threads,
                                                 max_batch_size=32, lanes=lanes, quantize=quantize))
        embedder.embed(queries[:5])
        started = time.perf_counter()
        single = np.stack([embedder.embed([q])[0] for q in queries])
        single_qps = len(queries) / (time.perf_counter() - started)
        started = time.perf_counter()
        embedder.embed(queries)
        batched_qps = len(queries) / (time.perf_counter() - started)
        rows.append({"runtime": label, "one_at_a_time_qps": single_qps, "bucketed_batch32_qps": batched_qps,
                     **agreement(single, reference)})
    return rows


def agreement(vectors: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """How far a runtime's vectors are from plain torch's, and how many of the default router's decisions
    (``artifacts/blend_defended`` on the whole query, at its threshold) they change."""
    from routers.registry import router_class

    router = router_class("blend").load(ROOT / DEFAULT_ARTIFACT)
    large = [router.score_embeddings(v.astype(np.float64)) < router.threshold for v in (vectors, reference)]
    return {"max_abs_diff": float(np.abs(vectors - reference).max()),
            "min_cosine": float((vectors * reference).sum(1).min()),
            "decision_flips": int((large[0] != large[1]).sum())}


# --- 3. served --------------------------------------------------------------------------------------------
async def route_load(base: str, model: str, queries: list[str], clients: int) -> dict[str, Any]:
    """``len(queries)`` route-only requests, one query each, from ``clients`` concurrent clients.

    aiohttp, not httpx: the load generator shares the server's cores, and aiohttp spends a fraction of
    httpx's CPU per request, so less of what is measured is the client."""
    import aiohttp

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    todo = iter(queries)

    async def client(http: aiohttp.ClientSession) -> None:
        for query in todo:
            t0 = time.perf_counter()
            try:
                async with http.post(f"{base}/v1/route", json={"model": model, "query": query}) as response:
                    await response.read()
                    status = str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120.0)) as http:
        started = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        elapsed = time.perf_counter() - started
    return {"requests": len(queries), "rps": len(queries) / elapsed, "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99), "statuses": statuses}


def take_no_priority_over_the_server() -> None:
    """Run the load generator at the niceness Ray gives its workers (``RAY_worker_niceness``, 15 by
    default), so that on a shared CPU it does not take cores from the proxy and the ingress it measures."""

    os.nice(max(0, int(os.environ.get("RAY_worker_niceness", "15")) - os.nice(0)))


def direct_ingress_url() -> str:
    """With ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` (Ray 2.60, experimental) each ingress replica serves HTTP
    itself on a port from ``RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT`` (30000) up: the first that answers."""
    import httpx

    low = int(os.environ.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "30000"))
    for port in range(low, low + 32):
        url = f"http://127.0.0.1:{port}"
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            continue
    raise SystemExit(f"--direct-ingress: no ingress replica answers on ports {low}-{low + 31}")


def served_rows(args: argparse.Namespace, queries: list[str]) -> list[dict[str, Any]]:
    from serve_helpers import default_app_args, deploy_config, free_port, start_serve, stop_serve

    app_args = default_app_args(args.config)
    defended = {kind: spec["artifact"] for kind, spec in app_args["routers"].items()
                if isinstance(spec, dict) and kind in UNDEFENDED and spec.get("artifact") != UNDEFENDED[kind]}
    base = start_serve(app_args, free_port(), num_cpus=args.ray_cpus, declarative=True)
    take_no_priority_over_the_server()
    rows: list[dict[str, Any]] = []
    offset = 0

    def run(variant: str, model: str, clients: int, count: int, url: str = base) -> None:
        nonlocal offset
        warm_up, batch = queries[offset: offset + 8], queries[offset + 8: offset + 8 + count]
        if len(batch) < count:
            raise SystemExit(f"only {len(queries)} distinct queries; ask for fewer --requests")
        offset += 8 + count
        asyncio.run(route_load(url, model, warm_up, min(clients, 8)))
        result = asyncio.run(route_load(url, model, batch, clients))
        rows.append({"variant": variant, "model": model, "clients": clients, **result})
        print(json.dumps(rows[-1]), flush=True)

    try:
        variants = [("defence on (shipped)", {})] if defended else []
        variants.append(("defence off", {"routers": {k: {"artifact": UNDEFENDED[k]} for k in defended}}))
        for variant, user_config in variants:
            if user_config:
                deploy_config(app_args, {"Ingress": user_config})
            for model in ("router", "router-hybrid"):
                for clients, count in zip(args.clients, args.requests, strict=True):
                    run(variant, model, clients, count)
            if args.direct_ingress and not user_config:
                # the same replicas, asked on the port the ingress replica serves itself: no proxy hop
                direct = direct_ingress_url()
                for model in ("router", "router-hybrid", "router-random"):
                    for clients, count in zip(args.clients, args.requests, strict=True):
                        label = "no embedding" if model == "router-random" else variant
                        run(f"{label}, direct ingress", model, clients, count, direct)
        for clients, count in zip(args.clients, args.requests, strict=True):
            run("no embedding", "router-random", clients, count)
        engine = app_args["embedder"]["engine"]
        if args.compare_float32 and engine.get("quantize", "none") != "none":
            # the same app on the float32 encoder the artifacts were fitted on: what int8 weights buy
            deploy_config({**app_args, "embedder": {**app_args["embedder"], "engine": {**engine, "quantize": "none"}}})
            for model in ("router", "router-hybrid"):
                for clients, count in zip(args.clients, args.requests, strict=True):
                    run("defence on, float32 encoder", model, clients, count)
        lanes = engine.get("lanes", 1)
        if args.compare_lanes and lanes > 1:
            # the same app with one multi-thread ONNX session and no lanes: what running queries side by side buys
            deploy_config({**app_args, "embedder": {**app_args["embedder"], "engine": {**engine, "lanes": 1}}})
            for clients, count in zip(args.clients, args.requests, strict=True):
                run("defence on, lanes: 1", "router", clients, count)
        if args.compare_placement and app_args["embedder"].get("placement") == "ingress":
            # the same app with the embedder in a deployment of its own: one more hop per decision
            deploy_config({**app_args, "embedder": {**app_args["embedder"], "placement": "deployment"}})
            for clients, count in zip(args.clients, args.requests, strict=True):
                run("embedder deployment, defence on", "router-hybrid", clients, count)
    finally:
        stop_serve()
    return rows


def print_table(limit: dict[str, Any], runtimes: list[dict[str, Any]], served: list[dict[str, Any]]) -> None:
    print(f"\nplain torch, one query at a time: {limit['qps']:.1f} queries/s, p50 forward {limit['p50_ms']:.1f} ms "
          f"({limit['queries']} queries)")
    print("windows needed (queries whose halves routing embeds): " +
          ", ".join(f"{kind} {share:.1%}" for kind, share in limit["windows_needed"].items()))
    if runtimes:
        print(f"\n| runtime | one at a time q/s (x plain) | bucketed batches of 32 q/s | max abs diff | min cosine "
              f"| default-router decisions changed (of {limit['queries']}) |")
        print("|---|---|---|---|---|---|")
        for r in runtimes:
            batched = "-" if r["bucketed_batch32_qps"] is None else f"{r['bucketed_batch32_qps']:.1f}"
            print(f"| {r['runtime']} | {r['one_at_a_time_qps']:.1f} ({r['one_at_a_time_qps'] / limit['qps']:.2f}) "
                  f"| {batched} | {r['max_abs_diff']:.1e} | {r['min_cosine']:.5f} | {r['decision_flips']} |")
    if served:
        print("\n| variant | model | clients | req/s (x plain limit) | p50 ms (x plain forward) | p99 ms | statuses |")
        print("|---|---|---|---|---|---|---|")
        for r in served:
            print(f"| {r['variant']} | {r['model']} | {r['clients']} | {r['rps']:.1f} ({r['rps'] / limit['qps']:.2f}) "
                  f"| {r['p50_ms']:.1f} ({r['p50_ms'] / limit['p50_ms']:.2f}) | {r['p99_ms']:.1f} | {r['statuses']} |")


def goals(limit: dict[str, Any], served: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two ratios for the shipped app (defence on), through Serve's proxy and, where measured,
    through direct ingress."""
    out = {}
    for variant, suffix in (("defence on (shipped)", ""), ("defence on (shipped), direct ingress", ", direct ingress")):
        shipped = [r for r in served if r["variant"] == variant]
        for model in ("router", "router-hybrid"):
            at16 = [r for r in shipped if r["model"] == model and r["clients"] == 16]
            at1 = [r for r in shipped if r["model"] == model and r["clients"] == 1]
            if at16:
                ratio = at16[0]["rps"] / limit["qps"]
                out[f"{model}{suffix}: req/s at 16 clients / plain limit (goal >= 0.75)"] = round(ratio, 3)
            if at1:
                ratio = at1[0]["p50_ms"] / limit["p50_ms"]
                out[f"{model}{suffix}: p50 at 1 client / plain forward (goal <= 1.5)"] = round(ratio, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="serve_config.yaml")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests", type=int, nargs="+", default=[64, 320, 512])
    parser.add_argument("--limit-queries", type=int, default=200, help="queries for the plain-torch limit")
    parser.add_argument("--threads", type=int, default=2, help="torch / ONNX threads for parts 1 and 2")
    parser.add_argument("--ray-cpus", type=float, default=4, help="CPUs Ray may schedule (not the cores used)")
    parser.add_argument("--runtimes", action="store_true", help="also part 2: the embedder runtimes")
    parser.add_argument("--skip-served", action="store_true")
    parser.add_argument("--compare-placement", action="store_true",
                        help="also redeploy with embedder.placement: deployment (the extra hop's cost)")
    parser.add_argument("--direct-ingress", action="store_true",
                        help="also measure the shipped app without Serve's proxy: Ray's experimental "
                        "RAY_SERVE_ENABLE_DIRECT_INGRESS=1, the ingress replica serving HTTP on its own port")
    parser.add_argument("--compare-float32", action="store_true",
                        help="also redeploy with the embedder's quantize: none (the float32 encoder)")
    parser.add_argument("--compare-lanes", action="store_true",
                        help="also redeploy with the embedder's lanes: 1 (one multi-thread session)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "route_throughput.json")
    args = parser.parse_args()
    if len(args.clients) != len(args.requests):
        parser.error("--clients and --requests need as many values each")

    if args.direct_ingress:  # read by Ray's processes as they start: set before Ray does
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    queries = load_queries()
    limit_queries, served_queries = queries[: args.limit_queries], queries[args.limit_queries:]
    limit = plain_torch_limit(limit_queries, args.threads)
    limit["windows_needed"] = windows_needed(limit["vectors"])
    runtimes = runtime_rows(limit_queries, args.threads, limit["vectors"]) if args.runtimes else []
    served = [] if args.skip_served else served_rows(args, served_queries)
    print_table(limit, runtimes, served)
    summary = goals(limit, served)
    for name, value in summary.items():
        print(f"{name}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    limit_out = {k: v for k, v in limit.items() if k != "vectors"}
    args.out.write_text(json.dumps({"limit": limit_out, "runtimes": runtimes, "served": served, "goals": summary},
                                   indent=2))
    lost = sum(n for r in served for status, n in r["statuses"].items() if status != "200")
    if lost:
        print(f"{lost} requests did not come back 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
