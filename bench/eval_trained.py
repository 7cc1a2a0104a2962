"""Routing quality of the shipped (trained) router artifacts against the baselines, on one seeded subset
of the shared test split, side by side:

    python bench/eval_trained.py [--queries 300] [--routers hybrid_llm,causallm_router,policy_router]

AutoMix needs the small model's verification samples for every test query; the shipped artifact reports
its held-out figures in artifacts/automix/build_report.json (re-sample the test split with
``train_jobs.automix`` to evaluate it here). Writes bench/out/eval_trained.json and eval_trained.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEST = ["mmlu_test.jsonl", "gsm8k_test.jsonl"]  # in the data directory: `llmrouter data get routellm`


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--routers", default="hybrid_llm,causallm_router,policy_router")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench/out/eval_trained.json"))
    args = parser.parse_args()

    from routers.cli import format_table
    from routers.data import RoutingDataset, data_dir, load_llm_data
    from routers.engines import build_embedder
    from routers.engines.cache import CachedEmbedder
    from routers.evaluation import evaluate_routers
    from routers.evaluation.plot import plot_curves
    from routers.registry import router_class

    llm_data = load_llm_data(data_dir() / "llm_candidates.json")
    test = RoutingDataset.from_files([data_dir() / name for name in TEST], llm_data)
    rng = np.random.default_rng(args.seed)
    test = test.subset(sorted(rng.choice(len(test), size=min(args.queries, len(test)), replace=False).tolist()))
    routers = []
    for name in args.routers.split(","):
        router = router_class(name).load(ROOT / "artifacts" / name)
        if name == "hybrid_llm":
            config = router.default_embedder_config()
            config = config.model_copy(update={"model": str(ROOT / config.model)})
            router.bind_engines(embedder=CachedEmbedder(build_embedder(config), ROOT / ".cache/embeddings"))
        routers.append(router)
    for name in ("random", "oracle", "smallest_llm", "largest_llm"):
        baseline = router_class(name)({}, llm_data)
        baseline.fit(test)
        routers.append(baseline)
    results = evaluate_routers(routers, test)
    reports = [report for report, _ in results]
    print(format_table(reports))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"n_test": len(test), "seed": args.seed,
                                          "reports": [r.to_dict() for r in reports]}, indent=2, default=float))
    plot_curves(results, Path(args.out).with_suffix(".png"), title=f"shipped routers, {len(test)} test queries")
    automix = json.loads((ROOT / "artifacts/automix/build_report.json").read_text())
    held = automix.get("held_out_30pct", {})
    print(f"\nautomix (artifacts/automix/build_report.json, {held.get('n_test')} held-out GSM8K queries): "
          f"APGR {held.get('apgr')}, large share {held.get('large_share')}, delta IBC {held.get('delta_ibc')}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
