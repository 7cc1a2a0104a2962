"""Selection rules among N models (``routers.selection``): parsing, the per-query rules, the two-model special
case, and the rules resolved on calibration queries."""

from __future__ import annotations

import numpy as np
import pytest

from routers.errors import ConfigError
from routers.selection import (
    BudgetRule,
    CostRule,
    DefaultRule,
    QualityRule,
    SelectionCalibration,
    ShareRule,
    parse_rule,
    pick_by_cost,
    pick_within_budget,
    select,
)


def test_parse_rule_reads_every_suffix() -> None:
    assert parse_rule(None) == DefaultRule() == parse_rule("") == parse_rule("default")
    assert parse_rule("cost=250") == CostRule(weight=250.0)
    assert parse_rule("quality=0.95") == QualityRule(ratio=0.95)
    assert parse_rule("budget=0.002") == BudgetRule(usd=0.002)
    assert parse_rule(" share=0.3 ") == ShareRule(share=0.3)


@pytest.mark.parametrize(("text", "message"), [
    ("cost=-1", "cost: Input should be greater than or equal to 0"),
    ("quality=0", "quality: Input should be greater than 0"),
    ("quality=2", "quality: Input should be less than or equal to 1.5"),
    ("budget=0", "budget: Input should be greater than 0"),
    ("share=1.5", "share: Input should be less than or equal to 1"),
    ("share=abc", "share must be a number, got 'abc'"),
    ("budget=inf", "budget must be finite"),
    ("speed=3", "expected one of cost=L"),
    ("cost", "expected one of cost=L"),
])
def test_parse_rule_names_the_field_of_a_bad_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rule(text)


def test_cost_rule_with_two_models_is_the_threshold_rule() -> None:
    """With two models, cost=L sends a query to the small model iff q_small - q_large >= -L (c_large - c_small):
    today's rule 'small iff score >= threshold' with score = the quality gap and threshold -L x the cost gap."""
    rng = np.random.default_rng(0)
    quality = rng.random((500, 2))
    cost = np.array([0.001, 0.01])
    for weight in (0.0, 10.0, 50.0, 1000.0):
        chosen = pick_by_cost(quality, cost, weight)
        small = quality[:, 0] - quality[:, 1] >= -weight * (cost[1] - cost[0])
        assert np.array_equal(chosen == 0, small), weight


def test_cost_rule_breaks_ties_to_the_cheaper_model_and_takes_per_query_costs() -> None:
    quality = np.array([[0.5, 0.5, 0.5], [0.2, 0.9, 0.9]])
    assert pick_by_cost(quality, np.array([3.0, 1.0, 2.0]), 0.0).tolist() == [1, 1]
    per_query = np.array([[1.0, 2.0, 3.0], [1.0, 5.0, 2.0]])
    assert pick_by_cost(quality, per_query, 0.0).tolist() == [0, 2]
    assert pick_by_cost(quality, per_query, 1.0).tolist() == [0, 0]


def test_budget_rule_takes_the_best_model_that_fits_else_the_cheapest() -> None:
    quality = np.array([[0.2, 0.6, 0.9], [0.2, 0.6, 0.9]])
    cost = np.array([[0.001, 0.002, 0.01], [0.003, 0.004, 0.01]])
    assert pick_within_budget(quality, cost, 0.002).tolist() == [1, 0]
    assert select(quality, cost, BudgetRule(usd=0.5)).tolist() == [2, 2]


def calibration_data(n: int = 400) -> SelectionCalibration:
    """Three models; the dear one right on every query, the cheap one on the easy half, predicted exactly."""
    rng = np.random.default_rng(3)
    easy = rng.random(n) < 0.5
    quality = np.column_stack([easy, easy | (rng.random(n) < 0.5), np.ones(n)]).astype(np.float64)
    cost = np.tile([0.0001, 0.001, 0.01], (n, 1))
    return SelectionCalibration(quality, cost, quality, cost, "test")


def test_share_rule_caps_the_dearest_models_share_on_the_calibration_queries() -> None:
    calibration = calibration_data()
    for share in (0.0, 0.1, 0.3, 1.0):
        weight = calibration.weight_for_share(share)
        chosen = pick_by_cost(calibration.predicted, calibration.cost_estimate, weight)
        assert (chosen == 2).mean() <= share + 1e-12
    # the smallest such weight: share 1 allows weight 0 (quality only)
    assert calibration.weight_for_share(1.0) == 0.0


def test_quality_rule_is_cheaper_for_a_lower_target_and_keeps_its_bound() -> None:
    calibration = calibration_data()
    strict, loose = calibration.weight_for_quality(1.0), calibration.weight_for_quality(0.7)
    assert loose >= strict
    for ratio, weight in ((1.0, strict), (0.7, loose)):
        chosen = pick_by_cost(calibration.predicted, calibration.cost_estimate, weight)
        realised = calibration.quality[np.arange(len(calibration)), chosen].mean()
        assert realised >= ratio * calibration.best_single_quality - 1e-9
    # the default rule (quality=1.0): as good as the best single model (the dear one), cheaper than it
    default = select(calibration.predicted, calibration.cost_estimate, DefaultRule(), calibration)
    assert calibration.quality[np.arange(len(calibration)), default].mean() == 1.0
    assert (default != 2).any()


def test_rules_needing_calibration_say_so() -> None:
    with pytest.raises(ConfigError, match="needs the artifact's selection calibration"):
        select(np.zeros((1, 2)), np.array([1.0, 2.0]), QualityRule(ratio=0.9))
