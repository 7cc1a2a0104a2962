"""Leave one model out: does the description router route to a model it was never trained on, from the model's
description and price (and a few labelled queries), without retraining?

    python bench/description_lomo.py                  # LLMRouter's pool, 9 folds, shots 0 and 25
    python bench/description_lomo.py --shots 0,10,50 --resamples 2000

For each of the pool's 9 models m: the description router (``nmodel_desc``) is fitted on the train split
without m, then m is added with ``add_model`` (its ``feature`` text, its mean training cost per call, and
``k`` of its labelled training queries for its read-out; k = 0: the description alone). Its predictions on the
test split (all 9 models) give a cost-quality curve and its AIQ. Its price is its cost line, fitted on its
training calls as every fitted model's is. Beside it, in the same fold:

- **without m**: the same description router before m is added, routing among the 8 others (what a user has
  before adding m); and kNN fitted on the 8 others, for scale;
- **kNN, retrained with m**: kNN fitted on all 9 (what a full retrain gives; the same in every fold);
- **description, trained with m**: the description router fitted on all 9.

The figure that answers the question is AIQ(description router with m added) minus AIQ(without m), per fold:
how much adding the new model this way is worth to the router that has it. Intervals: 95% percentile over
resamples of the 9 left-out models (a user's new model is one draw from that population), the folds' mean
difference each time. Embeddings come from the disk cache (``.cache/embeddings``). Writes
``bench/out/description_lomo.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from routers.cli import DEFAULT_EMBEDDER, EMBEDDING_CACHE_DIR
from routers.data.location import data_dir
from routers.data.multimodel import MultiModelDataset
from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import CachedEmbedder
from routers.evaluation.multimodel import Predictions, curve_metrics, operating_points, reference
from routers.nmodel.base import CostEstimator, MultiModelRouter
from routers.nmodel.description import DescriptionRouter, descriptions_of
from routers.nmodel.evaluate import load_pool
from routers.nmodel.routers import MultiModelKNNRouter
from routers.progress import log

JSON_OUT = ROOT / "bench" / "out" / "description_lomo.json"
#: never chosen: below every real prediction in [0, 1]
ABSENT = -1.0


def aiq_of(quality: np.ndarray, cost: np.ndarray, test: MultiModelDataset) -> float:
    points = operating_points(Predictions(quality, cost), test.quality, test.cost)
    point_quality, point_cost = points.means()
    value = curve_metrics(point_quality, point_cost, reference(test.quality, test.cost))["aiq"]
    return float("nan") if value is None else float(value)


def in_test_order(router: MultiModelRouter, test: MultiModelDataset, quality: np.ndarray,
                  cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The router's columns placed in the test data's model order; models it lacks are never chosen."""
    full_q = np.full(test.quality.shape, ABSENT)
    full_c = np.asarray(test.cost, dtype=np.float64).copy()
    for k, model in enumerate(router.models):
        j = test.model_index(model)
        full_q[:, j], full_c[:, j] = quality[:, k], cost[:, k]
    return full_q, full_c


def predictions(router: MultiModelRouter, test: MultiModelDataset) -> tuple[np.ndarray, np.ndarray]:
    return in_test_order(router, test, router.predict_quality(test.queries), router.estimate_costs(test.queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", default="0,25", help="labelled queries of the new model, comma-separated")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shots = [int(s) for s in args.shots.split(",") if s]
    embedder = CachedEmbedder(build_embedder(EmbedderConfig(model=DEFAULT_EMBEDDER)), ROOT / EMBEDDING_CACHE_DIR)
    pool = load_pool("llmrouter", data_dir())
    train, test = pool.train, pool.test
    descriptions = dict(zip(train.models, descriptions_of(train), strict=True))
    embedder.embed(list(train.queries) + list(test.queries))
    rng = np.random.default_rng(args.seed)

    started = time.perf_counter()
    knn_all = MultiModelKNNRouter().bind_engines(embedder)
    knn_all.fit(train)
    desc_all = DescriptionRouter().bind_engines(embedder)
    desc_all.fit(train)
    full = {"knn, retrained with m": aiq_of(*predictions(knn_all, test), test),
            "description, trained with m": aiq_of(*predictions(desc_all, test), test)}
    log(f"fitted on all 9 models: {full} ({time.perf_counter() - started:.0f}s)")

    folds = []
    for model in train.models:
        others = [m for m in train.models if m != model]
        train_without = train.select_models(others)
        knn = MultiModelKNNRouter().bind_engines(embedder)
        knn.fit(train_without)
        desc = DescriptionRouter().bind_engines(embedder)
        fit_started = time.perf_counter()
        desc.fit(train_without)
        fit_s = time.perf_counter() - fit_started
        directory = ROOT / "bench" / "out" / "description_lomo" / "router"
        desc.save(directory)
        column = train.model_index(model)
        # its price, as the fitted models' cost lines read theirs: USD per call against the query's tokens
        line = CostEstimator.fit(train.queries, train.cost[:, [column]])
        cost_line = (float(line.intercept[0]), float(line.slope[0]))
        fold = {"model": model, "without m": aiq_of(*predictions(desc, test), test),
                "kNN without m": aiq_of(*predictions(knn, test), test), "fit_s": round(fit_s, 1)}
        for k in shots:
            added = DescriptionRouter.load(directory).bind_engines(embedder)
            examples = None
            if k:
                picked = rng.choice(len(train), size=k, replace=False)
                examples = ([train.queries[i] for i in picked], train.quality[picked, column])
            added.add_model(model, descriptions[model], cost_line, examples)
            fold[f"description, m added ({k} shots)"] = aiq_of(*predictions(added, test), test)
        folds.append(fold)
        log(f"left out {model}: {json.dumps({k: v for k, v in fold.items() if k != 'model'}, default=str)}")

    variants = [f"description, m added ({k} shots)" for k in shots]
    table = ["| left-out model | kNN without m | description without m | " + " | ".join(variants) + " |",
             "|---|---|---|" + "---|" * len(variants)]
    for fold in folds:
        table.append(f"| {fold['model']} | {fold['kNN without m']:.4f} | {fold['without m']:.4f} | "
                     + " | ".join(f"{fold[v]:.4f}" for v in variants) + " |")
    print("\n".join(table))
    summary: dict[str, object] = {"all 9 models": full, "folds": folds}
    for variant in ["kNN without m", "without m", *variants]:
        values = np.array([f[variant] for f in folds])
        summary[f"mean AIQ: {variant}"] = float(values.mean())
    print(f"\nfitted on all 9: kNN AIQ {full['knn, retrained with m']:.4f}, description router "
          f"{full['description, trained with m']:.4f}")
    for variant in variants:
        gain = np.array([f[variant] - f["without m"] for f in folds])
        draws = rng.integers(0, len(gain), size=(args.resamples, len(gain)))
        low, high = np.percentile(gain[draws].mean(axis=1), [2.5, 97.5])
        summary[f"gain: {variant} - without m"] = {"mean": float(gain.mean()), "low": float(low), "high": float(high),
                                                   "folds_above_0": int((gain > 0).sum())}
        print(f"{variant} minus without m: {gain.mean():+.4f} [{low:+.4f}, {high:+.4f}] "
              f"(95%, resampling the left-out models); above 0 in {(gain > 0).sum()} of {len(gain)} folds")
    JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
    JSON_OUT.write_text(json.dumps(summary, indent=1, default=float))
    log(f"wrote {JSON_OUT}")


if __name__ == "__main__":
    main()
