"""What int8 costs the routing: the shipped routers on float32 and int8 vectors of the same encoder.

The artifacts were fitted on float32 MiniLM vectors. ``quantize: int8`` (ONNX Runtime, dynamic, per-channel
int8 weights) computes other vectors, so a query whose score lies near its router's threshold may go the other
way. This measures, on the whole test split (MMLU + GSM8K, every query with both models' outcomes), for every
artifact ``serve_config.yaml`` serves with the gadget defence (whole query and windows embedded by the same
runtime, as routing does):

* how far the vectors move (cosine to float32) and how many decisions at the artifact's threshold flip;
* the large-model share and the quality at that threshold, float32 vs int8, and their paired difference;
* APGR (the whole cost-quality curve), float32 vs int8, and the paired difference.

The shipped artifacts have seen every domain. ``--unseen K`` also deals the 41 domains of train + test into K
folds and fits Hybrid and blend (undefended, their shipped settings) on float32 vectors of the other folds'
domains, then routes each held-out fold's queries on float32 and on int8 vectors: the same figures on
domains the router never saw, pooled over the folds.

Intervals are 95%, paired (both runtimes on the same draw), and resample domains (``task_name``: the MMLU
subjects and GSM8K) and then queries within them: which domains traffic comes from is the largest spread.
Speed is measured side by side in ``bench/route_throughput.py --runtimes``.

    python bench/embedder_quantisation.py [--unseen 5] [--bootstrap 1000] [--threads 2]
        [--out bench/out/embedder_quantisation.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

#: the artifacts serve_config.yaml serves, with the defence on
SHIPPED = {"blend (default)": "artifacts/blend_defended", "hybrid_llm": "artifacts/hybrid_llm_defended",
           "mf": "artifacts/mf_defended", "domain_prior": "artifacts/domain_prior_defended"}
TEST = ["mmlu_test.jsonl", "gsm8k_test.jsonl"]
EMBEDDER = ROOT / "models" / "all-minilm-l6-v2"


def embedders(threads: int) -> dict[str, Any]:
    from shipped_routing import Memo

    from routers.engines import EmbedderConfig, build_embedder

    base = {"model": str(EMBEDDER), "backend": "onnx", "num_threads": threads, "max_batch_size": 64}
    return {form: Memo(build_embedder(EmbedderConfig(**base, quantize=form))) for form in ("none", "int8")}


def predictions_of(artifact: str, embedder: Any, test: Any) -> Any:
    from routers.base import read_artifact_manifest
    from routers.evaluation.generalisation import predict
    from routers.registry import router_class

    directory = ROOT / artifact
    router = router_class(read_artifact_manifest(directory)["router"]).load(directory)
    router.bind_engines(embedder=embedder)
    return predict(router, test)


def figures(predictions: Any) -> dict[str, float]:
    from routers.evaluation.generalisation import curve_metrics

    chosen = np.where(predictions.use_large, predictions.large, predictions.small)
    return {"large_share": float(predictions.use_large.mean()), "quality": float(chosen.mean()),
            "apgr": float(curve_metrics(predictions)["apgr"])}


def paired(reference: Any, candidate: Any, n_resamples: int) -> dict[str, dict[str, float | None]]:
    """Each figure for both runtimes and their difference (int8 - float32) on the same resamples of domains."""
    from routers.evaluation.bootstrap import cluster_resample_indices, percentile_interval

    candidate_figures = figures(candidate)
    point = {k: (v, candidate_figures[k]) for k, v in figures(reference).items()}
    deltas: dict[str, list[float]] = {k: [] for k in point}
    for indices in cluster_resample_indices(list(reference.tasks), n_resamples, seed=0):
        ref, cand = figures(reference.take(indices)), figures(candidate.take(indices))
        for key, values in deltas.items():
            values.append(cand[key] - ref[key])
    out = {}
    for key, (ref_value, cand_value) in point.items():
        low, high = percentile_interval(np.asarray(deltas[key]))
        out[key] = {"float32": ref_value, "int8": cand_value, "delta": cand_value - ref_value, "low": low,
                    "high": high}
    return out


def comparison_row(artifact: str | None, reference: Any, candidate: Any, n_resamples: int) -> dict[str, Any]:
    """One table row: how many decisions int8 flips, the largest score change, and the paired figures."""
    return {"artifact": artifact, "n": len(reference),
            "flips": int((reference.use_large != candidate.use_large).sum()),
            "max_score_diff": float(np.abs(reference.scores - candidate.scores).max()),
            **paired(reference, candidate, n_resamples)}


def unseen_rows(memos: dict[str, Any], n_folds: int, n_resamples: int) -> dict[str, Any]:
    """Hybrid and blend fitted per fold on float32 vectors of the other domains, routing the held-out
    domains' queries on float32 and on int8 vectors (``--unseen``)."""
    from eval_routers import cached_embedder, load_split

    from routers.config import load_config_file
    from routers.data import RoutingDataset
    from routers.evaluation.generalisation import Predictions, group_folds, predict
    from routers.registry import router_class

    train, test = load_split("train", False), load_split("test", False)
    pool = RoutingDataset(train.examples + test.examples, train.llm_data)
    float32 = cached_embedder(ROOT / "configs" / "routers" / "hybrid_llm.yaml")  # the benches' vector cache
    float32.embed(pool.queries)
    params = {"hybrid_llm": load_config_file(ROOT / "configs" / "routers" / "hybrid_llm.yaml").router_params(),
              "blend": {}}
    rows: dict[str, Any] = {}
    for name, settings in params.items():
        parts: dict[str, list[Any]] = {"none": [], "int8": []}
        for fold in group_folds(pool, n_folds, seed=0):
            router = router_class(name)({**settings, "seed": 0}, dict(pool.llm_data))
            router.bind_engines(embedder=float32)
            router.fit(pool.subset(fold.fit_indices))
            held_out = pool.subset(fold.eval_indices)
            for form, predictions in parts.items():
                router.bind_engines(embedder=float32 if form == "none" else memos[form])
                predictions.append(predict(router, held_out))
        reference, candidate = (Predictions.concatenate(parts[form]) for form in ("none", "int8"))
        rows[f"{name} (unseen domains, {n_folds} folds)"] = comparison_row(None, reference, candidate, n_resamples)
    return rows


def vector_agreement(memos: dict[str, Any], queries: list[str]) -> dict[str, float]:
    reference, candidate = (memos[form].embed(queries) for form in ("none", "int8"))
    cosine = (reference * candidate).sum(1)
    return {"cosine_mean": float(cosine.mean()), "cosine_p1": float(np.percentile(cosine, 1)),
            "cosine_min": float(cosine.min())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unseen", type=int, default=0, metavar="K",
                        help="also Hybrid and blend fitted on float32 vectors leaving K folds of domains out")
    parser.add_argument("--out", default="bench/out/embedder_quantisation.json")
    args = parser.parse_args(argv)

    from routers.data import RoutingDataset, data_dir, load_llm_data

    llm_data = load_llm_data(data_dir() / "llm_candidates.json")
    test = RoutingDataset.from_files([data_dir() / name for name in TEST], llm_data)
    memos = embedders(args.threads)
    started = time.perf_counter()
    rows: dict[str, Any] = {}
    for label, artifact in SHIPPED.items():
        reference, candidate = (predictions_of(artifact, memos[form], test) for form in ("none", "int8"))
        rows[label] = comparison_row(artifact, reference, candidate, args.bootstrap)
    if args.unseen:
        rows.update(unseen_rows(memos, args.unseen, args.bootstrap))
    agreement = vector_agreement(memos, [e.query for e in test.examples])
    seconds = time.perf_counter() - started

    print(f"test split: {len(test)} queries, {len(set(reference.tasks))} domains; {args.bootstrap} resamples of "
          f"domains, then queries; {seconds:.0f} s")
    print(f"whole-query vectors, int8 vs float32: cosine mean {agreement['cosine_mean']:.4f}, 1st percentile "
          f"{agreement['cosine_p1']:.4f}, min {agreement['cosine_min']:.4f}")
    print("| router (artifact) | flips | large share f32 / int8 | quality f32 / int8 | quality delta [95%] "
          "| APGR f32 / int8 | APGR delta [95%] |")
    print("|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        share, quality, apgr = row["large_share"], row["quality"], row["apgr"]
        name = label if row["artifact"] is None else f"{label} (`{row['artifact']}`)"
        print(f"| {name} | {row['flips']} of {row['n']} ({row['flips'] / row['n']:.1%}) "
              f"| {share['float32']:.3f} / {share['int8']:.3f} | {quality['float32']:.4f} / {quality['int8']:.4f} "
              f"| {quality['delta']:+.4f} [{quality['low']:+.4f}, {quality['high']:+.4f}] "
              f"| {apgr['float32']:.3f} / {apgr['int8']:.3f} | {apgr['delta']:+.4f} [{apgr['low']:+.4f}, "
              f"{apgr['high']:+.4f}] |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n_test": len(test), "bootstrap": args.bootstrap, "vectors": agreement,
                               "routers": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
