"""Calibration and evaluation: threshold sweeps, AUC, APGR, CPT, IBC, and plots."""

from routers.evaluation.calibrate import calibrate, threshold_for_large_share
from routers.evaluation.evaluate import evaluate_router, evaluate_routers
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
    "Report",
    "ScoreQuantiles",
    "apgr",
    "calibrate",
    "cost_quality_curve",
    "cpt",
    "delta_ibc",
    "evaluate_router",
    "evaluate_routers",
    "evaluate_scores",
    "ibc",
    "pgr",
    "quality_at_budget",
    "threshold_for_large_share",
    "threshold_from_quantiles",
]
