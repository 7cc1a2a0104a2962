"""How far routing by task alone can go on the N-model pools, beside kNN: is issue 24's goal (quality at the
best single model's cost above that model's, the paired interval above 0) reachable on these test splits?

    python bench/multimodel_task_ceiling.py                 # both pools, 1000 resamples; about 1 minute
    python bench/multimodel_task_ceiling.py --pools llmrouter --resamples 200

Three references are told each test query's task, which no deployed router is:

- ``task_prior``: per task, every model's mean quality and cost on the train split's queries of that task (the
  pool's overall means for a task train lacks). An honest router could learn this much if it recognised tasks
  perfectly.
- ``task_oracle``: the same means read off the test split itself, so every task gets the model that is best on
  exactly these queries at each cost weight: the most that choosing one model per task can give here.
- ``oracle``: every query's best model (the cheapest one with the highest quality), the pool's ceiling.

``nmodel_knn`` (the best router of ``bench/multimodel_eval.py``) is fitted as there, on MiniLM vectors from the
disk cache. Every row is evaluated on the same resamples: task clusters then queries within them (``clusters``),
and queries within each task (``stratified``); "gain" is quality at the best single model's cost minus that
model's quality, paired on each resample. Writes ``bench/out/multimodel_task_ceiling.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.multimodel_eval import table
from routers.cli import DEFAULT_EMBEDDER, EMBEDDING_CACHE_DIR
from routers.data.location import data_dir
from routers.data.multimodel import MultiModelDataset
from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import CachedEmbedder
from routers.evaluation.multimodel import BootstrapMode, Predictions, RouterRun, evaluate_runs
from routers.nmodel.evaluate import POOLS, fit_and_predict, load_pool
from routers.progress import log
from routers.selection import argmax_cheapest

JSON_OUT = ROOT / "bench" / "out" / "multimodel_task_ceiling.json"


def per_task_means(source: MultiModelDataset, target: MultiModelDataset) -> Predictions:
    """Each ``target`` query gets the mean quality and cost, per model, of ``source``'s queries of its task."""
    source_tasks = np.asarray(source.task_names, dtype=object)
    overall = source.quality.mean(axis=0), source.cost.mean(axis=0)
    by_task = {}
    for task in set(source.task_names):
        rows = source_tasks == task
        by_task[task] = source.quality[rows].mean(axis=0), source.cost[rows].mean(axis=0)
    quality = np.stack([by_task.get(task, overall)[0] for task in target.task_names])
    cost = np.stack([by_task.get(task, overall)[1] for task in target.task_names])
    return Predictions(quality=quality, cost=cost)


def reference_run(name: str, predictions: Predictions) -> RouterRun:
    """A reference's default choice: its highest predicted quality, the cheapest model among equals."""
    return RouterRun(name, predictions, argmax_cheapest(predictions.quality, predictions.cost),
                     "quality=max (task told)")


def runs_for(pool_name: str, embedder: CachedEmbedder) -> tuple[list[RouterRun], MultiModelDataset]:
    pool = load_pool(pool_name, data_dir())
    for note in pool.notes:
        log(f"{pool_name}: {note}")
    embedder.embed(list(pool.train.queries) + list(pool.test.queries))
    _, knn = fit_and_predict("nmodel_knn", pool.train, pool.test, embedder)
    test = pool.test
    oracle = Predictions(quality=test.quality.astype(np.float64), cost=test.cost.astype(np.float64))
    return [knn,
            reference_run("task_prior", per_task_means(pool.train, test)),
            reference_run("task_oracle", per_task_means(test, test)),
            reference_run("oracle", oracle)], test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default=",".join(POOLS))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=JSON_OUT)
    args = parser.parse_args()
    embedder = CachedEmbedder(build_embedder(EmbedderConfig(model=DEFAULT_EMBEDDER)), ROOT / EMBEDDING_CACHE_DIR)
    out = {}
    for pool_name in [p for p in args.pools.split(",") if p]:
        runs, test = runs_for(pool_name, embedder)
        modes: list[BootstrapMode] = ["clusters", "stratified"]
        for mode in modes:
            reports = evaluate_runs(runs, test.models, test.quality, test.cost, test.task_names,
                                    n_resamples=args.resamples, seed=args.seed, mode=mode)
            title = (f"{pool_name}: test split, {test.n_queries} queries, {test.n_models} models, "
                     f"{len(set(test.task_names))} tasks; intervals resample {mode}")
            print(table(title, reports), "\n", flush=True)
            out[f"{pool_name}/{mode}"] = [r.summary() for r in reports]
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=1))
    log(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
