"""Benchmark the Hybrid LLM router against the reference routers on the shipped routing data.

    python bench/eval_routers.py                 # MMLU + GSM8K, tune on a validation split of train
    python bench/eval_routers.py --quick         # an MMLU subset, for a fast check
    python bench/eval_routers.py --routers hybrid_llm,random,oracle --no-tune

Protocol (the test files are touched once, at the end):
1. hold out ``--val-fraction`` of TRAIN as a validation split;
2. fit one Hybrid router per grid point (label mode / tau, hidden sizes, L2 penalty) on the rest of
   train and keep the grid point with the best validation APGR;
3. refit that configuration on all of train (its default threshold is calibrated there), and evaluate
   it and the baselines (random, smallest, largest, oracle) on TEST.

Prints the table (AUC, APGR, CPT50/80/95, large share, quality, cost) and writes
``bench/out/eval_routers.json`` and ``bench/out/curves.png``. Query embeddings come from the disk-cached
embedder (``.cache/embeddings``), with the embedder settings of ``--config`` (the shipped router's), so
a second run re-embeds nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from routers.base import Router
from routers.cli import DEFAULT_EMBEDDER, EMBEDDING_CACHE_DIR, format_table
from routers.config import load_config_file
from routers.data import RoutingDataset, data_dir, load_llm_data
from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import CachedEmbedder
from routers.evaluation import evaluate_router, evaluate_routers
from routers.evaluation.plot import plot_curves
from routers.progress import log, set_quiet
from routers.registry import canonical_name, router_class

DEFAULT_ROUTERS = "hybrid_llm,random,smallest_llm,largest_llm,oracle"
QUICK_TRAIN, QUICK_TEST = 2000, 500

# Label settings: the paper's modes; tau spans near-hard (0.1) to near-linear in the gap (1.0). The
# transformed mode is not in the grid: with 0/1 correctness the gap is -1/0/+1 and t* = 0 (any t >= 1
# makes every label 1), so its labels equal the deterministic ones.
LABEL_GRID: list[dict[str, Any]] = [
    {"router_mode": "deterministic"},
    {"router_mode": "probabilistic", "router_tau": 0.1},
    {"router_mode": "probabilistic", "router_tau": 0.5},
    {"router_mode": "probabilistic", "router_tau": 1.0},
]
# Per-query 0/1 correctness is a very noisy target for a 384-d sentence embedding: small, strongly
# L2-penalised MLPs trained for a fixed 30 epochs beat the seed's [128, 64] (which memorises the noise),
# and a fixed epoch count keeps each grid point to seconds on a CPU.
HIDDEN_GRID: list[list[int]] = [[16], [64]]
ALPHA_GRID: list[float] = [1.0, 10.0]
FIT_SETTINGS: dict[str, Any] = {"max_iter": 30, "early_stopping": False, "learning_rate_init": 1e-3}


def load_split(split: str, quick: bool) -> RoutingDataset:
    llm_data = load_llm_data(data_dir() / "llm_candidates.json")  # `llmrouter data get routellm`
    tasks = ["mmlu"] if quick else ["mmlu", "gsm8k"]
    data = RoutingDataset.from_files([data_dir() / f"{task}_{split}.jsonl" for task in tasks], llm_data)
    if quick:
        data = data.head(QUICK_TRAIN if split == "train" else QUICK_TEST)
    return data


def cached_embedder(config_path: Path) -> CachedEmbedder:
    """The shipped router's embedder settings, so the cache and the artifact agree on what a vector is."""
    config = load_config_file(config_path) if config_path.exists() else None
    embedder_cfg = (config.engines.embedder if config else None) or EmbedderConfig(model=DEFAULT_EMBEDDER)
    return CachedEmbedder(build_embedder(embedder_cfg), ROOT / EMBEDDING_CACHE_DIR)


def hybrid_grid() -> list[dict[str, Any]]:
    return [
        {**labels, "hidden_layer_sizes": hidden, "alpha": alpha, **FIT_SETTINGS}
        for labels, hidden, alpha in itertools.product(LABEL_GRID, HIDDEN_GRID, ALPHA_GRID)
    ]


def tune_hybrid(train: RoutingDataset, embedder: CachedEmbedder, val_fraction: float,
                seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the best APGR on a validation split of ``train`` (ties: the earlier point)."""
    fit_part, val_part = train.split(val_fraction, seed=seed)
    rows: list[dict[str, Any]] = []
    for params in hybrid_grid():
        started = time.time()
        router = router_class("hybrid_llm")({**params, "seed": seed}, train.llm_data).bind_engines(embedder=embedder)
        router.fit(fit_part)
        report, _ = evaluate_router(router, val_part)
        rows.append({"params": params, "val_apgr": report.apgr, "val_auc": report.auc,
                     "n_iter": router.train_metrics.get("n_iter"), "seconds": round(time.time() - started, 2)})
        log(f"  {json.dumps(params)} -> val APGR {report.apgr:.4f} ({rows[-1]['seconds']}s)")
    best = max(rows, key=lambda row: row["val_apgr"])
    return dict(best["params"]), rows


def build_routers(names: list[str], hybrid_params: dict[str, Any], train: RoutingDataset,
                  embedder: CachedEmbedder) -> list[Router]:
    routers = []
    for name in names:
        key = canonical_name(name)
        params = hybrid_params if key == "hybrid_llm" else {}
        router = router_class(key)(params, train.llm_data)
        if "embedder" in router.training_engine_roles() | router.evaluation_engine_roles():
            router.bind_engines(embedder=embedder)
        router.fit(train)
        routers.append(router)
    return routers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"MMLU only, first {QUICK_TRAIN} train / {QUICK_TEST} test queries")
    parser.add_argument("--routers", default=DEFAULT_ROUTERS, help="comma-separated router names")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/routers/hybrid_llm.yaml",
                        help="Hybrid config: embedder settings, and the hparams used with --no-tune")
    parser.add_argument("--no-tune", action="store_true", help="skip the validation grid; use --config's hparams")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)

    names = [n for n in args.routers.split(",") if n]
    train, test = load_split("train", args.quick), load_split("test", args.quick)
    embedder = cached_embedder(args.config)
    log(f"train {len(train)} / test {len(test)} queries; embedding (cached in {EMBEDDING_CACHE_DIR})")
    embedder.embed(train.queries + test.queries)

    tuning: list[dict[str, Any]] = []
    hybrid_params: dict[str, Any] = {}
    if any(canonical_name(n) == "hybrid_llm" for n in names):
        if args.no_tune:
            hybrid_params = load_config_file(args.config).router_params()
        else:
            log(f"tuning hybrid_llm on a {args.val_fraction:.0%} validation split of train "
                f"({len(hybrid_grid())} points)")
            hybrid_params, tuning = tune_hybrid(train, embedder, args.val_fraction, args.seed)
            log(f"chosen: {json.dumps(hybrid_params)}")
        hybrid_params = {**hybrid_params, "seed": args.seed}

    started = time.time()
    routers = build_routers(names, hybrid_params, train, embedder)
    results = evaluate_routers(routers, test)
    print(format_table([report for report, _ in results]))

    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": {"quick": args.quick, "n_train": len(train), "n_test": len(test), "val_fraction": args.val_fraction},
        "embedder": embedder.model_name,
        "hybrid_params": hybrid_params,
        "hybrid_train_metrics": next((r.train_metrics for r in routers if r.name == "hybrid_llm"), None),
        "tuning": tuning,
        "test": {report.router: report.to_dict() for report, _ in results},
        "seconds_fit_and_eval": round(time.time() - started, 2),
    }
    (args.out / "eval_routers.json").write_text(json.dumps(summary, indent=2, default=float))
    data_name = "MMLU subset" if args.quick else "MMLU + GSM8K"
    plot_curves(results, args.out / "curves.png", title=f"routers on {data_name} test")
    log(f"wrote {args.out / 'eval_routers.json'} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
