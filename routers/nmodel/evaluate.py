"""Fit N-model routers and evaluate them: on a pool's test split, or leaving tasks out.

The published pools (``routers.data.multimodel``) come as train and test splits; :func:`load_pool` reads one
from the data directory with the split hygiene it needs (LLMRouter's test repeats 119 training questions:
they are dropped). :func:`fit_and_predict` fits one router and times it; :func:`leave_tasks_out` deals the
tasks of train+test into folds and pools each router's out-of-fold predictions, so every query is judged by a
router that never saw its task. ``routers.evaluation.multimodel.evaluate_runs`` turns either into reports.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from routers.data.multimodel import MultiModelDataset, load_llmrouter, load_routerbench, read_multimodel
from routers.engines import Embedder
from routers.errors import ConfigError
from routers.evaluation.multimodel import Predictions, RouterRun
from routers.nmodel.base import MultiModelRouter
from routers.progress import log
from routers.registry import canonical_name, multimodel_router_class

PoolName = Literal["llmrouter", "routerbench"]
POOLS: tuple[str, ...] = ("llmrouter", "routerbench")


@dataclass(frozen=True)
class Pool:
    name: str
    train: MultiModelDataset
    test: MultiModelDataset
    #: what was done to the splits (dropped duplicates, skipped rows)
    notes: tuple[str, ...] = ()


def load_pool(name: str, data_dir: str | Path) -> Pool:
    """A published pool's train and test splits from the data directory."""
    if name == "llmrouter":
        train, test = load_llmrouter(data_dir, "train"), load_llmrouter(data_dir, "test")
        test, dropped = test.without_queries_in(train)
        return Pool(name, train, test, (f"{dropped} test questions also in train dropped",))
    if name == "routerbench":
        train, test = load_routerbench(data_dir, "train"), load_routerbench(data_dir, "test")
        skipped = sum(r.skipped_blank for r in (*train.reports, *test.reports))
        return Pool(name, train, test, (f"{skipped} rows with blank model cells skipped",))
    raise ConfigError(f"unknown pool {name!r}; known: {', '.join(POOLS)}")


def load_files(train: Sequence[str | Path], test: Sequence[str | Path], llm_data: str | Path | None = None) -> Pool:
    """Train and test splits from N-model files in any published form (``read_multimodel``)."""
    def read(paths: Sequence[str | Path]) -> MultiModelDataset:
        return MultiModelDataset.concat([read_multimodel(p, llm_data) for p in paths])

    train_data, test_data = read(train), read(test)
    test_data, dropped = test_data.without_queries_in(train_data)
    return Pool("files", train_data, test_data, (f"{dropped} test queries also in train dropped",))


def build(name: str, params: Mapping[str, Any] | None, embedder: Embedder | None) -> MultiModelRouter:
    router = multimodel_router_class(name)(dict(params or {}))
    return router.bind_engines(embedder)


def fit_and_predict(name: str, train: MultiModelDataset, test: MultiModelDataset, embedder: Embedder | None,
                    params: Mapping[str, Any] | None = None) -> tuple[MultiModelRouter, RouterRun]:
    """Fit router ``name`` on ``train``, predict ``test``, choose at its evaluation rule; times both steps."""
    router = build(name, params, embedder)
    started = time.perf_counter()
    router.fit(train)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    quality, cost = router.dataset_predictions(test)
    choice = router.choose(quality, cost, router.evaluation_rule)
    route_seconds = time.perf_counter() - started
    run = RouterRun(canonical_name(name), Predictions(quality, cost), choice,
                    router.evaluation_rule or f"default ({router.config.default_rule})", fit_seconds, route_seconds)
    return router, run


def task_folds(task_names: Sequence[str | None], n_folds: int, seed: int = 0) -> list[np.ndarray]:
    """The tasks dealt into ``n_folds`` folds of about equal query counts (largest task first); each fold's
    query indices."""
    labels = ["" if t is None else t for t in task_names]
    tasks = list(dict.fromkeys(labels))
    if not 2 <= n_folds <= len(tasks):
        raise ConfigError(f"leave-tasks-out needs 2 to {len(tasks)} folds (the data has {len(tasks)} tasks), "
                          f"got {n_folds}")
    random.Random(seed).shuffle(tasks)
    sizes = {t: labels.count(t) for t in tasks}
    tasks.sort(key=lambda t: sizes[t], reverse=True)
    members: list[list[str]] = [[] for _ in range(n_folds)]
    totals = [0] * n_folds
    for task in tasks:
        k = min(range(n_folds), key=lambda j: (totals[j], j))
        members[k].append(task)
        totals[k] += sizes[task]
    return [np.array([i for i, label in enumerate(labels) if label in set(fold)]) for fold in members]


def leave_tasks_out(name: str, pool: MultiModelDataset, n_folds: int, embedder: Embedder | None,
                    params: Mapping[str, Any] | None = None, seed: int = 0,
                    on_fold: Callable[[int, Sequence[str]], None] | None = None) -> RouterRun:
    """Router ``name``'s predictions on every query of ``pool`` from a fit on the other folds' tasks."""
    n, m = pool.n_queries, pool.n_models
    quality, cost, choice = np.full((n, m), np.nan), np.full((n, m), np.nan), np.zeros(n, dtype=np.int64)
    fit_seconds = route_seconds = 0.0
    for k, held_out in enumerate(task_folds(pool.task_names, n_folds, seed)):
        fit_indices = np.setdiff1d(np.arange(n), held_out)
        _, run = fit_and_predict(name, pool.subset(fit_indices.tolist()), pool.subset(held_out.tolist()),
                                 embedder, params)
        quality[held_out], cost[held_out] = run.predictions.quality, run.predictions.cost
        choice[held_out] = run.default_choice
        fit_seconds += run.fit_seconds or 0.0
        route_seconds += run.route_seconds or 0.0
        if on_fold is not None:
            on_fold(k, sorted({pool.task_names[i] or "" for i in held_out}))
        else:
            log(f"{name}: fold {k + 1}/{n_folds} done")
    return RouterRun(canonical_name(name), Predictions(quality, cost), choice, run.rule, fit_seconds, route_seconds)
