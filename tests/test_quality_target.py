"""threshold_for_quality: the cheapest threshold whose bootstrap lower bound keeps quality at a target."""

from __future__ import annotations

import numpy as np
import pytest

from routers.evaluation.quality_target import threshold_for_quality


def informative_queries(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The large model is right on 85% of queries, the small one on 65%; the score is noisy knowledge of
    whether the small model is right."""
    rng = np.random.default_rng(seed)
    large = (rng.random(n) < 0.85).astype(float)
    small = np.where(large == 1, (rng.random(n) < 0.75).astype(float), (rng.random(n) < 0.1).astype(float))
    scores = small + rng.normal(0, 0.6, n)
    return scores, small, large


def quality_ratio(scores: np.ndarray, small: np.ndarray, large: np.ndarray, threshold: float) -> float:
    return float(np.where(scores < threshold, large, small).sum() / large.sum())


def test_the_chosen_threshold_meets_the_bound_and_the_next_cheaper_one_does_not() -> None:
    scores, small, large = informative_queries(3000)
    chosen = threshold_for_quality(scores, small, large, 0.95, n_resamples=400)
    assert chosen.met and chosen.ratio_lower_bound >= 0.95
    assert chosen.ratio == pytest.approx(quality_ratio(scores, small, large, chosen.threshold))
    assert chosen.ratio >= chosen.ratio_lower_bound  # a lower confidence bound sits below the estimate
    assert chosen.large_share == pytest.approx(np.mean(scores < chosen.threshold))
    # one query fewer to the large model: the bound no longer holds
    cheaper = np.sort(scores)[round(chosen.large_share * len(scores)) - 1]
    assert quality_ratio(scores, small, large, cheaper) <= chosen.ratio
    assert 0.2 < chosen.large_share < 0.9  # the score carries information: far from all-large


def test_stricter_targets_and_higher_confidence_cost_more_large_calls() -> None:
    scores, small, large = informative_queries(2000, seed=1)
    shares = [threshold_for_quality(scores, small, large, t, n_resamples=300).large_share for t in (0.9, 0.95, 0.99)]
    assert shares == sorted(shares) and shares[0] < shares[-1]
    loose = threshold_for_quality(scores, small, large, 0.95, confidence=0.5, n_resamples=300)
    strict = threshold_for_quality(scores, small, large, 0.95, confidence=0.99, n_resamples=300)
    assert loose.large_share <= strict.large_share


def test_fewer_calibration_queries_mean_a_more_cautious_threshold() -> None:
    scores, small, large = informative_queries(6000, seed=2)
    many = threshold_for_quality(scores, small, large, 0.95, n_resamples=300)
    few = threshold_for_quality(scores[:300], small[:300], large[:300], 0.95, n_resamples=300)
    assert many.ratio - many.ratio_lower_bound < few.ratio - few.ratio_lower_bound


def test_an_unreachable_target_routes_everything_large_and_says_so() -> None:
    scores, small, large = informative_queries(500, seed=3)
    chosen = threshold_for_quality(scores, small, large, 1.2, n_resamples=200)
    assert not chosen.met and chosen.large_share == 1.0 and np.all(scores < chosen.threshold)


def test_a_threshold_never_splits_equal_scores() -> None:
    scores = np.repeat([0.1, 0.5, 0.9], 100)
    small = np.tile([0.0, 1.0], 150)
    large = np.ones(300)
    chosen = threshold_for_quality(scores, small, large, 0.5, n_resamples=100)
    assert chosen.threshold in (0.1, 0.5, 0.9) or chosen.large_share == 1.0
    assert round(chosen.large_share * 300) % 100 == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="target_ratio"):
        threshold_for_quality(np.zeros(3), np.zeros(3), np.ones(3), 0.0)
    with pytest.raises(ValueError, match="one value per calibration query"):
        threshold_for_quality(np.zeros(3), np.zeros(2), np.ones(3), 0.9)
