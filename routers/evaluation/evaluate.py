"""Evaluate routers on a routing-data test set, side by side."""

from __future__ import annotations

from collections.abc import Sequence

from routers.base import Router
from routers.data import RoutingDataset
from routers.evaluation.metrics import DEFAULT_BUDGET_FRACTION, Curve, Report, evaluate_scores


def evaluate_router(
    router: Router, test: RoutingDataset, budget_fraction: float = DEFAULT_BUDGET_FRACTION
) -> tuple[Report, Curve]:
    """The router's cost-quality curve on ``test`` and its operating point at its own decisions.

    Queries lacking either model's outcome cannot be scored; they are left out and counted in the
    report's ``n_skipped`` (``complete_for`` also warns). Routers whose decision is not a threshold on
    their score (the causal-LM router's generated name) report their real decisions and no threshold.
    ``budget_fraction``: see ``quality_at_budget`` in ``routers.evaluation.metrics``.
    """
    pair = router.require_pair()
    complete = test.complete_for([pair.small, pair.large])
    matrix = complete.performance_matrix([pair.small, pair.large])
    scores = router.dataset_scores(complete)
    decisions = router.dataset_decisions(complete)
    report, curve = evaluate_scores(
        router.name,
        scores,
        router.threshold if decisions is None else None,
        matrix[:, 0],
        matrix[:, 1],
        router.cost_model(complete),
        use_large=decisions,
        budget_fraction=budget_fraction,
    )
    report.extra["n_skipped"] = len(test) - len(complete)
    return report, curve


def evaluate_routers(
    routers: Sequence[Router], test: RoutingDataset, budget_fraction: float = DEFAULT_BUDGET_FRACTION
) -> list[tuple[Report, Curve]]:
    return [evaluate_router(router, test, budget_fraction) for router in routers]
