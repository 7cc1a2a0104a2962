"""Train and save the default causal-LM router artifact, and report how it does.

Reports the answer-token loss of the base model and of the finetuned one on held-out test queries,
and the APGR of the finetuned router on a seeded test subset next to a random router's.

    python -m routers.causal_lm.build_artifact --config configs/routers/causallm_router.yaml --test-queries 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from routers.causal_lm.router import CausalLMRouter
from routers.config import build_router, load_config_file
from routers.evaluation import evaluate_router
from routers.evaluation.metrics import evaluate_scores
from routers.paths import resolve_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/routers/causallm_router.yaml")
    parser.add_argument("--out", default=None, help="default: the config's model_path.save_model_path")
    parser.add_argument("--test-queries", type=int, default=300)
    parser.add_argument("--loss-queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    config = load_config_file(args.config)
    router = build_router(config)
    assert isinstance(router, CausalLMRouter)
    train, test = config.dataset("train"), config.dataset("test")
    rng = np.random.default_rng(args.seed)
    test = test.subset(sorted(rng.choice(len(test), size=min(args.test_queries, len(test)), replace=False).tolist()))
    started = time.perf_counter()
    fit_metrics = router.fit(train)
    train_seconds = time.perf_counter() - started
    out = resolve_path(args.out or config.model_path.save_model_path or "artifacts/causallm_router")
    router.save(out)
    loss_data = test.head(args.loss_queries)
    loss_before = router.answer_loss(loss_data, adapter=False)
    loss_after = router.answer_loss(loss_data, adapter=True)
    report, _ = evaluate_router(router, test)
    pair = router.require_pair()
    matrix = test.performance_matrix([pair.small, pair.large])
    random_report, _ = evaluate_scores(
        "random", np.random.default_rng(args.seed + 1).random(len(test)), 0.5, matrix[:, 0], matrix[:, 1],
        router.cost_model(test),
    )
    summary = {
        "fit": fit_metrics,
        "train_seconds": round(train_seconds, 1),
        "test_loss_base": loss_before,
        "test_loss_finetuned": loss_after,
        "n_test": report.n_test,
        "apgr": report.apgr,
        "apgr_random": random_report.apgr,
        "large_share_at_0.5": report.large_share,
        "quality_at_0.5": report.quality,
    }
    (Path(out) / "build_report.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
