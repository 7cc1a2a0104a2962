"""Threshold calibration: the chosen threshold sends the target share of queries to the large model."""

from __future__ import annotations

import numpy as np
import pytest

from routers.baselines import RandomRouter
from routers.evaluation import (
    ScoreQuantiles,
    calibrate,
    evaluate_router,
    threshold_for_large_share,
    threshold_from_quantiles,
)
from routers.evaluation.quantiles import ScoreWindow


@pytest.mark.parametrize("target", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_threshold_hits_the_target_share(target: float) -> None:
    scores = np.random.default_rng(1).random(1000)
    threshold = threshold_for_large_share(scores, target)
    assert np.mean(scores < threshold) == pytest.approx(target, abs=1e-9)


def test_ties_land_on_a_reachable_share() -> None:
    scores = np.array([0.1, 0.5, 0.5, 0.5, 0.9])
    threshold = threshold_for_large_share(scores, 0.5)
    assert np.mean(scores < threshold) in {0.2, 0.8}


def test_bad_targets_are_rejected() -> None:
    with pytest.raises(ValueError):
        threshold_for_large_share(np.array([0.1]), 1.5)
    with pytest.raises(ValueError, match="no queries"):
        threshold_for_large_share(np.array([]), 0.5)


def test_calibrated_router_hits_the_share_on_its_data(random_routing_dataset) -> None:
    router = RandomRouter({"seed": 3})
    router.fit(random_routing_dataset)
    router.with_threshold(calibrate(router, random_routing_dataset, 0.3))
    report, _ = evaluate_router(router, random_routing_dataset)
    assert report.large_share == pytest.approx(0.3)


@pytest.mark.parametrize("target", [0.0, 0.01, 0.3, 0.5, 0.555, 0.9, 0.97, 1.0])
def test_quantile_summaries_give_the_share_of_the_scores_they_summarise(target: float) -> None:
    scores = np.random.default_rng(2).beta(2, 5, size=20000)
    quantiles = ScoreQuantiles.from_values(np.quantile(scores, np.linspace(0, 1, 101)))
    threshold = threshold_for_large_share(quantiles, target)
    assert threshold == threshold_from_quantiles(np.asarray(quantiles), target)
    # Interpolating between percentiles is exact at each percentile and close in between.
    assert np.mean(scores < threshold) == pytest.approx(target, abs=2e-3)


def test_quantiles_are_not_treated_as_101_queries() -> None:
    uniform = ScoreQuantiles.from_values(np.linspace(0.0, 1.0, 101))
    assert threshold_for_large_share(uniform, 0.9) == pytest.approx(0.9)
    assert threshold_for_large_share(np.asarray(uniform), 0.9) == pytest.approx(0.91)  # counted as a sample
    assert threshold_for_large_share(uniform, 1.0) > 1.0 and threshold_for_large_share(uniform, 0.0) == 0.0
    with pytest.raises(ValueError):
        ScoreQuantiles.from_values([0.5, 0.4])
    with pytest.raises(ValueError):
        threshold_from_quantiles(uniform, -0.1)


def test_a_score_window_keeps_the_last_scores_and_skips_non_finite_ones() -> None:
    window = ScoreWindow(4)
    window.extend([1.0, float("nan"), 2.0, 3.0])
    assert len(window) == 3 and sorted(window.scores()) == [1.0, 2.0, 3.0]
    window.extend([4.0, 5.0, 6.0])
    assert len(window) == window.size == 4
    assert list(window.scores()) == [3.0, 4.0, 5.0, 6.0]  # oldest first once wrapped
    with pytest.raises(ValueError, match="at least one"):
        ScoreWindow(0)


def test_a_traffic_window_threshold_holds_the_share_on_the_traffic_not_on_training() -> None:
    """Training scores centred at 0, traffic shifted to +1: the window's threshold sends 30% of the
    traffic large where the training quantiles would send almost none."""
    rng = np.random.default_rng(0)
    training = ScoreQuantiles.from_values(np.quantile(rng.normal(0, 0.5, 5000), np.linspace(0, 1, 101)))
    traffic = rng.normal(1.0, 0.5, 3000)
    window = ScoreWindow(2000)
    window.extend(traffic)
    fresh = rng.normal(1.0, 0.5, 5000)
    from_window = threshold_for_large_share(window.scores(), 0.3)
    from_training = threshold_for_large_share(training, 0.3)
    assert np.mean(fresh < from_window) == pytest.approx(0.3, abs=0.03)
    assert np.mean(fresh < from_training) < 0.1
