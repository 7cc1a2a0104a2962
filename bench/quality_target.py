"""Does "at least X% of always-large quality" hold? Thresholds from ``threshold_for_quality``, checked on
queries the calibration never saw: the test split (seen domains) and held-out domains (unseen).

    python bench/quality_target.py                       # hybrid_llm and mf, targets 0.90/0.95/0.98
    python bench/quality_target.py --routers hybrid_llm --targets 0.95

Protocol, for each router and target ratio r:

* **seen**: the train files are split at random 80/20 (seeded) into fit and calibration queries; the
  router is fitted on the first, the threshold is chosen on the second (bootstrap lower bound of
  quality / always-large >= r at 95% confidence, fewest large calls), and applied to the test split.
* **unseen**: train + test, the task_name domains dealt into ``--folds`` folds; for each fold the other
  folds' queries are split 80/20 into fit and calibration the same way, and the threshold is applied to
  the held-out fold's domains. The achieved ratio is reported pooled over folds, with the number of folds
  whose own ratio met the target.

"achieved" is quality / always-large quality on the evaluation queries at the chosen threshold; "large"
is the share of them sent to the large model. The guarantee is a same-distribution guarantee
(``routers/evaluation/quality_target.py``): the seen rows test it, the unseen rows show what a shift does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from bench.eval_routers import cached_embedder, load_split
from bench.generalisation import factory
from routers.config import load_config_file
from routers.data import RoutingDataset
from routers.evaluation.generalisation import (
    Predictions,
    RouterFactory,
    fit_and_predict,
    group_folds,
    predict,
)
from routers.evaluation.quality_target import threshold_for_quality
from routers.progress import log, set_quiet

CALIBRATION_SHARE = 0.2


@dataclass(frozen=True)
class Outcome:
    """What a calibrated threshold did on evaluation queries."""

    quality: float
    large_quality: float
    large_calls: int
    n: int
    calibrated_share: float

    @property
    def ratio(self) -> float:
        return self.quality / self.large_quality


def fit_and_calibration_split(data: RoutingDataset, seed: int) -> tuple[RoutingDataset, RoutingDataset]:
    order = np.random.default_rng(seed).permutation(len(data))
    n_calibration = round(CALIBRATION_SHARE * len(data))
    return data.subset(sorted(order[n_calibration:].tolist())), data.subset(sorted(order[:n_calibration].tolist()))


def apply_threshold(predictions: Predictions, threshold: float, calibrated_share: float) -> Outcome:
    use_large = predictions.scores < threshold
    quality = float(np.where(use_large, predictions.large, predictions.small).sum())
    return Outcome(quality, float(predictions.large.sum()), int(use_large.sum()), len(predictions), calibrated_share)


def calibrated_outcomes(make: RouterFactory, train: RoutingDataset, evaluation: RoutingDataset,
                        targets: list[float], seed: int, resamples: int) -> list[Outcome]:
    """Fit on 80% of ``train``, calibrate each target on the other 20%, apply to ``evaluation``."""
    fit, calibration = fit_and_calibration_split(train, seed)
    outcome = fit_and_predict(make, {}, fit, calibration)
    held_out = predict(outcome.router, evaluation)
    calibrated = outcome.predictions
    outcomes = []
    for target in targets:
        chosen = threshold_for_quality(calibrated.scores, calibrated.small, calibrated.large, target,
                                       n_resamples=resamples, seed=seed)
        outcomes.append(apply_threshold(held_out, chosen.threshold, chosen.large_share))
    return outcomes


def pooled(outcomes: list[Outcome]) -> Outcome:
    return Outcome(sum(o.quality for o in outcomes), sum(o.large_quality for o in outcomes),
                   sum(o.large_calls for o in outcomes), sum(o.n for o in outcomes),
                   float(np.mean([o.calibrated_share for o in outcomes])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", default="hybrid_llm,mf")
    parser.add_argument("--targets", default="0.90,0.95,0.98")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=ROOT / "configs/routers/hybrid_llm.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    started = time.time()
    targets = [float(t) for t in args.targets.split(",")]
    train, test = load_split("train", False), load_split("test", False)
    llm_data = dict(train.llm_data)
    embedder = cached_embedder(args.config)
    embedder.embed(train.queries + test.queries)
    pool = RoutingDataset(train.examples + test.examples, train.llm_data)
    folds = group_folds(pool, args.folds, args.seed)
    hybrid_params = {**load_config_file(args.config).router_params(), "seed": args.seed}

    rows = []
    for name in [n for n in args.routers.split(",") if n]:
        make = factory(name, hybrid_params if name == "hybrid_llm" else {"seed": args.seed}, llm_data, embedder)
        seen = calibrated_outcomes(make, train, test, targets, args.seed, args.bootstrap)
        per_fold = [calibrated_outcomes(make, pool.subset(fold.fit_indices), pool.subset(fold.eval_indices),
                                        targets, args.seed, args.bootstrap) for fold in folds]
        for i, target in enumerate(targets):
            unseen_folds = [fold_outcomes[i] for fold_outcomes in per_fold]
            for domains, outcome, met in (
                    ("seen", seen[i], f"{int(seen[i].ratio >= target)}/1"),
                    ("unseen", pooled(unseen_folds), f"{sum(o.ratio >= target for o in unseen_folds)}/{len(folds)}")):
                rows.append({"router": name, "target": target, "domains": domains, "achieved": outcome.ratio,
                             "met": met, "large_share": outcome.large_calls / outcome.n,
                             "calibrated_large_share": outcome.calibrated_share, "n": outcome.n})
        log(f"{name}: done ({time.time() - started:.0f}s)")

    print(f"{'router':<12}{'target':>8}  {'domains':<8}{'achieved':>9}{'met':>7}{'large':>8}"
          f"{'large on calib':>16}{'n':>7}")
    for row in rows:
        print(f"{row['router']:<12}{row['target']:>8.2f}  {row['domains']:<8}{row['achieved']:>9.3f}{row['met']:>7}"
              f"{row['large_share']:>8.3f}{row['calibrated_large_share']:>16.3f}{row['n']:>7}")
    wall = time.time() - started
    print(f"wall time {wall:.0f}s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_target.json").write_text(json.dumps({"rows": rows, "wall_seconds": round(wall, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
