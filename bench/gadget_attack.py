"""Confounder-gadget attacks on the embedding routers over ``/v1/route`` (Shafran et al., "Rerouting LLM
Routers", 2025), and the ``routers.defences`` measured against them.

    python bench/gadget_attack.py                                   # hybrid + blend, undefended vs window_max
    python bench/gadget_attack.py --routers hybrid,blend,mf --budget 200 --positions suffix,prefix,middle
    python bench/gadget_attack.py --url http://127.0.0.1:8000 --routers blend --defences none   # a running app
    python bench/gadget_attack.py --defences window_max --artifact hybrid=runs/defended/hybrid_llm   # another artifact

The attacker is a client: it sends texts to ``/v1/route`` and reads ``use_large`` and ``score``, nothing
else. It searches, black-box, for an ``--words``-word gadget (words drawn from the training queries'
vocabulary) that, attached to its queries (``--positions``: appended, prepended, or inserted after the
question's first line), sends them to the large model: random-restart-free hill climbing, each step
trying ``--candidates`` substitutions at one random position, all of them on the ``--search`` queries in
one ``/v1/route`` call; the objective is the large-model share of the search queries (ties: the lower mean
score). ``--budget`` counts candidate gadgets evaluated. The gadget found is then attached to
``--eval`` held-out queries the search never saw: clean vs attacked large-model share, each with a 95%
bootstrap interval, and their paired difference.

Against a defended router the attacker searches against the defended ``/v1/route`` (an *adaptive*
attack), and the gadget found against the undefended router is replayed too (the *transfer* row), as is
``--known-gadget`` (found earlier against the shipped Hybrid router).

By default the app is the real ``RouterIngress`` FastAPI app in this process, over an httpx ASGI transport,
with the real MiniLM embedder behind a local stand-in for the Embedder deployment (no Ray cluster); a
defended router is its artifact with ``defence`` set in ``router.json``'s config (a copy, in a temp dir).
``--url`` talks to a running app instead (``serve run serve_config.yaml``); it serves whatever defence
its artifacts are configured with, so give ``--defences`` the one it has.

The in-domain APGR of each (router, defence) is the library's (``routers.evaluation.evaluate_fitted``) on
the whole test split, through the same scoring code the app runs. Queries: the test split's distinct
queries, shuffled with ``--seed``; the first ``--search`` are the attacker's, the next ``--eval`` the
held-out ones. Writes ``bench/out/gadget_attack.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

ARTIFACTS = {"hybrid": "artifacts/hybrid_llm", "blend": "artifacts/blend", "mf": "artifacts/mf"}
POSITIONS = ("suffix", "prefix", "middle")
#: found earlier against the shipped Hybrid router (60 substitutions, 8 words, 40 queries; issue 13)
KNOWN_GADGET = "Which John true approximate length likely harm depreciation"
DEFENCES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "window_max": {"kind": "window_max", "grid": 2, "min_fraction": 0.5},
}
THREADS = [1]  # --threads, set before the embedder is built
#: --quantize int8: the embedder serve_config.yaml ships (ONNX Runtime, int8 weights) instead of float32 torch
EMBEDDER_UPDATES: dict[str, Any] = {}
ROUTE_CHUNK = 256  # the app's default limits.max_batch_route
_VOCAB_WORD = re.compile(r"[A-Za-z][a-z]{2,14}")


# --- the attack's pure parts --------------------------------------------------------------------------------
def vocabulary(queries: Iterable[str], size: int, min_count: int = 3) -> list[str]:
    """The ``size`` most frequent alphabetic words (3-15 letters) of ``queries``, each seen at least
    ``min_count`` times; ties by the word, so the list is the same on every run."""
    counts = Counter(w for q in queries for w in _VOCAB_WORD.findall(q))
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ranked[:size]


def attach(query: str, gadget: Sequence[str], position: str) -> str:
    """``query`` with the gadget words attached: after it, before it, or after its first line (between an
    MMLU question and its choices; a one-line query: after its first sentence or half its words)."""
    text = " ".join(gadget)
    if position == "suffix":
        return f"{query} {text}"
    if position == "prefix":
        return f"{text} {query}"
    if position == "middle":
        cut = query.find("\n")
        if cut < 0:
            match = re.search(r"[.?!]\s", query)
            cut = match.end() - 1 if match and match.end() < len(query) else -1
        if cut < 0:
            words = query.split(" ")
            half = max(1, len(words) // 2)
            return " ".join([*words[:half], text, *words[half:]])
        return f"{query[:cut]} {text}{query[cut:]}"
    raise ValueError(f"unknown position {position!r}; use one of {POSITIONS}")


def large_share(use_large: Sequence[bool] | np.ndarray) -> float:
    values = np.asarray(use_large, dtype=np.float64)
    return float(values.mean()) if len(values) else 0.0


def objective(use_large: Sequence[bool], scores: Sequence[float]) -> tuple[float, float]:
    """What the attacker maximises: the large share, then the lower mean small-suitability score."""
    return large_share(use_large), -float(np.mean(scores)) if len(scores) else 0.0


def bootstrap_shares(clean: Sequence[bool], attacked: Sequence[bool], n_resamples: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
    """Clean and attacked large shares on the same queries, with 95% percentile intervals over queries
    (resampled together, so the difference is paired)."""
    a = np.asarray(clean, dtype=np.float64)
    b = np.asarray(attacked, dtype=np.float64)
    if a.shape != b.shape or not len(a):
        raise ValueError("clean and attacked decisions must be the same non-empty length")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(n_resamples, len(a)))
    ra, rb = a[draws].mean(axis=1), b[draws].mean(axis=1)

    def stat(point: float, values: np.ndarray) -> dict[str, float]:
        low, high = np.percentile(values, [2.5, 97.5])
        return {"value": point, "low": float(low), "high": float(high)}

    return {"n": len(a), "clean": stat(float(a.mean()), ra), "attacked": stat(float(b.mean()), rb),
            "lift": stat(float(b.mean() - a.mean()), rb - ra)}


def propose(rng: np.random.Generator, gadget: Sequence[str], vocab: Sequence[str],
            n_candidates: int) -> list[list[str]]:
    """``n_candidates`` gadgets that each differ from ``gadget`` in one word, all at the same random
    position (distinct words, none the current one)."""
    position = int(rng.integers(len(gadget)))
    choices = [w for w in vocab if w != gadget[position]]
    picks = rng.choice(len(choices), size=min(n_candidates, len(choices)), replace=False)
    out = []
    for pick in picks:
        candidate = list(gadget)
        candidate[position] = choices[int(pick)]
        out.append(candidate)
    return out


Evaluate = Callable[[list[list[str]]], Awaitable[list[tuple[float, float]]]]


@dataclass
class SearchResult:
    gadget: list[str]
    best: tuple[float, float]
    evaluations: int
    history: list[dict[str, Any]] = field(default_factory=list)


async def search(evaluate: Evaluate, vocab: Sequence[str], n_words: int, budget: int, n_candidates: int,
                 seed: int, on_step: Callable[[int, tuple[float, float]], None] | None = None) -> SearchResult:
    """Hill climbing over word substitutions: start from a random gadget, keep a candidate only when it
    improves the objective. ``evaluate`` scores a batch of gadgets (one ``/v1/route`` call); ``budget``
    counts the gadgets it is given, the start included."""
    rng = np.random.default_rng(seed)
    gadget = [vocab[int(i)] for i in rng.choice(len(vocab), size=n_words, replace=False)]
    best = (await evaluate([gadget]))[0]
    result = SearchResult(list(gadget), best, 1, [{"evaluations": 1, "share": best[0], "gadget": " ".join(gadget)}])
    while result.evaluations < budget:
        candidates = propose(rng, result.gadget, vocab, min(n_candidates, budget - result.evaluations))
        values = await evaluate(candidates)
        result.evaluations += len(candidates)
        top = max(range(len(candidates)), key=lambda i: values[i])
        if values[top] > result.best:
            result.gadget, result.best = candidates[top], values[top]
            result.history.append({"evaluations": result.evaluations, "share": result.best[0],
                                   "gadget": " ".join(result.gadget)})
        if on_step is not None:
            on_step(len(candidates), result.best)
    return result


# --- talking to /v1/route ------------------------------------------------------------------------------------
class RouteClient:
    """``/v1/route`` over httpx: a URL, or an ASGI app in this process."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    async def route(self, model: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(use_large, score) per text, in chunks of the app's batch cap."""
        use_large: list[bool] = []
        scores: list[float] = []
        for start in range(0, len(texts), ROUTE_CHUNK):
            response = await self.client.post("/v1/route", json={"model": model,
                                                                 "queries": list(texts[start:start + ROUTE_CHUNK])})
            self.calls += 1
            if response.status_code != 200:
                raise RuntimeError(f"/v1/route answered {response.status_code}: {response.text[:300]}")
            for item in response.json()["data"]:
                use_large.append(bool(item["use_large"]))
                scores.append(float(item["score"]))
        return np.asarray(use_large), np.asarray(scores)


class MemoEmbedder:
    """The real embedder with an in-memory table by text; seeded read-only from the bench embedding cache
    (``.cache/embeddings``), so the clean queries cost nothing; nothing is written there."""

    def __init__(self, config: Any) -> None:
        from routers.engines import build_embedder
        from routers.engines.cache import cache_path, read_cache, text_key

        self.inner = build_embedder(config)
        self.dim = self.inner.dim
        self.model_name = self.inner.model_name
        self.key = text_key
        self.table = read_cache(cache_path(ROOT / ".cache" / "embeddings", config))
        self.computed = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        todo = list({k: i for i, k in reversed(list(enumerate(keys))) if k not in self.table}.values())
        todo.sort(key=lambda i: len(texts[i]))  # similar lengths per batch: less padding
        for start in range(0, len(todo), 64):
            chunk = todo[start:start + 64]
            for i, vector in zip(chunk, self.inner.embed([texts[i] for i in chunk]), strict=True):
                self.table[keys[i]] = np.asarray(vector, dtype=np.float32)
            self.computed += len(chunk)
        return np.stack([self.table[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)


def shipped_embedder_config() -> Any:
    from routers.config import load_config_file

    config = load_config_file(ROOT / "configs" / "routers" / "hybrid_llm.yaml").engines.embedder
    return config.model_copy(update={"num_threads": THREADS[0], **EMBEDDER_UPDATES})


def defended_artifact(kind: str, defence: dict[str, Any] | None, workdir: Path) -> Path:
    """The shipped artifact, or a copy of it whose router config turns ``defence`` on."""
    source = ROOT / ARTIFACTS[kind]
    if defence is None:
        return source
    target = workdir / f"{kind}-{defence['kind']}"
    if not target.exists():
        shutil.copytree(source, target)
        manifest = json.loads((target / "router.json").read_text())
        manifest["config"]["defence"] = defence
        (target / "router.json").write_text(json.dumps(manifest, indent=2))
    return target


class InProcessApp:
    """The real RouterIngress over fake answer handles and a local embedder handle (as the tests build it)."""

    def __init__(self, artifacts: dict[str, Path], embedder: MemoEmbedder) -> None:
        from serve_app import ingress as ingress_module
        from serve_app.observability import RouterMetrics

        self.module = ingress_module
        args = {
            "models": {"small": {"engine": {"model": "org/small"}}, "large": {"engine": {"model": "org/large"}}},
            "embedder": {"engine": shipped_embedder_config().model_dump(mode="json")},
            "routers": {"hybrid": None, "automix": None, "mf": None, "blend": None,
                        **{kind: {"artifact": str(path)} for kind, path in artifacts.items()}},
            "default_router": next(iter(artifacts)),
            "auth": {"api_keys": [], "api_keys_env": None},
            "timeouts": {"router_s": 600.0},
        }
        cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
        self.instance = cls(args, {"small": _Handle(), "large": _Handle()})
        self.instance.metrics = RouterMetrics(counter=_Metric, histogram=_Metric)

        async def embed_many(texts: list[str]) -> np.ndarray:
            return embedder.embed(texts)

        async def embed_one(text: str) -> np.ndarray:
            return embedder.embed([text])[0]

        self.instance.pipelines.embedder = _Handle(embed=embed_many, embed_one=embed_one)

    def __enter__(self) -> Any:
        import logging

        import httpx

        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # one http_request line per call otherwise
        self.dependency = _servable_dependency(self.module.app)
        self.module.app.dependency_overrides[self.dependency] = lambda: self.instance
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.module.app), base_url="http://bench",
                                 timeout=600.0)

    def __exit__(self, *exc: object) -> None:
        self.module.app.dependency_overrides.pop(self.dependency, None)


class _Remote:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class _Handle:
    def __init__(self, **methods: Callable[..., Any]) -> None:
        for name, fn in methods.items():
            setattr(self, name, _Remote(fn))

    def options(self, **_: Any) -> _Handle:
        return self


class _Metric:
    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def inc(self, *_: Any, **__: Any) -> None:
        pass

    def observe(self, *_: Any, **__: Any) -> None:
        pass


def _servable_dependency(app: Any) -> Any:
    """The dependency through which Serve hands each route its replica's instance."""
    import inspect

    from ray.serve._private.http_util import _walk_fastapi_routes

    for route, _, _ in _walk_fastapi_routes(app):
        endpoint = getattr(route, "endpoint", None)
        if getattr(endpoint, "_serve_cls", None) is not None:
            return inspect.signature(endpoint).parameters["self"].default.dependency
    raise RuntimeError("no Serve class-based route found")


# --- the run ---------------------------------------------------------------------------------------------------
def in_domain_apgr(kind: str, defence: dict[str, Any] | None, embedder: MemoEmbedder, test: Any,
                   n_resamples: int, workdir: Path) -> dict[str, Any]:
    from routers.evaluation.generalisation import Protocol, evaluate_fitted
    from routers.registry import router_class
    from serve_app.config import EMBEDDING_ROUTER_KINDS

    router = router_class(EMBEDDING_ROUTER_KINDS[kind].name).load(defended_artifact(kind, defence, workdir))
    router.bind_engines(embedder=embedder)  # type: ignore[arg-type]
    result = evaluate_fitted(router, test, Protocol(n_resamples=n_resamples))
    apgr = result.metrics["apgr"]
    return {"value": apgr.value, "low": apgr.low, "high": apgr.high}


def fmt(stat: dict[str, float]) -> str:
    return f"{stat['value']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


async def attack_one(client: RouteClient, model: str, search_queries: list[str], eval_queries: list[str],
                     vocab: list[str], args: argparse.Namespace, position: str, seed: int) -> dict[str, Any]:
    from routers.progress import progress_bar

    async def evaluate(gadgets: list[list[str]]) -> list[tuple[float, float]]:
        texts = [attach(q, g, position) for g in gadgets for q in search_queries]
        use_large, scores = await client.route(model, texts)
        n = len(search_queries)
        return [objective(use_large[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]) for i in range(len(gadgets))]

    bar = progress_bar(f"{model} {position}", total=args.budget, unit="gadget")
    started = time.perf_counter()
    found = await search(evaluate, vocab, args.words, args.budget, args.candidates, seed,
                         on_step=lambda n, best: (bar.update(n), bar.set_postfix(share=f"{best[0]:.2f}")))
    bar.close()
    return {"position": position, "gadget": " ".join(found.gadget), "search_share": found.best[0],
            "search_mean_score": -found.best[1], "evaluations": found.evaluations,
            "search_seconds": round(time.perf_counter() - started, 1), "history": found.history}


async def held_out(client: RouteClient, model: str, eval_queries: list[str], gadget: str, position: str,
                   clean: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    attacked, scores = await client.route(model, [attach(q, gadget.split(), position) for q in eval_queries])
    return {"gadget": gadget, "position": position, "mean_score": float(scores.mean()),
            **bootstrap_shares(clean, attacked, n_resamples, seed)}


async def run_router(kind: str, defence_name: str, client: RouteClient, search_queries: list[str],
                     eval_queries: list[str], vocab: list[str], args: argparse.Namespace,
                     undefended_gadgets: dict[str, dict[str, str]]) -> dict[str, Any]:
    model = f"router-{kind}"
    clean, clean_scores = await client.route(model, eval_queries)
    row: dict[str, Any] = {"router": kind, "defence": defence_name, "clean_share": large_share(clean),
                           "clean_mean_score": float(clean_scores.mean()), "attacks": []}
    replays = [("known", KNOWN_GADGET, "suffix")] + [
        ("transfer", g["gadget"], g["position"]) for g in undefended_gadgets.get(kind, {}).values()]
    for label, gadget, position in replays:
        result = await held_out(client, model, eval_queries, gadget, position, clean, args.bootstrap, args.seed)
        row["attacks"].append({"kind": label, **result})
    for offset, position in enumerate(args.positions):
        found = await attack_one(client, model, search_queries, eval_queries, vocab, args, position,
                                 args.seed + offset)
        result = await held_out(client, model, eval_queries, found["gadget"], position, clean, args.bootstrap,
                                args.seed)
        row["attacks"].append({"kind": "adaptive" if defence_name != "none" else "search", **found, **result})
        if defence_name == "none":
            undefended_gadgets.setdefault(kind, {})[position] = {"gadget": found["gadget"], "position": position}
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| router | defence | in-domain APGR | attack | position | gadget | clean large share | "
          "attacked large share | lift (paired) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        apgr = fmt(row["apgr"]) if row.get("apgr") else "-"
        for attack in row["attacks"]:
            print(f"| {row['router']} | {row['defence']} | {apgr} | {attack['kind']} | {attack['position']} | "
                  f"{attack['gadget']} | {fmt(attack['clean'])} | {fmt(attack['attacked'])} | "
                  f"{fmt(attack['lift'])} |")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routers", default="hybrid,blend", help=f"comma-separated, of {sorted(ARTIFACTS)}")
    parser.add_argument("--defences", default="none,window_max", help=f"comma-separated, of {sorted(DEFENCES)}")
    parser.add_argument("--positions", default="suffix", help=f"comma-separated, of {POSITIONS}")
    parser.add_argument("--budget", type=int, default=120, help="candidate gadgets evaluated per search")
    parser.add_argument("--candidates", type=int, default=6, help="substitutions tried per step (one call)")
    parser.add_argument("--words", type=int, default=8, help="gadget length in words")
    parser.add_argument("--vocab", type=int, default=3000, help="most frequent training-query words to draw from")
    parser.add_argument("--search", type=int, default=40, help="the attacker's queries")
    parser.add_argument("--eval", type=int, default=400, help="held-out queries the gadget is measured on")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--apgr-bootstrap", type=int, default=200, help="resamples for the APGR interval")
    parser.add_argument("--no-apgr", action="store_true", help="skip the in-domain APGR (it embeds the test "
                        "split's windows once per defence)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the embedder")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none",
                        help="int8: embed on ONNX Runtime with int8 weights, as serve_config.yaml ships")
    parser.add_argument("--url", default=None, help="a running app instead of the in-process one")
    parser.add_argument("--artifact", action="append", default=[], metavar="KIND=PATH",
                        help="route KIND with the artifact at PATH instead of the shipped one (repeatable; "
                        "e.g. hybrid=runs/defended/hybrid_llm); defence 'none' serves it as saved")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gadget_attack.json")
    args = parser.parse_args(argv)
    args.routers = [r for r in args.routers.split(",") if r]
    args.defences = [d for d in args.defences.split(",") if d]
    args.positions = [p for p in args.positions.split(",") if p]
    artifacts: dict[str, str] = {}
    for item in args.artifact:
        kind, _, path = item.partition("=")
        if kind not in ARTIFACTS or not path:
            parser.error(f"--artifact {item!r}: use KIND=PATH with KIND one of {sorted(ARTIFACTS)}")
        if not (ROOT / path / "router.json").exists():
            parser.error(f"--artifact {item!r}: no router.json under {ROOT / path}")
        artifacts[kind] = path
    args.artifact = artifacts
    for name, allowed, values in (("routers", ARTIFACTS, args.routers), ("defences", DEFENCES, args.defences),
                                  ("positions", POSITIONS, args.positions)):
        if bad := [v for v in values if v not in allowed]:
            parser.error(f"--{name}: unknown {bad}; use {sorted(allowed)}")
    return args


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    import httpx

    from bench.eval_routers import load_split

    test = load_split("test", quick=False)
    queries = list(dict.fromkeys(test.queries))
    order = np.random.default_rng(args.seed).permutation(len(queries))
    search_queries = [queries[i] for i in order[:args.search]]
    eval_queries = [queries[i] for i in order[args.search:args.search + args.eval]]
    vocab = vocabulary(load_split("train", quick=False).queries, args.vocab)
    embedder = None if args.url and args.no_apgr else MemoEmbedder(shipped_embedder_config())
    rows: list[dict[str, Any]] = []
    undefended: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="gadget-") as tmp:
        workdir = Path(tmp)
        for defence_name in args.defences:
            defence = DEFENCES[defence_name]
            for kind in args.routers:
                started = time.perf_counter()
                if args.url:
                    async with httpx.AsyncClient(base_url=args.url, timeout=600.0) as http:
                        row = await run_router(kind, defence_name, RouteClient(http), search_queries,
                                               eval_queries, vocab, args, undefended)
                else:
                    assert embedder is not None
                    app = InProcessApp({kind: defended_artifact(kind, defence, workdir)}, embedder)
                    with app as http:
                        async with http:
                            row = await run_router(kind, defence_name, RouteClient(http), search_queries,
                                                   eval_queries, vocab, args, undefended)
                if not args.no_apgr:
                    assert embedder is not None
                    row["apgr"] = in_domain_apgr(kind, defence, embedder, test, args.apgr_bootstrap, workdir)
                row["seconds"] = round(time.perf_counter() - started, 1)
                rows.append(row)
                print_table([row])
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    THREADS[0] = args.threads
    if args.quantize != "none":
        EMBEDDER_UPDATES.update(backend="onnx", quantize=args.quantize)
    ARTIFACTS.update(args.artifact)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    started = time.perf_counter()
    rows = asyncio.run(main_async(args))
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"settings": settings, "defences": DEFENCES, "known_gadget": KNOWN_GADGET,
                                    "seconds": round(time.perf_counter() - started, 1), "rows": rows}, indent=2))
    print(f"\nwrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
