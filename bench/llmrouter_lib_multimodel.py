"""N-model routers side by side with the seeds' implementation (ulab-uiuc's ``llmrouter-lib`` 0.4.0, PyPI).

    bash scripts/llmrouter_lib_env.sh                      # once: .venv-llmrouter-lib/ (its own venv)
    LLMROUTER_DATA=../shared/data .venv/bin/python bench/llmrouter_lib_multimodel.py
    ... --pools routerbench --resamples 200                # a quicker look

Both pools of ``bench/multimodel_eval.py`` (LLMRouter's 9 models, RouterBench's 11), the same train -> test
splits (``routers.nmodel.evaluate.load_pool``) and the same MiniLM vectors for both sides (the project's
embedder through its disk cache, ``.cache/embeddings``). Ours run here: ``nmodel_knn`` and ``nmodel_mlp``
with their shipped 5-fold AIQ search (as ``bench/multimodel_eval.py``), ``nmodel_single`` for reference.
The lib runs in its own venv through ``bench/llmrouter_lib_multimodel_worker.py`` (no pickle crosses:
``.npy`` and JSON; the worker's docstring says how the lib is fed).

The lib's KNNRouter and MLPRouter are *classifiers of the best model* (label: the model of highest
``performance`` per training query); neither predicts each model's performance, and neither has a cost
knob. Their curves are traced two ways, both reported:

* ``proba``: one fit on the lib's own label; its per-model class probabilities (kNN vote shares, MLP
  softmax) take the place of predicted quality in the same ``cost=L`` sweep ours get, with the same cost
  estimates (ours, ``CostEstimator``: the lib has none);
* ``relabel``: one fit per cost weight L on the label argmax(quality - L x cost) of each training query
  (the lib's own label construction, fed utilities in its ``performance`` column); each fit's own
  decision is one operating point. Weights: L = 0 and ``--knn-weights`` / ``--mlp-weights`` log-spaced
  cost weights of ``routers.selection.weight_grid`` up to the first that labels every training query with
  its cheapest call.

With 0/1 scores most training queries have several best models; the lib's label is the first best row,
so the row order decides it: ``--ties cheap`` writes a query's rows cheapest model first (the label is the
cheapest model that does best), ``strong`` highest mean training quality first; both are run. The lib's
kNN gets k in ``--knn-k`` (it has no search) and its MLP the lib's documented defaults
([128, 64], relu, Adam lr 1e-3, 100 epochs, batch 32, weight decay 1e-4). "lib best" is the lib row of
highest test AIQ and "ours best" ours (kNN or MLP) likewise: both picked on the test set, the lib from more
rows. Metrics are ``routers.evaluation.multimodel``'s (hull, AIQ, quality at the best single model's cost)
on the same resamples for every row: 95% percentile intervals, task clusters then queries within them, and
within tasks (``stratified``); the paired difference of AIQ ours best - lib best (and kNN - lib kNN best,
MLP - lib MLP best) is taken per resample. "fit s" excludes embedding (ours: the 5-fold search and refit;
lib: its router constructor, which reads the routing JSONL, plus its trainer; relabel: all its fits).
"route ms/q": one batch over the test vectors (ours: predicted quality + cost estimates + the rule; lib:
its model's probabilities), per query, one BLAS/torch thread on both sides. Writes
``bench/out/llmrouter_lib_multimodel.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
from threadpoolctl import threadpool_limits

from routers.cli import DEFAULT_EMBEDDER, EMBEDDING_CACHE_DIR
from routers.data.location import data_dir
from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import CachedEmbedder
from routers.evaluation.bootstrap import DEFAULT_CONFIDENCE, MetricInterval, percentile_interval
from routers.evaluation.multimodel import (
    INTERVAL_KEYS,
    BootstrapMode,
    MultiModelReport,
    OperatingPoints,
    Predictions,
    RouterRun,
    cluster_counts,
    operating_points,
    reference,
    resample_metrics,
    single_model_frontier_metrics,
)
from routers.nmodel.base import CostEstimator
from routers.nmodel.evaluate import POOLS, Pool, fit_and_predict, load_pool
from routers.progress import log, progress_bar
from routers.selection import argmax_cheapest, weight_grid

DEFAULT_LIB_PYTHON = ROOT / ".venv-llmrouter-lib/bin/python"
WORKER = ROOT / "bench/llmrouter_lib_multimodel_worker.py"
JSON_OUT = ROOT / "bench/out/llmrouter_lib_multimodel.json"
OURS = ("nmodel_knn", "nmodel_mlp")
BASELINES = ("nmodel_single",)
LIB_MLP_HPARAM: dict[str, Any] = {"hidden_layer_sizes": [128, 64], "activation": "relu", "lr": 0.001,
                                  "epochs": 100, "batch_size": 32, "alpha": 0.0001}


# --- pure helpers (tested) ------------------------------------------------------------------------------
def relabel_weights(quality: np.ndarray, cost: np.ndarray, n: int) -> list[float]:
    """0 and ``n`` log-spaced weights of ``weight_grid(cost)``, up to the first weight at which every training
    query's utility argmax (quality - L x cost, ties to the cheaper) is its cheapest call: past it every
    relabelled fit would learn the same labels."""
    quality, cost = np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    grid = weight_grid(cost)[1:]
    if n <= 0 or len(grid) == 0:
        return [0.0]
    cheapest = cost.argmin(axis=1)
    last = len(grid) - 1
    for k, weight in enumerate(grid):
        if np.array_equal(argmax_cheapest(quality - weight * cost, cost), cheapest):
            last = k
            break
    picks = np.unique(np.round(np.linspace(0, last, min(n, last + 1))).astype(int))
    return [0.0] + [float(grid[k]) for k in picks]


def choice_points(weights: Sequence[float], choices: np.ndarray, quality: np.ndarray,
                  cost: np.ndarray) -> OperatingPoints:
    """Operating points from one model choice per query per weight ((n_weights, n) column indices)."""
    choices = np.asarray(choices, dtype=np.int64)
    rows = np.arange(quality.shape[0])
    return OperatingPoints(np.asarray(weights, dtype=np.float64), quality[rows, choices], cost[rows, choices])


@dataclass(frozen=True)
class Curve:
    """One row of the table: a run (default choice, times) and its operating points."""

    run: RouterRun
    points: OperatingPoints
    side: str  # "ours", "lib" or "baseline"
    family: str  # "knn", "mlp" or ""
    trace: str  # how the curve was traced


@dataclass(frozen=True)
class Evaluation:
    reports: list[MultiModelReport]
    #: per row, per INTERVAL_KEYS key, the value on each resample
    draws: list[dict[str, np.ndarray]]
    label: str


def evaluate_curves(curves: Sequence[Curve], models: Sequence[str], quality: np.ndarray, cost: np.ndarray,
                    clusters: Sequence[str | None], n_resamples: int, seed: int, mode: BootstrapMode,
                    confidence: float = DEFAULT_CONFIDENCE) -> Evaluation:
    """``routers.evaluation.multimodel.evaluate_runs`` for curves given as operating points (a relabelled
    trace is not one prediction matrix swept by weight): the same per-resample figures
    (``resample_metrics``), the same resamples for every row, and the draws kept for paired differences."""
    quality, cost = np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    ref = reference(quality, cost)
    best = ref.best_single
    figures = [resample_metrics(c.points, c.run, quality, cost, None, best) for c in curves]
    draws: list[dict[str, list[float]]] = [{key: [] for key in INTERVAL_KEYS} for _ in curves]
    for counts in cluster_counts(clusters, n_resamples, seed, mode):
        for k, c in enumerate(curves):
            values = resample_metrics(c.points, c.run, quality, cost, counts, best)
            for key in INTERVAL_KEYS:
                draws[k][key].append(np.nan if values[key] is None else float(values[key]))
    frontier = single_model_frontier_metrics(ref, best)
    label = f"{confidence:.0%} percentile, {n_resamples} resamples of {mode}" + (
        " (task clusters, then queries within them)" if mode == "clusters" else "")
    reports = []
    for k, c in enumerate(curves):
        intervals = {}
        for key in INTERVAL_KEYS:
            low, high = percentile_interval(np.asarray(draws[k][key]), confidence) if n_resamples else (None, None)
            intervals[key] = MetricInterval(value=figures[k][key], low=low, high=high)
        point_quality, point_cost = c.points.means()
        reports.append(MultiModelReport(
            router=c.run.name, n_queries=len(quality), n_clusters=len(set(clusters)), models=list(models),
            rule=c.run.rule, quality=float(figures[k]["quality"]), cost=float(figures[k]["cost"]),
            best_single_model=models[best], best_single_quality=float(ref.model_quality[best]),
            best_single_cost=float(ref.model_cost[best]), oracle_quality=ref.oracle_quality,
            oracle_cost=ref.oracle_cost, aiq=figures[k]["aiq"], single_models_aiq=frontier["aiq"],
            quality_at_best_single_cost=figures[k]["quality_at_best_single_cost"],
            cost_to_reach_best_single_quality=figures[k]["cost_to_reach_best_single_quality"],
            intervals=intervals, bootstrap=label, fit_seconds=c.run.fit_seconds, route_seconds=c.run.route_seconds,
            curve_cost=[float(x) for x in point_cost], curve_quality=[float(y) for y in point_quality]))
    return Evaluation(reports, [{key: np.asarray(v) for key, v in d.items()} for d in draws], label)


def paired_difference(evaluation: Evaluation, a: int, b: int, key: str = "aiq",
                      confidence: float = DEFAULT_CONFIDENCE) -> MetricInterval:
    """Row ``a``'s ``key`` minus row ``b``'s, with the interval of the per-resample differences."""
    first, second = evaluation.reports[a], evaluation.reports[b]
    mine, theirs = getattr(first, key), getattr(second, key)
    diffs = evaluation.draws[a][key] - evaluation.draws[b][key]
    low, high = percentile_interval(diffs, confidence) if len(diffs) else (None, None)
    return MetricInterval(value=None if mine is None or theirs is None else mine - theirs, low=low, high=high)


def best_row(curves: Sequence[Curve], reports: Sequence[MultiModelReport], side: str, family: str | None = None) -> int:
    rows = [k for k, c in enumerate(curves) if c.side == side and (family is None or c.family == family)]
    return max(rows, key=lambda k: -np.inf if reports[k].aiq is None else reports[k].aiq)


# --- the lib's side ---------------------------------------------------------------------------------------
def write_pool(job: Path, pool: Pool, x_train: np.ndarray, x_test: np.ndarray, routers: list[dict[str, Any]],
               relabel: dict[str, list[float]]) -> dict[str, Any]:
    folder = job / pool.name
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "train_emb.npy", np.ascontiguousarray(x_train, dtype=np.float32))
    np.save(folder / "test_emb.npy", np.ascontiguousarray(x_test, dtype=np.float32))
    np.save(folder / "train_quality.npy", pool.train.quality)
    np.save(folder / "train_cost.npy", pool.train.cost)
    (folder / "train_queries.json").write_text(json.dumps(list(pool.train.queries)))
    (folder / "train_tasks.json").write_text(json.dumps([t or "" for t in pool.train.task_names]))
    # the lib's MetaRouter reads an llm_data file; its kNN and MLP use nothing in it
    (folder / "llm_data.json").write_text(json.dumps({m: {"model": m} for m in pool.train.models}))
    return {"id": pool.name, "models": list(pool.train.models), "train_emb": f"{pool.name}/train_emb.npy",
            "test_emb": f"{pool.name}/test_emb.npy", "llm_data": f"{pool.name}/llm_data.json",
            "routers": routers, "relabel_weights": relabel}


def lib_specs(knn_k: Sequence[int], ties: Sequence[str], seed: int) -> list[dict[str, Any]]:
    specs = []
    for tie in ties:
        specs += [{"id": f"knn_k{k}_{tie}", "kind": "knn", "hparam": {"n_neighbors": k, "metric": "cosine"},
                   "ties": tie, "seed": seed} for k in knn_k]
        specs.append({"id": f"mlp_{tie}", "kind": "mlp", "hparam": dict(LIB_MLP_HPARAM), "ties": tie, "seed": seed})
    return specs


def run_worker(lib_python: Path, job: Path, pools: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    (job / "manifest.json").write_text(json.dumps({"pools": pools, "threads": threads}, indent=1))
    env = {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    started = time.time()
    log_path = job / "worker.log"
    with log_path.open("w") as fh:
        proc = subprocess.Popen([str(lib_python), str(WORKER), str(job)], stdout=fh, stderr=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stderr is not None
        tail: list[str] = []
        for line in proc.stderr:
            fh.write(line)
            tail = (tail + [line])[-40:]
            if line.startswith("[worker]"):
                log(line.strip())
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"llmrouter-lib worker failed ({code}); last lines:\n{''.join(tail)}")
    results = json.loads((job / "out/results.json").read_text())
    results["wall_seconds"] = time.time() - started
    return results


def lib_curves(job: Path, results: dict[str, Any], pool: Pool, relabel: dict[str, list[float]],
               cost_estimate: np.ndarray) -> list[Curve]:
    test = pool.test
    curves = []
    for record in (r for r in results["runs"] if r["pool"] == pool.name):
        folder = job / "out" / pool.name
        rid, kind = record["router"], record["kind"]
        proba = np.load(folder / f"{rid}.proba.npy")
        default = np.load(folder / f"{rid}.default.npy").astype(np.int64)
        if proba.shape != test.quality.shape or len(default) != test.n_queries:
            raise RuntimeError(f"lib {rid} on {pool.name}: shapes {proba.shape}, {default.shape}")
        route_seconds = record["batch_seconds"]
        predictions = Predictions(proba, cost_estimate)
        run = RouterRun(f"lib_{rid} proba", predictions, default, "lib's own decision", record["fit_seconds"],
                        route_seconds)
        curves.append(Curve(run, operating_points(predictions, test.quality, test.cost), "lib", kind,
                            "class probabilities swept by cost=L"))
        choices = np.load(folder / f"{rid}.relabel.npy")
        weights = relabel[kind]
        run = RouterRun(f"lib_{rid} relabel", predictions, default, "lib's own decision",
                        float(sum(record["relabel_fit_seconds"])), route_seconds)
        curves.append(Curve(run, choice_points(weights, choices, test.quality, test.cost), "lib", kind,
                            f"{len(weights)} fits on argmax(quality - L x cost)"))
    return curves


# --- our side --------------------------------------------------------------------------------------------
def our_curves(pool: Pool, embedder: CachedEmbedder, x_test: np.ndarray) -> list[Curve]:
    curves = []
    for name in (*OURS, *BASELINES):
        router, run = fit_and_predict(name, pool.train, pool.test, embedder)
        # routing time on the vectors, as the lib's is: predicted quality, cost estimates, the rule
        started = time.perf_counter()
        features = x_test if router.uses_embeddings else None
        if features is not None:
            quality = router.predict_arrays(np.asarray(features, dtype=np.float64))
            router.choose(quality, router.estimate_costs(pool.test.queries), router.evaluation_rule)
        route_seconds = time.perf_counter() - started if features is not None else run.route_seconds
        run = RouterRun(run.name, run.predictions, run.default_choice, run.rule, run.fit_seconds, route_seconds)
        log(f"{pool.name}: {name} fitted in {run.fit_seconds:.1f}s (chose {router.params})")
        side = "baseline" if name in BASELINES else "ours"
        family = name.removeprefix("nmodel_") if side == "ours" else ""
        trace = "predicted quality swept by cost=L" + (f", {router.params}" if router.params else "")
        curves.append(Curve(run, operating_points(run.predictions, pool.test.quality, pool.test.cost), side,
                            family, trace))
    return curves


# --- the table --------------------------------------------------------------------------------------------
def cell(interval: MetricInterval, digits: int = 3) -> str:
    if interval.value is None:
        return "-"
    text = f"{interval.value:.{digits}f}"
    if interval.low is None or interval.high is None:
        return text
    return f"{text} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def signed(interval: MetricInterval) -> str:
    if interval.value is None:
        return "-"
    return f"{interval.value:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"


def markdown_table(title: str, curves: Sequence[Curve], clusters: Evaluation, within: Evaluation,
                   diffs: dict[str, dict[str, MetricInterval]]) -> str:
    lines = [f"**{title}**", "",
             ("| router | side | quality | $/1k q | AIQ (task clusters) | AIQ (within tasks) | Q at best single's $ "
              "(within tasks) | fit s | route ms/q |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for k, c in enumerate(curves):
        a, b = clusters.reports[k], within.reports[k]
        per_query = None if a.route_seconds is None else 1000 * a.route_seconds / a.n_queries
        lines.append(f"| {a.router} | {c.side} | {cell(b.intervals['quality'])} | {a.cost * 1000:.4f} | "
                     f"{cell(a.intervals['aiq'])} | {cell(b.intervals['aiq'])} | "
                     f"{cell(b.intervals['quality_at_best_single_cost'])} | {(a.fit_seconds or 0):.1f} | "
                     f"{'-' if per_query is None else f'{per_query:.3f}'} |")
    first = clusters.reports[0]
    lines += ["", (f"Best single model {first.best_single_model}: {first.best_single_quality:.3f} at "
                   f"${first.best_single_cost * 1000:.4f} per 1k queries; oracle {first.oracle_quality:.3f}; single "
                   f"models' frontier AIQ {first.single_models_aiq:.4f}. Quality and $ at each row's default rule "
                   "(ours: the calibrated `quality=1.0`; lib: its own argmax decision)."), "",
              "| paired AIQ difference | value | 95% (task clusters) | 95% (within tasks) |", "|---|---|---|---|"]
    for label, pair in diffs.items():
        lines.append(f"| {label} | {pair['clusters'].value:+.4f} | "
                     f"[{pair['clusters'].low:+.4f}, {pair['clusters'].high:+.4f}] | "
                     f"[{pair['stratified'].low:+.4f}, {pair['stratified'].high:+.4f}] |")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib-python", type=Path, default=DEFAULT_LIB_PYTHON)
    parser.add_argument("--pools", default=",".join(POOLS))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads on both sides")
    parser.add_argument("--knn-k", default="5,25,100", help="the lib's kNN n_neighbors values (each one row)")
    parser.add_argument("--ties", default="cheap,strong",
                        help="row orders deciding the lib's label among tied best models (each one set of rows)")
    parser.add_argument("--knn-weights", type=int, default=12, help="relabelled kNN fits besides L = 0")
    parser.add_argument("--mlp-weights", type=int, default=6, help="relabelled MLP fits besides L = 0")
    parser.add_argument("--keep", type=Path, help="keep the worker's job folder here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=JSON_OUT)
    args = parser.parse_args(argv)
    if not args.lib_python.exists():
        parser.error(f"{args.lib_python} not found: run `bash scripts/llmrouter_lib_env.sh` first")
    started = time.time()
    embedder = CachedEmbedder(build_embedder(EmbedderConfig(model=DEFAULT_EMBEDDER)), ROOT / EMBEDDING_CACHE_DIR)
    pools = [load_pool(name, data_dir()) for name in args.pools.split(",") if name]
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    relabels: dict[str, dict[str, list[float]]] = {}
    specs = lib_specs([int(k) for k in args.knn_k.split(",") if k], [t for t in args.ties.split(",") if t],
                      args.seed)
    out: dict[str, Any] = {"command": " ".join(["LLMROUTER_DATA=../shared/data", ".venv/bin/python",
                                                "bench/llmrouter_lib_multimodel.py",
                                                *(sys.argv[1:] if argv is None else argv)]),
                           "embedder": DEFAULT_EMBEDDER, "resamples": args.resamples, "seed": args.seed,
                           "threads": args.threads, "pools": {}}
    with tempfile.TemporaryDirectory(prefix="llmrouter-lib-nmodel-") as tmp:
        job = args.keep or Path(tmp)
        job.mkdir(parents=True, exist_ok=True)
        manifests = []
        for pool in pools:
            for note in pool.notes:
                log(f"{pool.name}: {note}")
            x_train = np.asarray(embedder.embed(list(pool.train.queries)), dtype=np.float64)
            x_test = np.asarray(embedder.embed(list(pool.test.queries)), dtype=np.float64)
            vectors[pool.name] = (x_train, x_test)
            relabels[pool.name] = {"knn": relabel_weights(pool.train.quality, pool.train.cost, args.knn_weights),
                                   "mlp": relabel_weights(pool.train.quality, pool.train.cost, args.mlp_weights)}
            manifests.append(write_pool(job, pool, x_train, x_test, specs, relabels[pool.name]))
        log(f"running llmrouter-lib in {args.lib_python.parent.parent.name}: {len(specs)} routers x {len(pools)} pools")
        lib = run_worker(args.lib_python, job, manifests, args.threads)
        log(f"llmrouter-lib done in {lib['wall_seconds']:.0f}s; fitting ours")
        out["lib_versions"], out["lib_worker_seconds"] = lib["versions"], round(lib["wall_seconds"], 1)
        tables = []
        for pool in pools:
            x_train, x_test = vectors[pool.name]
            with threadpool_limits(limits=args.threads):
                curves = our_curves(pool, embedder, x_test)
            costs = CostEstimator.fit(pool.train.queries, pool.train.cost).predict(pool.test.queries)
            curves += lib_curves(job, lib, pool, relabels[pool.name], costs)
            evaluations: dict[str, Evaluation] = {}
            modes: tuple[BootstrapMode, ...] = ("clusters", "stratified")
            bar = progress_bar(f"{pool.name}: bootstrap", total=len(modes), unit="mode")
            for mode in modes:
                evaluations[mode] = evaluate_curves(curves, pool.test.models, pool.test.quality, pool.test.cost,
                                                    pool.test.task_names, args.resamples, args.seed, mode)
                bar.update(1)
            bar.close()
            reports = evaluations["clusters"].reports
            pairs = {"ours best - lib best": (best_row(curves, reports, "ours"), best_row(curves, reports, "lib"))}
            for family in ("knn", "mlp"):
                pairs[f"ours {family} - lib {family} best"] = (best_row(curves, reports, "ours", family),
                                                              best_row(curves, reports, "lib", family))
            diffs = {f"{label} ({curves[a].run.name} - {curves[b].run.name})":
                     {mode: paired_difference(evaluations[mode], a, b) for mode in modes}
                     for label, (a, b) in pairs.items()}
            title = (f"{pool.name}: test split, {pool.test.n_queries} queries, {pool.test.n_models} models, "
                     f"{len(set(pool.test.task_names))} tasks; train {pool.train.n_queries}")
            table = markdown_table(title, curves, evaluations["clusters"], evaluations["stratified"], diffs)
            print(table, "\n", flush=True)
            tables.append(table)
            out["pools"][pool.name] = {
                "notes": list(pool.notes), "n_train": pool.train.n_queries, "n_test": pool.test.n_queries,
                "relabel_weights": relabels[pool.name], "table": table,
                "rows": [{"router": c.run.name, "side": c.side, "family": c.family, "trace": c.trace,
                          **{mode: evaluations[mode].reports[k].model_dump(mode="json") for mode in modes}}
                         for k, c in enumerate(curves)],
                "paired_aiq_differences": {label: {mode: v.model_dump() for mode, v in pair.items()}
                                           for label, pair in diffs.items()},
                "lib_runs": [r for r in lib["runs"] if r["pool"] == pool.name],
            }
    wall = time.time() - started
    out["wall_seconds"] = round(wall, 1)
    print(f"wall time {wall:.0f}s (llmrouter-lib worker {lib['wall_seconds']:.0f}s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
