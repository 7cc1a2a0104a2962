"""N-model routers on both published pools' test splits: quality, cost, AIQ, quality at the best single model's
cost, with task-cluster bootstrap intervals, fit and route time; one PNG with the curves.

    python bench/multimodel_eval.py                         # both pools, every N-model router, 1000 resamples
    python bench/multimodel_eval.py --pools routerbench --routers nmodel_knn,nmodel_single --resamples 200
    python bench/multimodel_eval.py --leave-tasks-out 5     # llmrouter's 14 tasks dealt into 5 folds as well
    python bench/multimodel_eval.py --pools llmrouter --routers nmodel_causal,nmodel_blend,nmodel_single \
        --png bench/out/causal_curves.png --json-out bench/out/causal_eval.json   # the causal-LM router
    python bench/multimodel_eval.py --routers nmodel_knn,nmodel_mlp --embedder /tmp/emb_models/all-mpnet-base-v2 \
        --png bench/out/multimodel_mpnet.png --json-out bench/out/multimodel_mpnet.json   # another embedder too

The default routers are the ones that fit in seconds to minutes on embeddings; ``nmodel_causal`` fine-tunes a
135M LM (about 10 minutes on llmrouter's pool on 2 cores, mostly scoring every candidate's name), so it runs
when named.

Protocol: each router is fitted on the pool's train split (hyperparameters chosen by 5-fold AIQ inside it,
folds stratified by task) and evaluated once on its test split (LLMRouter's: the 119 questions also in train
dropped, 381 left; RouterBench's: ARC-Challenge + MBPP, blank rows skipped). Embeddings: the project's CPU
embedder (``models/all-minilm-l6-v2``) through the disk cache (``.cache/embeddings``), so a re-run embeds
nothing. Intervals: 95% percentile, resampling task clusters and then queries within them; RouterBench's
pool has only 2 tasks (LLMRouter's test split 8), so each pool also gets intervals that keep its tasks and
resample queries within each (``stratified``). "fit s" excludes embedding (done once, up front). "gain" is the
router's quality at the best single model's cost minus that model's quality, paired on each resample. Writes
``bench/multimodel_curves.png`` and ``bench/out/multimodel_eval.json``.

``--embedder DIR`` (repeatable) also runs every router on a sentence-transformers directory's vectors (its own
pooling and max length, as ``bench/embedders.py`` reads them; e.g. all-mpnet-base-v2 from PyPI, see there), as
``router@DIR-name``, and prints each one's AIQ and gain minus the same router's on MiniLM, paired on the same
resamples.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.embedders import sentence_transformers_config
from routers.cli import DEFAULT_EMBEDDER, EMBEDDING_CACHE_DIR
from routers.data.location import data_dir
from routers.data.multimodel import MultiModelDataset
from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import CachedEmbedder
from routers.evaluation.bootstrap import MetricInterval
from routers.evaluation.multimodel import (
    BootstrapMode,
    MultiModelReport,
    PlotPanel,
    RouterRun,
    evaluate_runs,
    plot_multimodel,
)
from routers.nmodel.base import FeatureRouter
from routers.nmodel.evaluate import POOLS, fit_and_predict, leave_tasks_out, load_pool
from routers.progress import log
from routers.registry import multimodel_router_class, multimodel_router_names

PNG = ROOT / "bench" / "multimodel_curves.png"
JSON_OUT = ROOT / "bench" / "out" / "multimodel_eval.json"


def cell(interval: MetricInterval, scale: float = 1.0, digits: int = 3) -> str:
    if interval.value is None:
        return "-"
    text = f"{interval.value * scale:.{digits}f}"
    if interval.low is None or interval.high is None:
        return text
    return f"{text} [{interval.low * scale:.{digits}f}, {interval.high * scale:.{digits}f}]"


def table(title: str, reports: list[MultiModelReport]) -> str:
    header = (f"{'router':<14}{'quality':>22}{'$/1k q':>9}{'AIQ':>22}{'Q@best-single-$':>22}"
              f"{'gain vs best single':>25}{'fit s':>8}{'route ms/q':>11}")
    rows = [title, header, "-" * len(header)]
    for r in reports:
        per_query = None if r.route_seconds is None else 1000 * r.route_seconds / r.n_queries
        rows.append(f"{r.router:<14}{cell(r.intervals['quality']):>22}{r.cost * 1000:>9.4f}"
                    f"{cell(r.intervals['aiq']):>22}{cell(r.intervals['quality_at_best_single_cost']):>22}"
                    f"{cell(r.intervals['gain_at_best_single_cost']):>25}{(r.fit_seconds or 0):>8.1f}"
                    f"{'-' if per_query is None else f'{per_query:.3f}':>11}")
    first = reports[0]
    single_aiq = "-" if first.single_models_aiq is None else f"{first.single_models_aiq:.4f}"
    rows.append(f"best single model {first.best_single_model}: quality {first.best_single_quality:.3f} at "
                f"${first.best_single_cost * 1000:.4f} per 1k queries; oracle {first.oracle_quality:.3f} at "
                f"${first.oracle_cost * 1000:.4f}; single models' frontier AIQ {single_aiq}")
    rows.append(f"intervals: {first.bootstrap}; quality and $ at each router's default rule ({first.rule} for "
                f"{first.router})")
    return "\n".join(rows)


def evaluate(runs: list[RouterRun], data: MultiModelDataset, resamples: int, mode: BootstrapMode,
             seed: int) -> list[MultiModelReport]:
    return evaluate_runs(runs, data.models, data.quality, data.cost, data.task_names, n_resamples=resamples,
                         seed=seed, mode=mode)


def embedder_differences(reports: list[MultiModelReport], runs: list[RouterRun], data: MultiModelDataset,
                         resamples: int, mode: BootstrapMode, seed: int) -> str:
    """Each ``router@embedder`` run's AIQ and gain minus its MiniLM run's, paired on the same resamples."""
    by_name = {run.name: run for run in runs}
    rows = [f"{'router':<36}{'AIQ minus MiniLM':>30}{'gain minus MiniLM':>30}"]
    for report in reports:
        if "@" not in report.router:
            continue
        base = report.router.split("@", 1)[0]
        pair = evaluate_runs([by_name[base], by_name[report.router]], data.models, data.quality, data.cost,
                             data.task_names, n_resamples=resamples, seed=seed, mode=mode, compare_to=base)[1]
        rows.append(f"{report.router:<36}{cell(pair.intervals[f'aiq_minus_{base}'], digits=4):>30}"
                    f"{cell(pair.intervals[f'quality_at_best_single_cost_minus_{base}'], digits=4):>30}")
    return "\n".join(rows) if len(rows) > 1 else ""


def default_routers() -> list[str]:
    """Every N-model router that learns from embeddings (or nothing) and needs no model descriptions (RouterBench's
    pool has none): not the LM fine-tune, not the description router (``bench/description_lomo.py``)."""
    return [n for n in multimodel_router_names() if issubclass(cls := multimodel_router_class(n), FeatureRouter)
            and not cls.needs_descriptions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default=",".join(POOLS))
    parser.add_argument("--routers", default=",".join(default_routers()))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", type=Path, default=PNG, help="where the curves go")
    parser.add_argument("--json-out", type=Path, default=JSON_OUT, help="where the reports go")
    parser.add_argument("--leave-tasks-out", type=int, metavar="K",
                        help="also: llmrouter's tasks (train+test) dealt into K folds, out-of-fold predictions pooled")
    parser.add_argument("--embedder", type=Path, action="append", default=[], metavar="DIR",
                        help="also run every router on this sentence-transformers directory's vectors (repeatable)")
    args = parser.parse_args()
    embedder = CachedEmbedder(build_embedder(EmbedderConfig(model=DEFAULT_EMBEDDER)), ROOT / EMBEDDING_CACHE_DIR)
    others = {path.name: CachedEmbedder(build_embedder(sentence_transformers_config(path, None)),
                                        ROOT / EMBEDDING_CACHE_DIR) for path in args.embedder}
    names = [n for n in args.routers.split(",") if n]
    panels, out = [], {}
    for pool_name in [p for p in args.pools.split(",") if p]:
        pool = load_pool(pool_name, data_dir())
        for note in pool.notes:
            log(f"{pool_name}: {note}")
        # embedded (or read from the cache) up front, so "fit s" times the fit, not a first embedding
        runs = []
        for suffix, vectors in [("", embedder), *((f"@{label}", other) for label, other in others.items())]:
            vectors.embed(list(pool.train.queries) + list(pool.test.queries))
            for name in names:
                _, run = fit_and_predict(name, pool.train, pool.test, vectors)
                log(f"{pool_name}: {name}{suffix} fitted in {run.fit_seconds:.1f}s")
                runs.append(replace(run, name=run.name + suffix) if suffix else run)
        modes: list[BootstrapMode] = ["clusters", "stratified"]
        for mode in modes:
            reports = evaluate(runs, pool.test, args.resamples, mode, args.seed)
            title = (f"{pool_name}: test split, {pool.test.n_queries} queries, {pool.test.n_models} models, "
                     f"{len(set(pool.test.task_names))} tasks")
            print(table(title, reports), "\n", flush=True)
            differences = embedder_differences(reports, runs, pool.test, args.resamples, mode, args.seed)
            if differences:
                print(f"{pool_name}: other embedders, paired with MiniLM ({mode})\n{differences}\n", flush=True)
            out[f"{pool_name}/{mode}"] = [r.model_dump(mode="json") for r in reports]
            if mode == "clusters":
                panels.append(PlotPanel(f"{pool_name} test ({pool.test.n_queries} queries)", reports,
                                        pool.test.models, pool.test.quality.mean(axis=0),
                                        pool.test.cost.mean(axis=0)))
        if args.leave_tasks_out and pool_name == "llmrouter":
            data = MultiModelDataset.concat([pool.train, pool.test])
            lto = [leave_tasks_out(name, data, args.leave_tasks_out, embedder, seed=args.seed) for name in names]
            reports = evaluate(lto, data, args.resamples, "clusters", args.seed)
            print(table(f"{pool_name}: leave tasks out, {args.leave_tasks_out} folds over "
                        f"{len(set(data.task_names))} tasks, {data.n_queries} queries", reports), "\n", flush=True)
            out[f"{pool_name}/leave_tasks_out"] = [r.model_dump(mode="json") for r in reports]
    log(f"wrote {plot_multimodel(panels, args.png)}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=1))
    log(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
