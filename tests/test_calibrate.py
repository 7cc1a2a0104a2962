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
