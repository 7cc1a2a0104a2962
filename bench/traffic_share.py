"""Does ``router-X:share=S`` send S of the traffic large? Training-score quantiles vs the app's own traffic.

    python bench/traffic_share.py                          # hybrid_llm and mf, shares 0.2/0.3/0.5
    python bench/traffic_share.py --routers hybrid_llm --window 500

The question the Serve option ``share_calibration.source: traffic`` answers. For each leave-domains-out
fold (task_name groups dealt into ``--folds`` folds, as in ``bench/generalisation.py``):

* the router is fitted on the other folds' domains; its training-score quantiles (``reference_scores()``,
  what the artifact ships) give the **training** threshold for each target share;
* the held-out fold's queries, shuffled, are the app's traffic: the first ``--window`` of them fill a
  ``ScoreWindow`` (scores only, no labels), which gives the **traffic** threshold, as the ingress does;
* both thresholds are applied to the rest of the stream, and the share of it sent large is reported.

The error is |achieved share - target|, averaged over folds; "seen" runs the same protocol with the
shipped test split as the traffic (same domains as training), where both should be close.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from bench.eval_routers import cached_embedder, load_split
from bench.generalisation import factory
from routers.config import load_config_file
from routers.data import RoutingDataset
from routers.evaluation.calibrate import threshold_for_large_share
from routers.evaluation.generalisation import RouterFactory, group_folds
from routers.evaluation.quantiles import ScoreWindow
from routers.progress import log, set_quiet

SOURCES = ("training", "traffic")


def achieved_shares(make: RouterFactory, fit: RoutingDataset, traffic: RoutingDataset, window_size: int,
                    shares: list[float], seed: int) -> dict[str, list[float]]:
    """Fit on ``fit``; stream ``traffic``: {source: achieved large share per target} on the stream's rest."""
    router = make({})
    router.fit(fit)
    scores = router.dataset_scores(traffic)
    order = np.random.default_rng(seed).permutation(len(scores))
    seen_first, rest = scores[order[:window_size]], scores[order[window_size:]]
    window = ScoreWindow(window_size)
    window.extend(seen_first)
    reference = router.reference_scores()
    out: dict[str, list[float]] = {source: [] for source in SOURCES}
    for share in shares:
        out["training"].append(float(np.mean(rest < threshold_for_large_share(reference, share))))
        out["traffic"].append(float(np.mean(rest < threshold_for_large_share(window.scores(), share))))
    return out


def summarise(runs: list[dict[str, list[float]]], shares: list[float]) -> dict[str, dict[str, list[float]]]:
    """Per source: achieved share per target (mean over runs) and mean |achieved - target|."""
    summary = {}
    for source in SOURCES:
        achieved = np.array([run[source] for run in runs])
        summary[source] = {"achieved": achieved.mean(axis=0).tolist(),
                           "mean_abs_error": np.abs(achieved - np.array(shares)).mean(axis=0).tolist(),
                           "worst_abs_error": np.abs(achieved - np.array(shares)).max(axis=0).tolist()}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", default="hybrid_llm,mf")
    parser.add_argument("--shares", default="0.2,0.3,0.5")
    parser.add_argument("--window", type=int, default=500, help="traffic scores seen before the threshold is set")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--config", type=Path, default=ROOT / "configs/routers/hybrid_llm.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    started = time.time()
    shares = [float(s) for s in args.shares.split(",")]
    train, test = load_split("train", False), load_split("test", False)
    pool = RoutingDataset(train.examples + test.examples, train.llm_data)
    embedder = cached_embedder(args.config)
    embedder.embed(pool.queries)
    llm_data = dict(train.llm_data)
    hybrid_params = {**load_config_file(args.config).router_params(), "seed": args.seed}
    rows, results = [], {}
    for name in args.routers.split(","):
        make = factory(name, hybrid_params if name == "hybrid_llm" else {"seed": args.seed}, llm_data, embedder)
        seen = [achieved_shares(make, train, test, args.window, shares, args.seed)]
        unseen = [achieved_shares(make, pool.subset(fold.fit_indices), pool.subset(fold.eval_indices), args.window,
                                  shares, args.seed) for fold in group_folds(pool, args.folds, args.seed)]
        results[name] = {"seen": summarise(seen, shares), "unseen": summarise(unseen, shares)}
        log(f"{name}: done ({time.time() - started:.0f}s)")
        for domains in ("seen", "unseen"):
            for source in SOURCES:
                summary = results[name][domains][source]
                rows.append((name, domains, source, summary))
    header = " | ".join(f"share {s:.2f}: achieved (mean |err|, worst)" for s in shares)
    print(f"| router | domains | threshold from | {header} |")
    print("|---|---|---|" + "---|" * len(shares))
    for name, domains, source, summary in rows:
        cells = " | ".join(f"{a:.3f} ({e:.3f}, {w:.3f})" for a, e, w in
                           zip(summary["achieved"], summary["mean_abs_error"], summary["worst_abs_error"]))
        print(f"| {name} | {domains} | {source} | {cells} |")
    wall = time.time() - started
    print(f"window {args.window} traffic scores; {args.folds} folds; wall time {wall:.0f}s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "traffic_share.json").write_text(json.dumps(
        {"shares": shares, "window": args.window, "folds": args.folds, "results": results,
         "wall_seconds": round(wall, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
