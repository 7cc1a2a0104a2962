"""Threshold calibration: the chosen threshold sends the target share of queries to the large model."""

from __future__ import annotations

import numpy as np
import pytest

from routers.baselines import RandomRouter
from routers.evaluation import calibrate, evaluate_router, threshold_for_large_share


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
