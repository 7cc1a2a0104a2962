"""Calibration and evaluation: threshold sweeps, AUC, APGR, CPT, IBC, leave-domains-out, in-domain k-fold,
and plots."""

from routers.evaluation.bootstrap import MetricInterval, bootstrap_metrics
from routers.evaluation.calibrate import calibrate, threshold_for_large_share
from routers.evaluation.evaluate import evaluate_router, evaluate_routers
from routers.evaluation.generalisation import (
    GeneralisationResult,
    Protocol,
    evaluate_fitted,
    group_folds,
    in_domain,
    in_domain_folds,
    leave_domains_out,
    query_folds,
)
from routers.evaluation.metrics import (
    CostModel,
    Curve,
    Report,
    apgr,
    cost_quality_curve,
    cpt,
    delta_ibc,
    evaluate_scores,
    ibc,
    pgr,
    quality_at_budget,
)
from routers.evaluation.quantiles import ScoreQuantiles, threshold_from_quantiles

__all__ = [
    "CostModel",
    "Curve",
    "GeneralisationResult",
    "MetricInterval",
    "Protocol",
    "Report",
    "ScoreQuantiles",
    "apgr",
    "bootstrap_metrics",
    "calibrate",
    "cost_quality_curve",
    "cpt",
    "delta_ibc",
    "evaluate_fitted",
    "evaluate_router",
    "evaluate_routers",
    "evaluate_scores",
    "group_folds",
    "ibc",
    "in_domain",
    "in_domain_folds",
    "leave_domains_out",
    "pgr",
    "quality_at_budget",
    "query_folds",
    "threshold_for_large_share",
    "threshold_from_quantiles",
]
