"""Evaluate routers on a routing-data test set, side by side."""

from __future__ import annotations

from collections.abc import Sequence

from routers.base import Router
from routers.data import RoutingDataset
from routers.evaluation.metrics import Curve, Report, evaluate_scores


def evaluate_router(router: Router, test: RoutingDataset) -> tuple[Report, Curve]:
    """The router's cost-quality curve on ``test`` and its operating point at its own threshold."""
    pair = router.require_pair()
    test = test.complete_for([pair.small, pair.large])
    matrix = test.performance_matrix([pair.small, pair.large])
    scores = router.dataset_scores(test)
    decisions = router.dataset_decisions(test)
    return evaluate_scores(
        router.name,
        scores,
        router.threshold,
        matrix[:, 0],
        matrix[:, 1],
        router.cost_model(test),
        use_large=decisions,
    )


def evaluate_routers(routers: Sequence[Router], test: RoutingDataset) -> list[tuple[Report, Curve]]:
    return [evaluate_router(router, test) for router in routers]
