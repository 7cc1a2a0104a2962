"""Metric definitions checked against hand-computed values (see routers/evaluation/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from routers.evaluation import (
    CostModel,
    apgr,
    cost_quality_curve,
    cpt,
    delta_ibc,
    evaluate_scores,
    ibc,
    pgr,
    quality_at_budget,
)
from routers.evaluation.metrics import area_under

# Four queries. Sorted by score, sending them to the large model one by one changes quality by
# large - small = +1, 0, +1, -1 (on a base of mean(small) = 0.5).
SCORES = np.array([0.1, 0.2, 0.3, 0.4])
SMALL = np.array([0.0, 1.0, 0.0, 1.0])
LARGE = np.array([1.0, 1.0, 1.0, 0.0])
COSTS = CostModel(small=np.ones(4), large=np.full(4, 10.0))


def test_curve_points() -> None:
    curve = cost_quality_curve(SCORES, SMALL, LARGE, COSTS)
    assert curve.large_share.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.quality.tolist() == [0.5, 0.75, 0.75, 1.0, 0.75]
    assert curve.cost.tolist() == [1.0, 3.25, 5.5, 7.75, 10.0]
    # Threshold t reaching point k is the score of the first query kept small.
    assert curve.thresholds[:4].tolist() == [0.1, 0.2, 0.3, 0.4] and curve.thresholds[4] > 0.4


def test_curve_is_independent_of_input_order() -> None:
    perm = np.array([2, 0, 3, 1])
    a = cost_quality_curve(SCORES, SMALL, LARGE, COSTS)
    b = cost_quality_curve(SCORES[perm], SMALL[perm], LARGE[perm], CostModel(COSTS.small[perm], COSTS.large[perm]))
    assert np.allclose(a.quality, b.quality) and np.allclose(a.cost, b.cost)


def test_tied_scores_move_together() -> None:
    curve = cost_quality_curve(np.array([0.5, 0.5, 1.0]), np.zeros(3), np.ones(3), CostModel(np.ones(3), np.ones(3)))
    assert curve.large_share.tolist() == pytest.approx([0.0, 2 / 3, 1.0])


def test_auc_apgr_and_pgr() -> None:
    curve = cost_quality_curve(SCORES, SMALL, LARGE, COSTS)
    # Trapezoids of width 0.25 over quality 0.5, .75, .75, 1, .75.
    assert area_under(curve.large_share, curve.quality) == pytest.approx(0.78125)
    # PGR points with q_small .5, q_large .75: 0, 1, 1, 2, 1.
    assert np.asarray(pgr(curve.quality, 0.5, 0.75)).tolist() == [0.0, 1.0, 1.0, 2.0, 1.0]
    assert apgr(curve, 0.5, 0.75) == pytest.approx(1.125)
    assert pgr(0.7, 0.6, 0.6) == 0.0  # no gap: nothing to recover


def test_random_order_has_apgr_about_half() -> None:
    rng = np.random.default_rng(0)
    small, large = (rng.random(20000) < 0.5).astype(float), (rng.random(20000) < 0.8).astype(float)
    curve = cost_quality_curve(rng.random(20000), small, large, CostModel(np.ones(20000), np.ones(20000)))
    assert apgr(curve, small.mean(), large.mean()) == pytest.approx(0.5, abs=0.03)


def test_cpt_interpolates_between_points() -> None:
    curve = cost_quality_curve(SCORES, SMALL, LARGE, COSTS)
    assert cpt(curve, 0.5, 0.5, 0.75) == pytest.approx(0.125)
    assert cpt(curve, 0.8, 0.5, 0.75) == pytest.approx(0.2)
    assert cpt(curve, 0.95, 0.5, 0.75) == pytest.approx(0.2375)
    assert cpt(curve, 3.0, 0.5, 0.75) is None  # never recovered


def test_quality_at_budget() -> None:
    curve = cost_quality_curve(SCORES, SMALL, LARGE, COSTS)
    assert quality_at_budget(curve, 5.5) == 0.75
    assert quality_at_budget(curve, 8.0) == 1.0
    assert quality_at_budget(curve, 0.5) is None


def test_ibc_and_delta_ibc() -> None:
    assert ibc(1.0, 7.75, 0.5, 1.0) == pytest.approx(0.5 / 6.75)
    assert ibc(0.9, 1.0, 0.5, 1.0) is None  # no extra spend
    # Base slope (0.75 - 0.5) / (10 - 1); the router's 0.5 / 6.75 is 2.667 times steeper.
    assert delta_ibc(0.5 / 6.75, 0.5, 0.75, 1.0, 10.0) == pytest.approx(100 * (0.5 * 9 / (6.75 * 0.25) - 1))
    assert delta_ibc(0.25 / 9, 0.5, 0.75, 1.0, 10.0) == pytest.approx(0.0)  # the random-mix line
    assert delta_ibc(None, 0.5, 0.75, 1.0, 10.0) is None


def test_cost_model_cascade_and_overhead() -> None:
    costs = CostModel(small=np.array([1.0, 1.0]), large=np.array([10.0, 10.0]), overhead=0.5, cascade=True)
    assert costs.per_query(np.array([False, True])).tolist() == [1.5, 11.5]
    plain = CostModel(small=np.array([1.0]), large=np.array([10.0]))
    assert plain.per_query(np.array([True])).tolist() == [10.0]


def test_evaluate_scores_operating_point() -> None:
    report, _ = evaluate_scores("r", SCORES, 0.35, SMALL, LARGE, COSTS)
    assert report.n_test == 4 and report.large_share == 0.75
    assert report.quality == 1.0 and report.cost == pytest.approx(7.75)
    assert report.pgr == pytest.approx(2.0)
    assert (report.quality_small, report.quality_large, report.quality_oracle) == (0.5, 0.75, 1.0)
    assert (report.cost_small, report.cost_large) == (1.0, 10.0)
    assert report.auc == pytest.approx(0.78125) and report.apgr == pytest.approx(1.125)
    assert report.cpt_50 == pytest.approx(0.125)
    assert report.ibc == pytest.approx(0.5 / 6.75)
    assert report.delta_ibc == pytest.approx(166.6667, rel=1e-4)
    forced, _ = evaluate_scores("r", SCORES, None, SMALL, LARGE, COSTS, use_large=np.array([1, 0, 0, 0]))
    assert forced.large_share == 0.25 and forced.quality == 0.75
    keys = set(report.to_dict())
    assert {"router", "n_test", "auc", "apgr", "cpt_50", "cpt_80", "cpt_95", "large_share", "quality", "cost"} <= keys


def test_reports_give_quality_at_half_the_always_large_cost() -> None:
    report, curve = evaluate_scores("r", SCORES, 0.35, SMALL, LARGE, COSTS)
    assert (report.budget_fraction, report.budget) == (0.5, 5.0)  # always-large costs 10 per query
    assert report.quality_at_budget == quality_at_budget(curve, 5.0) == 0.75
    assert {"budget", "quality_at_budget", "budget_fraction"} <= set(report.to_dict())
    generous, _ = evaluate_scores("r", SCORES, 0.35, SMALL, LARGE, COSTS, budget_fraction=1.0)
    assert generous.quality_at_budget == 1.0
    too_tight, _ = evaluate_scores("r", SCORES, 0.35, SMALL, LARGE, COSTS, budget_fraction=0.05)
    assert too_tight.budget == 0.5 and too_tight.quality_at_budget is None  # even always-small costs more
    with pytest.raises(ValueError, match="budget_fraction"):
        evaluate_scores("r", SCORES, 0.35, SMALL, LARGE, COSTS, budget_fraction=-1.0)


def test_evaluate_scores_needs_a_threshold_or_decisions() -> None:
    with pytest.raises(ValueError, match="threshold"):
        evaluate_scores("r", SCORES, None, SMALL, LARGE, COSTS)
    with pytest.raises(ValueError, match="empty"):
        cost_quality_curve(np.array([]), np.array([]), np.array([]), COSTS)
