"""Runs inside ``.venv-llmrouter-lib`` (``scripts/llmrouter_lib_env.sh``): train and score llmrouter-lib's routers.

    .venv-llmrouter-lib/bin/python bench/llmrouter_lib_worker.py JOB_DIR

Started by ``bench/llmrouter_lib.py``, which writes ``JOB_DIR/manifest.json`` and, per split, the training
rows (LLMRouter routing JSONL plus ``embedding_id``), the training and evaluation embeddings (``.npy``)
and the evaluation query texts (JSON). Nothing pickled crosses between the two venvs; this script
imports nothing of this project, only numpy, torch and ``llmrouter``.

Each router is built the way the lib's docs show (``Router(yaml_path)`` then ``Trainer(router).train()``)
from a YAML written here, whose ``data_path.query_embedding_data`` points at a ``.pt`` tensor converted
from the ``.npy`` (the lib's own seam for precomputed embeddings; ``torch.load`` reads a plain tensor).
At routing time the lib calls ``llmrouter.utils.get_longformer_embedding`` (allenai/longformer-base-4096
from the HF hub), which each router module imports by name; it is replaced in those modules by a lookup
of the same precomputed vectors, so ``route_single`` runs unchanged otherwise (it still reloads the
trained model from disk on every call, as the lib does).

Scores written back are the *small model's suitability* (higher = the small model is fine):

* hybrid: the lib's ``router_score``, ``clip(MLPRegressor.predict(x), 0, 1)`` (label 1 = small at least as
  good), so already that direction; ``hybrid_raw`` rows keep the unclipped output;
* mlp / knn: classifiers over "the best model of the query"; the score is the probability of the small
  model's class (softmax of the MLP logits; the share of the k neighbours voting small).

Writes ``JOB_DIR/out/<split>/<router>.scores.npy`` and ``.large.npy`` (the lib's own decision: 1 = large)
and ``JOB_DIR/out/results.json`` (times, settings, checks).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Nothing outside is reachable (or needed): litellm, imported by the lib, otherwise retries fetching its
# model price map on every start; the hub is never asked for the lib's Longformer (it is patched out).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("hybrid", "mlp", "knn")


# --- pure numpy: score mapping (tested from the project venv) --------------------------------------
def softmax_column(logits: np.ndarray, column: int) -> np.ndarray:
    """Probability of class ``column`` from (n, k) logits, computed stably."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, column] / e.sum(axis=1)


def hybrid_router_score(raw: np.ndarray) -> np.ndarray:
    """The lib's HybridLLMRouter ``router_score``: ``max(0, min(1, predict(x)))``."""
    return np.clip(np.asarray(raw, dtype=np.float64), 0.0, 1.0)


def class_column(classes: list[str], small: str) -> int:
    if small not in classes:
        raise ValueError(f"the small model {small!r} is never the best model in training ({classes})")
    return classes.index(small)


# --- the lib ---------------------------------------------------------------------------------------
def write_yaml(path: Path, cfg: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def router_yaml(job: Path, split: dict[str, Any], spec: dict[str, Any], workdir: Path, llm_data: Path) -> Path:
    """A training/testing YAML for one router on one split, in the lib's format (absolute paths)."""
    import torch

    pt = workdir / "query_embeddings.pt"
    if not pt.exists():
        torch.save(torch.from_numpy(np.load(job / split["train_emb"])), pt)
    model_file = workdir / f"{spec['id']}.{'pt' if spec['kind'] == 'mlp' else 'pkl'}"
    cfg = {
        "data_path": {"routing_data_train": str(job / split["train"]), "query_embedding_data": str(pt),
                      "llm_data": str(llm_data)},
        "model_path": {"ini_model_path": "", "save_model_path": str(model_file), "load_model_path": str(model_file)},
        **spec.get("cfg", {}),
        "hparam": dict(spec["hparam"]),
    }
    return write_yaml(workdir / f"{spec['id']}.yaml", cfg)


def build(kind: str, yaml_path: Path) -> tuple[Any, Any]:
    from llmrouter.models import (
        HybridLLMRouter,
        HybridLLMTrainer,
        KNNRouter,
        KNNRouterTrainer,
        MLPRouter,
        MLPTrainer,
    )

    router_cls, trainer_cls = {"hybrid": (HybridLLMRouter, HybridLLMTrainer), "mlp": (MLPRouter, MLPTrainer),
                               "knn": (KNNRouter, KNNRouterTrainer)}[kind]
    router = router_cls(yaml_path=str(yaml_path))
    return router, trainer_cls(router=router, device="cpu")


def batch_scores(kind: str, router: Any, trainer: Any, x: np.ndarray,
                 small: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(small suitability, raw model output, the lib's decision 1 = large) for an (n, d) matrix, in one call."""
    import torch

    if kind == "hybrid":
        raw = np.asarray(trainer.model.predict(x), dtype=np.float64)
        score = hybrid_router_score(raw)
        return score, raw, (score < router.router_threshold).astype(np.uint8)
    if kind == "mlp":
        model = trainer.model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(x).float()).numpy()
        names = [router.idx_to_model[i] for i in range(len(router.idx_to_model))]
        score = softmax_column(logits, class_column(names, small))
        chosen = np.asarray(names)[logits.argmax(axis=1)]
        return score, logits[:, 0], (chosen != small).astype(np.uint8)
    proba = trainer.model.predict_proba(x)
    classes = [str(c) for c in trainer.model.classes_]
    score = proba[:, class_column(classes, small)]
    chosen = np.asarray(classes)[proba.argmax(axis=1)]
    return score, score, (chosen != small).astype(np.uint8)


def patch_embedder(queries: list[str], x: np.ndarray) -> None:
    """Route-time embeddings: the lib's Longformer call replaced by a lookup of the precomputed vectors."""
    import llmrouter.models.hybrid_llm.router as hybrid_module
    import llmrouter.models.knnrouter.router as knn_module
    import llmrouter.models.mlprouter.router as mlp_module
    import torch

    table = {q: torch.from_numpy(x[i]) for i, q in enumerate(queries)}

    def lookup(texts: Any) -> Any:
        if isinstance(texts, str):
            return table[texts]
        return torch.stack([table[t] for t in texts])

    for module in (hybrid_module, knn_module, mlp_module):
        module.get_longformer_embedding = lookup


def single_route_check(kind: str, router: Any, queries: list[str], score: np.ndarray, large: np.ndarray,
                       small: str) -> dict[str, Any]:
    """Time the lib's ``route_single`` per query and check it agrees with the batch scores/decisions."""
    started = time.perf_counter()
    outputs = [router.route_single({"query": q}) for q in queries]
    seconds = time.perf_counter() - started
    n = len(queries)
    decision_match = float(np.mean([(o["model_name"] != small) == bool(large[i]) for i, o in enumerate(outputs)]))
    out = {"n": n, "route_single_ms": 1000.0 * seconds / max(n, 1), "decision_agreement": decision_match}
    if kind == "hybrid":
        out["max_score_diff"] = float(max(abs(o["router_score"] - score[i]) for i, o in enumerate(outputs)))
    return out


def predict_only_ms(kind: str, trainer: Any, x: np.ndarray) -> float:
    """The fitted model's own predict on one row at a time (no per-call reload), per query."""
    import torch

    started = time.perf_counter()
    for row in x:
        if kind == "mlp":
            with torch.no_grad():
                trainer.model(torch.from_numpy(row[None, :]).float())
        elif kind == "hybrid":
            trainer.model.predict(row[None, :])
        else:
            trainer.model.predict_proba(row[None, :])
    return 1000.0 * (time.perf_counter() - started) / max(len(x), 1)


def run_one(job: Path, manifest: dict[str, Any], split: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    seed = int(manifest.get("seed", 0))
    torch.manual_seed(seed)  # MLPRouter's init and shuffling; the lib seeds nothing itself
    np.random.seed(seed)
    workdir = job / "work" / split["id"]
    workdir.mkdir(parents=True, exist_ok=True)
    yaml_path = router_yaml(job, split, spec, workdir, job / manifest["llm_data"])
    started = time.perf_counter()
    router, trainer = build(spec["kind"], yaml_path)
    built = time.perf_counter()
    trainer.train()
    trained = time.perf_counter()
    x = np.load(job / split["eval_emb"])
    small = manifest["small"]
    started_batch = time.perf_counter()
    score, raw, large = batch_scores(spec["kind"], router, trainer, x, small)
    batch_seconds = time.perf_counter() - started_batch
    out_dir = job / "out" / split["id"]
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / f"{spec['id']}.scores.npy", score)
    np.save(out_dir / f"{spec['id']}.raw.npy", raw)
    np.save(out_dir / f"{spec['id']}.large.npy", large)
    record: dict[str, Any] = {
        "split": split["id"], "router": spec["id"], "kind": spec["kind"], "n_eval": len(score),
        "build_seconds": built - started, "train_seconds": trained - built, "fit_seconds": trained - started,
        "batch_seconds": batch_seconds, "large_share_lib_decision": float(large.mean()),
    }
    if spec["kind"] == "hybrid":
        record["label_mean"] = float(np.mean(router.router_label_list))
        record["clipped_share"] = float(np.mean((raw <= 0.0) | (raw >= 1.0)))
        record["n_iter"] = int(getattr(trainer.model, "n_iter_", -1))
    if split.get("time_single"):
        n = int(manifest.get("per_query_n", 200))
        queries = json.loads((job / split["eval_queries"]).read_text())[:n]
        patch_embedder(queries, x[: len(queries)])
        record["single"] = single_route_check(spec["kind"], router, queries, score, large, small)
        record["single"]["predict_only_ms"] = predict_only_ms(spec["kind"], trainer, x[: len(queries)])
    return record


def open_job(argv: list[str], usage: str | None) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """A worker's start: the job folder, its manifest and the results so far (the versions that ran), with
    the lib imported and torch's threads set; None, with ``usage`` printed, for bad arguments."""
    if len(argv) != 1:
        print(usage, file=sys.stderr)
        return None
    job = Path(argv[0]).resolve()
    manifest = json.loads((job / "manifest.json").read_text())
    from importlib.metadata import version

    import llmrouter.models  # noqa: F401  # imported once here, so no router's fit time includes it
    import torch

    torch.set_num_threads(int(manifest.get("threads", 1)))
    versions = {p: version(p) for p in ("llmrouter-lib", "torch", "scikit-learn", "numpy")}
    return job, manifest, {"versions": versions, "runs": []}


def write_results(job: Path, results: dict[str, Any]) -> int:
    (job / "out").mkdir(exist_ok=True)
    (job / "out" / "results.json").write_text(json.dumps(results, indent=2))
    return 0


def main(argv: list[str]) -> int:
    opened = open_job(argv, __doc__)
    if opened is None:
        return 2
    job, manifest, results = opened
    for split in manifest["splits"]:
        for spec in manifest["routers"]:
            if split["id"] != "seen" and not spec.get("unseen", True):
                continue
            record = run_one(job, manifest, split, spec)
            results["runs"].append(record)
            print(f"[worker] {split['id']} {spec['id']}: fit {record['fit_seconds']:.1f}s", file=sys.stderr, flush=True)
    return write_results(job, results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
