"""Side by side with the seeds' own implementation: ulab-uiuc's LLMRouter (``llmrouter-lib`` 0.4.0, PyPI).

    bash scripts/llmrouter_lib_env.sh             # once: .venv-llmrouter-lib/ (its own venv, CPU torch 2.13.0)
    .venv/bin/python bench/llmrouter_lib.py       # seen (train -> test) and unseen (5 leave-domains-out folds)
    .venv/bin/python bench/llmrouter_lib.py --no-unseen --bootstrap 200   # a quicker look

Same data and vectors for both: the shipped train -> test split (MMLU + GSM8K), queries embedded once by
the shipped config's MiniLM embedder through the disk cache of ``bench/eval_routers.py``
(``.cache/embeddings``). Ours runs here, in-process; the lib runs in its own venv through
``bench/llmrouter_lib_worker.py`` (a subprocess), which gets the training rows as LLMRouter routing JSONL
(with ``embedding_id``), the embeddings as ``.npy`` and the evaluation queries as JSON, and returns
scores as ``.npy`` (no pickle crosses). The worker's docstring says how the lib is fed the vectors.

Pairs compared (same hyperparameters on both sides wherever both have them, seed 0):

* **Hybrid**, each label mode both implement (deterministic, probabilistic tau 0.1, transformed), with the
  shipped config's MLP ([64], alpha 10, 30 epochs); deterministic also with the seed's MLP ([128, 64],
  300 iterations, sklearn defaults otherwise). ``lib hybrid ... raw`` rows score the lib's unclipped
  MLPRegressor output (its ``router_score`` clips to [0, 1], which ties queries at the ends).
* **kNN**: ours (k 200, similarity-weighted mean gap) vs the lib's KNNRouter (KNeighborsClassifier over
  each query's best model, cosine, k 200, and k 5).
* **lib MLPRouter** (a torch classifier over the best model, the lib's defaults), which we have no
  counterpart of.

Scores are all the small model's suitability (higher = the small model is fine; module docstring of the
worker for the lib's side). Figures: APGR and CPT(50/80/95%) from ``routers.evaluation`` with 95%
percentile bootstrap intervals over queries (paired: every row resamples the same query indices), and
the paired difference ours - lib of APGR for each Hybrid/kNN pair. Unseen: the task_name groups of train
+ test dealt into ``--folds`` folds (``group_folds``), out-of-fold scores pooled. Times: fit (the lib's
includes building its training set from the JSONL, as its router constructor does), batch scoring of
the evaluation matrix, and per-query routing of ``--per-query`` queries (ours ``route_embedding``; the
lib's ``route_single``, which reloads the trained model from disk each call, and its model's predict
alone). Prints one table and writes ``bench/out/llmrouter_lib.json``.

Reading it: the lib's MLPRegressor sees the raw (unit-norm) embeddings, ours standardises them first, so
one L2 penalty means different things on the two sides. The shipped alpha 10 (tuned for standardised
inputs) leaves the lib's MLP nearly constant (predictions' spread ~0.001 against ~0.05), which is most of
the ours - lib gap, above all on unseen domains; the seed's alpha 1e-4 goes the other way. Timings come
from a shared CPU: compare within a run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
from threadpoolctl import threadpool_limits

from bench.eval_routers import cached_embedder, load_split
from routers.base import Router
from routers.cli import format_interval
from routers.config import load_config_file
from routers.data import ModelPair, RoutingDataset
from routers.engines.cache import CachedEmbedder
from routers.evaluation import MetricInterval, bootstrap_metrics, group_folds
from routers.evaluation.generalisation import Predictions, curve_metrics, predict, task_of
from routers.progress import log, set_quiet
from routers.registry import router_class

DEFAULT_LIB_PYTHON = ROOT / ".venv-llmrouter-lib/bin/python"
WORKER = ROOT / "bench/llmrouter_lib_worker.py"
METRIC_KEYS = ("apgr", "cpt_50", "cpt_80", "cpt_95")
#: the lib's Hybrid picks small/large by llm_data "size" (must end in B); GPT-4's is not published, so any
#: larger placeholder keeps the order right (only the order is used)
LARGE_SIZE_PLACEHOLDER = "1000B"
SEED_MLP: dict[str, Any] = {"hidden_layer_sizes": [128, 64], "activation": "relu", "solver": "adam", "max_iter": 300}
SKLEARN_KEYS = ("hidden_layer_sizes", "activation", "solver", "max_iter", "alpha", "learning_rate_init",
                "early_stopping")


# --- what runs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """One comparison: our router (None: the lib only) and the lib's, each by its params."""

    label: str
    ours: tuple[str, dict[str, Any]] | None
    lib: dict[str, Any] | None
    unseen: bool = True
    raw_row: bool = False


def lib_hybrid(spec_id: str, params: dict[str, Any], seed: int, unseen: bool) -> dict[str, Any]:
    hparam = {k: params[k] for k in SKLEARN_KEYS if k in params}
    return {"id": spec_id, "kind": "hybrid", "unseen": unseen,
            "cfg": {"router_mode": params.get("router_mode", "deterministic"),
                    "router_tau": params.get("router_tau", 0.1), "router_threshold": 0.5},
            "hparam": {**hparam, "random_state": seed}}


def build_pairs(shipped: dict[str, Any], seed: int) -> list[Pair]:
    """The comparisons of the module docstring; ``shipped`` = the Hybrid config's router params."""
    pairs = []
    for mode, extra in (("deterministic", {}), ("probabilistic", {"router_tau": 0.1}), ("transformed", {})):
        params = {**shipped, "router_mode": mode, **extra, "seed": seed}
        short = {"deterministic": "det", "probabilistic": "prob", "transformed": "trans"}[mode]
        pairs.append(Pair(f"hybrid {short}", ("hybrid_llm", params), lib_hybrid(f"hybrid_{short}", params, seed, True),
                          raw_row=mode == "deterministic"))
    seed_params = {"router_mode": "deterministic", **SEED_MLP, "seed": seed}
    pairs.append(Pair("hybrid det seedMLP", ("hybrid_llm", seed_params),
                      lib_hybrid("hybrid_det_seedmlp", seed_params, seed, False), unseen=False, raw_row=True))
    pairs.append(Pair("knn k200", ("knn", {"seed": seed}),
                      {"id": "knn_k200", "kind": "knn", "hparam": {"n_neighbors": 200, "metric": "cosine"}}))
    pairs.append(Pair("knn k5", None, {"id": "knn_k5", "kind": "knn", "unseen": False,
                                       "hparam": {"n_neighbors": 5, "metric": "cosine"}}, unseen=False))
    pairs.append(Pair("mlp (lib)", None, {"id": "mlp", "kind": "mlp", "unseen": False,
                                          "hparam": {"hidden_layer_sizes": [128, 64], "activation": "relu", "lr": 0.001,
                                                     "epochs": 100, "batch_size": 32, "alpha": 0.0001}},
                      unseen=False))
    return pairs


# --- data handed to the worker ---------------------------------------------------------------------------
@dataclass
class Split:
    """One train -> eval split, both sides complete for the model pair, with their embeddings."""

    id: str
    train: RoutingDataset
    eval: RoutingDataset
    x_train: np.ndarray
    x_eval: np.ndarray
    time_single: bool = False


def routing_rows(data: RoutingDataset, pair: ModelPair) -> list[dict[str, Any]]:
    """LLMRouter routing JSONL rows, one per (query, model), small first (the shipped files' order, which
    decides the lib's ties: its ``idxmax`` keeps the first best row); ``embedding_id`` = the query's row."""
    quality = data.performance_matrix([pair.small, pair.large])
    rows = []
    for i, example in enumerate(data.examples):
        for j, model in enumerate((pair.small, pair.large)):
            rows.append({"task_name": example.task_name, "query": example.query, "model_name": model,
                         "performance": float(quality[i, j]), "embedding_id": i})
    return rows


def lib_llm_data(llm_data: dict[str, Any], pair: ModelPair) -> dict[str, Any]:
    out = {name: dict(info) for name, info in llm_data.items() if name in (pair.small, pair.large)}
    if not str(out[pair.small].get("size") or "").upper().endswith("B"):
        raise ValueError(f"{pair.small} has no size in B; the lib's Hybrid needs one")
    out[pair.large]["size"] = LARGE_SIZE_PLACEHOLDER
    return out


def write_split(job: Path, split: Split, pair: ModelPair) -> dict[str, Any]:
    folder = job / split.id
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "train.jsonl").open("w", encoding="utf-8") as fh:
        for row in routing_rows(split.train, pair):
            fh.write(json.dumps(row) + "\n")
    np.save(folder / "train_emb.npy", np.ascontiguousarray(split.x_train, dtype=np.float32))
    np.save(folder / "eval_emb.npy", np.ascontiguousarray(split.x_eval, dtype=np.float32))
    (folder / "eval_queries.json").write_text(json.dumps(split.eval.queries))
    return {"id": split.id, "train": f"{split.id}/train.jsonl", "train_emb": f"{split.id}/train_emb.npy",
            "eval_emb": f"{split.id}/eval_emb.npy", "eval_queries": f"{split.id}/eval_queries.json",
            "time_single": split.time_single}


def thread_env(threads: int) -> dict[str, str]:
    """BLAS/OpenMP thread caps for the worker (read when numpy and torch load)."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def run_worker(lib_python: Path, splits: list[Split], pairs: list[Pair], pair: ModelPair, llm_data: dict[str, Any],
               per_query: int, seed: int, threads: int, job: Path) -> dict[str, Any]:
    """Write the job, run the lib's side in its venv, read back scores and times."""
    (job / "llm_data.json").write_text(json.dumps(lib_llm_data(llm_data, pair)))
    manifest = {"splits": [write_split(job, s, pair) for s in splits], "routers": [p.lib for p in pairs if p.lib],
                "llm_data": "llm_data.json", "small": pair.small, "large": pair.large,
                "per_query_n": per_query, "seed": seed, "threads": threads}
    (job / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"running llmrouter-lib in {lib_python.parent.parent.name} ({len(manifest['routers'])} routers)")
    started = time.time()
    env = {**os.environ, **thread_env(threads)}
    proc = subprocess.run([str(lib_python), str(WORKER), str(job)], check=False, capture_output=True, text=True,
                          env=env)
    (job / "worker.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"llmrouter-lib worker failed ({proc.returncode}); last lines:\n{proc.stderr[-3000:]}")
    results = json.loads((job / "out/results.json").read_text())
    results["wall_seconds"] = time.time() - started
    return results


def lib_predictions(job: Path, split_id: str, spec_id: str, reference: Predictions, raw: bool = False) -> Predictions:
    """The lib's scores on a split, with our outcome and cost arrays of the same queries (same order)."""
    folder = job / "out" / split_id
    scores = np.load(folder / f"{spec_id}.{'raw' if raw else 'scores'}.npy").astype(np.float64)
    large = np.load(folder / f"{spec_id}.large.npy").astype(bool)
    if len(scores) != len(reference):
        raise RuntimeError(f"{spec_id} on {split_id}: {len(scores)} scores for {len(reference)} queries")
    return Predictions(scores, large, reference.small, reference.large, reference.cost_small, reference.cost_large,
                       reference.overhead, reference.cascade, reference.tasks)


# --- our side ----------------------------------------------------------------------------------------
@dataclass
class OurRun:
    predictions: Predictions
    fit_seconds: float
    batch_seconds: float
    single_ms: float | None = None
    train_metrics: dict[str, Any] = field(default_factory=dict)


def run_ours(name: str, params: dict[str, Any], split: Split, embedder: CachedEmbedder, llm_data: dict[str, Any],
             per_query: int) -> OurRun:
    router = router_class(name)(params, llm_data).bind_engines(embedder=embedder)
    started = time.perf_counter()
    router.fit(split.train)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    router.score_embeddings(split.x_eval)
    batch_seconds = time.perf_counter() - started
    run = OurRun(predict(router, split.eval), fit_seconds, batch_seconds,
                 train_metrics=dict(getattr(router, "train_metrics", {})))
    if split.time_single:
        queries, x = split.eval.queries[:per_query], split.x_eval[:per_query]
        started = time.perf_counter()
        for query, vector in zip(queries, x):
            router.route_embedding(query, vector)
        run.single_ms = 1000.0 * (time.perf_counter() - started) / max(len(queries), 1)
    return run


def run_pair_ours(p: Pair, splits: list[Split], embedder: CachedEmbedder, llm_data: dict[str, Any],
                  per_query: int) -> dict[str, OurRun]:
    assert p.ours is not None
    name, params = p.ours
    return {s.id: run_ours(name, params, s, embedder, llm_data, per_query)
            for s in splits if s.id == "seen" or p.unseen}


def reference_predictions(split: Split, llm_data: dict[str, Any], pair: ModelPair) -> Predictions:
    """Outcomes and costs of ``split.eval`` as our evaluation sees them (scores are placeholders)."""
    router = router_class("random")({}, llm_data)
    router.resolve_pair(split.train)
    matrix = split.eval.performance_matrix([pair.small, pair.large])
    costs = router.cost_model(split.eval)
    n = len(split.eval)
    return Predictions(np.zeros(n), np.zeros(n, dtype=bool), matrix[:, 0], matrix[:, 1],
                       np.asarray(costs.small, dtype=np.float64), np.asarray(costs.large, dtype=np.float64),
                       np.zeros(n), False, np.asarray([task_of(e) for e in split.eval.examples], dtype=object))


# --- figures -----------------------------------------------------------------------------------------
def intervals(predictions: Predictions, n_resamples: int, seed: int) -> dict[str, MetricInterval]:
    def metrics(sample: Predictions) -> dict[str, float | None]:
        values = curve_metrics(sample)
        return {k: values[k] for k in METRIC_KEYS}

    return bootstrap_metrics(predictions, Predictions.take, metrics, len(predictions), n_resamples, seed)


def apgr_difference(ours: Predictions, lib: Predictions, n_resamples: int, seed: int) -> MetricInterval:
    """APGR(ours) - APGR(lib) with a paired bootstrap interval (the same query resamples for both)."""
    def take(sample: tuple[Predictions, Predictions], idx: np.ndarray) -> tuple[Predictions, Predictions]:
        return sample[0].take(idx), sample[1].take(idx)

    def metrics(sample: tuple[Predictions, Predictions]) -> dict[str, float | None]:
        a, b = curve_metrics(sample[0])["apgr"], curve_metrics(sample[1])["apgr"]
        return {"d_apgr": None if a is None or b is None else a - b}

    return bootstrap_metrics((ours, lib), take, metrics, len(ours), n_resamples, seed)["d_apgr"]


@dataclass
class Row:
    router: str
    impl: str
    domains: str
    n: int
    fit_seconds: float
    batch_ms: float | None
    single_ms: float | None
    metrics: dict[str, MetricInterval]
    d_apgr: MetricInterval | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"router": self.router, "impl": self.impl, "domains": self.domains, "n": self.n,
                "fit_seconds": round(self.fit_seconds, 3), "batch_ms": self.batch_ms, "single_ms": self.single_ms,
                "metrics": {k: v.model_dump() for k, v in self.metrics.items()},
                "d_apgr_ours_minus_lib": self.d_apgr.model_dump() if self.d_apgr else None, **self.extra}


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def format_rows(rows: list[Row]) -> str:
    header = (f"{'router':<23}{'impl':<6}{'domains':<8}{'n':>6}{'fit s':>8}{'batch ms':>10}{'ms/query':>10}"
              + "".join(f"{title:>22}" for title in ("APGR", "CPT50", "CPT80")) + f"{'dAPGR ours-lib':>24}")
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = "".join(f"{format_interval(r.metrics[k]):>22}" for k in ("apgr", "cpt_50", "cpt_80"))
        diff = format_interval(r.d_apgr) if r.d_apgr else ""
        lines.append(f"{r.router:<23}{r.impl:<6}{r.domains:<8}{r.n:>6}{r.fit_seconds:>8.1f}{fmt_ms(r.batch_ms):>10}"
                     f"{fmt_ms(r.single_ms):>10}{cells}{diff:>24}")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------------
def embed(embedder: CachedEmbedder, data: RoutingDataset) -> np.ndarray:
    return np.asarray(embedder.embed(data.queries), dtype=np.float32)


def make_splits(train: RoutingDataset, test: RoutingDataset, pair: ModelPair, embedder: CachedEmbedder,
                folds: int, seed: int) -> list[Split]:
    train, test = train.complete_for([pair.small, pair.large]), test.complete_for([pair.small, pair.large])
    splits = [Split("seen", train, test, embed(embedder, train), embed(embedder, test), time_single=True)]
    if folds:
        pool = RoutingDataset(train.examples + test.examples, train.llm_data)
        for fold in group_folds(pool, folds, seed):
            fit, held = pool.subset(fold.fit_indices), pool.subset(fold.eval_indices)
            splits.append(Split(f"fold{fold.index}", fit, held, embed(embedder, fit), embed(embedder, held)))
    return splits


def pooled(parts: list[Predictions]) -> Predictions:
    return parts[0] if len(parts) == 1 else Predictions.concatenate(parts)


def lib_record(results: dict[str, Any], split_id: str, spec_id: str) -> dict[str, Any]:
    return next(r for r in results["runs"] if r["split"] == split_id and r["router"] == spec_id)


def rows_for_pair(p: Pair, splits: list[Split], refs: dict[str, Predictions], ours: dict[str, OurRun],
                  lib: dict[str, Any], job: Path, n_resamples: int, seed: int) -> list[Row]:
    rows: list[Row] = []
    for domains, ids in (("seen", ["seen"]), ("unseen", [s.id for s in splits if s.id != "seen"])):
        if not ids or (domains == "unseen" and not p.unseen):
            continue
        ours_pred = pooled([ours[i].predictions for i in ids]) if p.ours else None
        if p.ours:
            assert ours_pred is not None
            first = ours[ids[0]]
            rows.append(Row(p.label, "ours", domains, len(ours_pred), sum(ours[i].fit_seconds for i in ids),
                            1000.0 * first.batch_seconds if domains == "seen" else None,
                            first.single_ms if domains == "seen" else None, intervals(ours_pred, n_resamples, seed),
                            extra={"params": p.ours[1]}))
        if not p.lib:
            continue
        variants: list[tuple[str, bool]] = [("", False)] + ([(" raw", True)] if p.raw_row else [])
        for suffix, raw in variants:
            lib_pred = pooled([lib_predictions(job, i, p.lib["id"], refs[i], raw) for i in ids])
            records = [lib_record(lib, i, p.lib["id"]) for i in ids]
            single = records[0].get("single") if domains == "seen" else None
            rows.append(Row(p.label + suffix, "lib", domains, len(lib_pred), sum(r["fit_seconds"] for r in records),
                            1000.0 * records[0]["batch_seconds"] if domains == "seen" else None,
                            single["route_single_ms"] if single else None, intervals(lib_pred, n_resamples, seed),
                            apgr_difference(ours_pred, lib_pred, n_resamples, seed) if ours_pred is not None else None,
                            extra={"lib_spec": p.lib, "lib_runs": records}))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib-python", type=Path, default=DEFAULT_LIB_PYTHON,
                        help="python of the llmrouter-lib venv (scripts/llmrouter_lib_env.sh)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/routers/hybrid_llm.yaml",
                        help="Hybrid config: embedder settings and the shared MLP hparams")
    parser.add_argument("--folds", type=int, default=5, help="leave-domains-out folds (unseen)")
    parser.add_argument("--no-unseen", action="store_true", help="only the shipped train -> test split")
    parser.add_argument("--bootstrap", type=int, default=1000, help="query resamples per interval")
    parser.add_argument("--per-query", type=int, default=200, help="queries routed one at a time for ms/query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/torch threads on both sides (1: equal for both, and on a shared CPU the fastest)")
    parser.add_argument("--limit", type=int, help="only the first N train and N/4 test queries (a smoke test)")
    parser.add_argument("--keep", type=Path, help="keep the worker's job folder here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    if not args.lib_python.exists():
        parser.error(f"{args.lib_python} not found: run `bash scripts/llmrouter_lib_env.sh` first")
    started = time.time()

    train, test = load_split("train", False), load_split("test", False)
    if args.limit:
        train, test = train.head(args.limit), test.head(max(args.limit // 4, 50))
    llm_data = dict(train.llm_data)
    embedder = cached_embedder(args.config)
    probe: Router = router_class("hybrid_llm")({}, llm_data)
    pair = probe.resolve_pair(train)
    splits = make_splits(train, test, pair, embedder, 0 if args.no_unseen else args.folds, args.seed)
    shipped = load_config_file(args.config).router_params()
    pairs = build_pairs(shipped, args.seed)
    refs = {s.id: reference_predictions(s, llm_data, pair) for s in splits}

    with tempfile.TemporaryDirectory(prefix="llmrouter-lib-") as tmp:
        job = args.keep or Path(tmp)
        job.mkdir(parents=True, exist_ok=True)
        lib = run_worker(args.lib_python, splits, pairs, pair, llm_data, args.per_query, args.seed, args.threads, job)
        log(f"llmrouter-lib done in {lib['wall_seconds']:.0f}s; fitting ours")
        with threadpool_limits(limits=args.threads):
            ours_runs = {p.label: run_pair_ours(p, splits, embedder, llm_data, args.per_query) for p in pairs if p.ours}
        log("bootstrapping")
        rows = [row for p in pairs
                for row in rows_for_pair(p, splits, refs, ours_runs.get(p.label, {}), lib, job, args.bootstrap,
                                         args.seed)]

    table = format_rows(rows)
    print(table)
    seen_ref = refs["seen"]
    print(f"[low, high]: 95% percentile bootstrap over queries ({args.bootstrap} resamples, the same draws for every "
          "row); dAPGR: paired. seen: shipped train -> test; unseen: "
          f"{args.folds} leave-domains-out folds over task_name, pooled.")
    print(f"seen ({len(seen_ref)} queries): small alone {seen_ref.small.mean():.3f}, large alone "
          f"{seen_ref.large.mean():.3f}; fit s: unseen = sum over folds; batch ms: the whole eval matrix; "
          f"ms/query: {args.per_query} queries one at a time (lib: route_single, reloading its model each call)")
    wall = time.time() - started
    print(f"wall time {wall:.0f}s (llmrouter-lib worker {lib['wall_seconds']:.0f}s)")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": " ".join([".venv/bin/python", "bench/llmrouter_lib.py", *(sys.argv[1:] if argv is None else argv)]),
        "lib_versions": lib["versions"], "embedder": embedder.model_name,
        "pair": {"small": pair.small, "large": pair.large},
        "n_train": len(splits[0].train), "n_test": len(splits[0].eval), "folds": 0 if args.no_unseen else args.folds,
        "bootstrap": args.bootstrap, "seed": args.seed, "wall_seconds": round(wall, 1),
        "lib_worker_seconds": round(lib["wall_seconds"], 1), "table": table, "rows": [r.to_dict() for r in rows],
    }
    (args.out / "llmrouter_lib.json").write_text(json.dumps(summary, indent=2, default=float))
    log(f"wrote {args.out / 'llmrouter_lib.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
