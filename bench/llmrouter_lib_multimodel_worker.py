"""Runs inside ``.venv-llmrouter-lib`` (``scripts/llmrouter_lib_env.sh``): llmrouter-lib's N-model routers.

    .venv-llmrouter-lib/bin/python bench/llmrouter_lib_multimodel_worker.py JOB_DIR

Started by ``bench/llmrouter_lib_multimodel.py``, which writes ``JOB_DIR/manifest.json`` and, per pool, the
training quality and cost matrices, the training and test embeddings (``.npy``) and the cost weights and
routers to run. Nothing pickled crosses between the two venvs; this script imports nothing of this project, only
numpy, torch, ``llmrouter`` and the YAML/build helpers of ``bench/llmrouter_lib_worker.py`` (same folder).

The lib's KNNRouter and MLPRouter are classifiers: each builds its label as the best model of a training
query (``groupby("query")["performance"].idxmax()`` over the routing JSONL rows, the first row among ties)
and predicts that label. Neither predicts a per-model performance, so two traces are taken, both through
the lib's own constructor and trainer:

* ``proba``: one fit on the lib's own label (``performance`` = the task score); the per-model class
  probabilities on the test queries (kNN: ``predict_proba``, the neighbours' vote shares; MLP: softmax of
  the logits; 0 for a model that is never a label) are written back; the caller sweeps ``cost=L`` over them;
* ``relabel``: for each cost weight L, the rows' ``performance`` is the utility quality - L x cost (the call's
  own training cost) and the router is refitted; the lib's own decision on the test queries (``predict`` /
  logits argmax) is that weight's operating point. L = 0 is the lib's label itself.

Rows of a query are written in the order ``spec["ties"]`` names (``row_order``): the lib's first-row
tie-break then gives ties (with 0/1 scores, most queries have several best models) to the cheaper model
(``cheap``) or to the stronger one (``strong``). Writes ``JOB_DIR/out/<pool>/<router>.proba.npy`` (n_test, m),
``<router>.relabel.npy`` (n_weights, n_test) model column indices, and ``JOB_DIR/out/results.json`` (times).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))


# --- pure numpy/json: the lib's input (tested from the project venv) ----------------------------------------
def row_order(train_cost: np.ndarray, train_quality: np.ndarray | None = None, ties: str = "cheap") -> list[int]:
    """Model columns in the order a query's rows are written: the lib's ``idxmax`` keeps the first best row,
    so this decides its label among tied models. ``cheap``: cheapest mean training cost first (ties go to
    the cheaper model); ``strong``: highest mean training quality first, then the cheaper (ties go to the
    stronger model). Equal keys keep column order."""
    mean_cost = np.asarray(train_cost, dtype=np.float64).mean(axis=0)
    columns = np.arange(len(mean_cost))
    if ties == "cheap":
        order = np.lexsort((columns, mean_cost))
    elif ties == "strong":
        if train_quality is None:
            raise ValueError("ties='strong' needs the training quality")
        mean_quality = np.asarray(train_quality, dtype=np.float64).mean(axis=0)
        order = np.lexsort((columns, mean_cost, -mean_quality))
    else:
        raise ValueError(f"ties must be 'cheap' or 'strong', got {ties!r}")
    return [int(j) for j in order]


def routing_rows(queries: list[str], task_names: list[str], models: list[str], quality: np.ndarray,
                 cost: np.ndarray, weight: float, order: list[int]) -> list[dict[str, Any]]:
    """LLMRouter routing JSONL rows, one per (query, model) in ``order``: ``performance`` = quality - weight x
    cost (weight 0: the task score itself), ``embedding_id`` = the query's row in the embedding tensor."""
    quality, cost = np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    rows = []
    for i, query in enumerate(queries):
        for j in order:
            rows.append({"task_name": task_names[i], "query": query, "model_name": models[j],
                         "performance": float(quality[i, j] - weight * cost[i, j]), "embedding_id": i})
    return rows


def label_of_rows(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The lib's label per query, as its routers compute it (first row of highest performance): for tests."""
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        q = row["query"]
        if q not in best or row["performance"] > best[q][0]:
            best[q] = (row["performance"], row["model_name"])
    return {q: name for q, (_, name) in best.items()}


def spread_columns(probabilities: np.ndarray, classes: list[str], models: list[str]) -> np.ndarray:
    """(n, k) class probabilities as (n, m) in ``models`` order; 0 for a model that is no class."""
    out = np.zeros((len(probabilities), len(models)))
    for c, name in enumerate(classes):
        out[:, models.index(name)] = probabilities[:, c]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def unique_queries(queries: list[str]) -> list[str]:
    """The lib groups rows by query text: distinct training rows must have distinct texts. Repeats get a
    zero-width suffix that changes nothing the lib reads (it reads the embedding by ``embedding_id``)."""
    seen: dict[str, int] = {}
    out = []
    for q in queries:
        n = seen.get(q, 0)
        seen[q] = n + 1
        out.append(q if n == 0 else f"{q}\u200b#{n}")
    return out


# --- the lib ---------------------------------------------------------------------------------------------
def fit(kind: str, job: Path, pool: dict[str, Any], spec: dict[str, Any], rows: list[dict[str, Any]],
        workdir: Path, tag: str) -> tuple[Any, Any, float]:
    import torch
    from llmrouter_lib_worker import build, router_yaml

    train = workdir / f"{spec['id']}.{tag}.jsonl"
    with train.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    split = {"train": str(train.relative_to(job)), "train_emb": pool["train_emb"]}
    run_spec = {"id": f"{spec['id']}.{tag}", "kind": kind, "hparam": spec["hparam"]}
    yaml_path = router_yaml(job, split, run_spec, workdir, job / pool["llm_data"])
    torch.manual_seed(int(spec.get("seed", 0)))  # MLPRouter's init and shuffling; the lib seeds nothing itself
    np.random.seed(int(spec.get("seed", 0)))
    started = time.perf_counter()
    router, trainer = build(kind, yaml_path)
    trainer.train()
    return router, trainer, time.perf_counter() - started


def class_scores(kind: str, router: Any, trainer: Any, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per-class scores (probabilities) and the class names, for an (n, d) matrix in one call."""
    import torch

    if kind == "mlp":
        model = trainer.model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(x).float()).numpy()
        return softmax(logits), [router.idx_to_model[i] for i in range(len(router.idx_to_model))]
    return trainer.model.predict_proba(x), [str(c) for c in trainer.model.classes_]


def lib_choice(kind: str, router: Any, trainer: Any, x: np.ndarray, models: list[str]) -> np.ndarray:
    """The lib's own decision (kNN ``predict``, MLP logits argmax) as model column indices."""
    import torch

    if kind == "mlp":
        with torch.no_grad():
            idx = trainer.model.predict(torch.from_numpy(x).float()).numpy()
        names = [router.idx_to_model[int(i)] for i in idx]
    else:
        names = [str(n) for n in trainer.model.predict(x)]
    return np.array([models.index(n) for n in names], dtype=np.int64)


def run_router(job: Path, pool: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    folder = job / pool["id"]
    quality, cost = np.load(folder / "train_quality.npy"), np.load(folder / "train_cost.npy")
    x = np.load(job / pool["test_emb"])
    models, order = pool["models"], row_order(cost, quality, spec.get("ties", "cheap"))
    queries = unique_queries(json.loads((folder / "train_queries.json").read_text()))
    tasks = json.loads((folder / "train_tasks.json").read_text())
    workdir = job / "work" / pool["id"]
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = job / "out" / pool["id"]
    out_dir.mkdir(parents=True, exist_ok=True)

    rows = routing_rows(queries, tasks, models, quality, cost, 0.0, order)
    router, trainer, fit_seconds = fit(kind, job, pool, spec, rows, workdir, "w0")
    started = time.perf_counter()
    scores, classes = class_scores(kind, router, trainer, x)
    batch_seconds = time.perf_counter() - started
    np.save(out_dir / f"{spec['id']}.proba.npy", spread_columns(scores, classes, models))
    default = lib_choice(kind, router, trainer, x, models)
    record: dict[str, Any] = {"pool": pool["id"], "router": spec["id"], "kind": kind, "hparam": spec["hparam"],
                              "ties": spec.get("ties", "cheap"), "fit_seconds": fit_seconds,
                              "batch_seconds": batch_seconds, "n_test": len(x),
                              "classes": classes, "relabel_fit_seconds": []}
    choices = []
    weights = pool["relabel_weights"].get(kind, [])
    for k, weight in enumerate(weights):
        if weight == 0.0:
            choices.append(default)
            record["relabel_fit_seconds"].append(fit_seconds)
            continue
        rows = routing_rows(queries, tasks, models, quality, cost, float(weight), order)
        r, t, seconds = fit(kind, job, pool, spec, rows, workdir, f"w{k}")
        choices.append(lib_choice(kind, r, t, x, models))
        record["relabel_fit_seconds"].append(seconds)
        print(f"[worker] {pool['id']} {spec['id']}: weight {k + 1}/{len(weights)} "
              f"fitted in {seconds:.1f}s", file=sys.stderr, flush=True)
    if choices:
        np.save(out_dir / f"{spec['id']}.relabel.npy", np.stack(choices))
    np.save(out_dir / f"{spec['id']}.default.npy", default)
    return record


def main(argv: list[str]) -> int:
    from llmrouter_lib_worker import open_job, write_results

    opened = open_job(argv, __doc__)
    if opened is None:
        return 2
    job, manifest, results = opened
    for pool in manifest["pools"]:
        for spec in pool["routers"]:
            record = run_router(job, pool, spec)
            results["runs"].append(record)
            print(f"[worker] {pool['id']} {spec['id']}: fit {record['fit_seconds']:.1f}s, "
                  f"{len(record['relabel_fit_seconds'])} relabelled fits {sum(record['relabel_fit_seconds']):.1f}s",
                  file=sys.stderr, flush=True)
    return write_results(job, results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
