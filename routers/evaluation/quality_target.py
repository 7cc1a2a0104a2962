"""A threshold chosen so that quality stays at a target fraction of always-large, with a bootstrap bound.

``router-X:share=0.3`` fixes *how much* traffic goes to the large model; what users usually want fixed is
*how good* the answers stay: "at least 95% of the large model's quality, as cheaply as possible". Given
labelled held-out queries (both models' outcomes) and the router's scores on them, ``threshold_for_quality``
returns the threshold that sends the fewest queries to the large model while the bootstrap lower
confidence bound of ``quality(threshold) / quality(always large)`` is at least the target.

What it guarantees: on new queries drawn from the *same distribution* as the calibration queries, the
quality ratio at that threshold is at least the target with (approximately, bootstrap) ``confidence``
probability over the draw of the calibration set. What it cannot guarantee: anything under a shift of
traffic (new domains, a new prompt style, a changed small model): the ratio can then fall below the
target, and by how much is measured by ``bench/quality_target.py`` on held-out domains. Recalibrate on
labelled samples of your own traffic.

The search runs over the thresholds a router can realise (``metrics.cut_points``, the cuts of
``metrics.cost_quality_curve``); every resample is evaluated at the same score cuts, with multinomial
query weights, in O(n) per resample.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from routers.evaluation.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from routers.evaluation.metrics import cut_points, threshold_at_cut


class QualityThreshold(BaseModel):
    """The chosen operating point and what the calibration data says about it."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    target_ratio: float
    confidence: float
    #: quality / always-large quality at the threshold on the calibration queries
    ratio: float
    #: its one-sided lower confidence bound (bootstrap percentile)
    ratio_lower_bound: float
    large_share: float
    n_queries: int
    #: False when even always-large cannot meet the target bound (then threshold routes everything large)
    met: bool


def _ratios_at_cuts(weights: np.ndarray, small: np.ndarray, large: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """quality / always-large quality at each cut, for per-query weights (1s, or bootstrap counts);
    arrays are in score order."""
    total_large = float(np.dot(weights, large))
    if total_large <= 0:
        return np.full(len(cuts), np.inf)
    cumulative_gain = np.concatenate([[0.0], np.cumsum(weights * (large - small))])
    return (float(np.dot(weights, small)) + cumulative_gain[cuts]) / total_large


def threshold_for_quality(scores: np.ndarray, small: np.ndarray, large: np.ndarray, target_ratio: float,
                          confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                          seed: int = 0) -> QualityThreshold:
    """The cheapest threshold whose bootstrap lower bound of quality / always-large quality >= target."""
    if not 0.0 < target_ratio <= 1.5:
        raise ValueError("target_ratio must be in (0, 1.5]")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    scores, small, large = (np.asarray(a, dtype=np.float64) for a in (scores, small, large))
    n = len(scores)
    if n == 0 or not len(small) == len(large) == n:
        raise ValueError("scores, small and large need one value per calibration query")
    order = np.argsort(scores, kind="stable")
    sorted_scores, small, large = scores[order], small[order], large[order]
    cuts = cut_points(sorted_scores)
    point = _ratios_at_cuts(np.ones(n), small, large, cuts)
    rng = np.random.default_rng(seed)
    draws = np.stack([_ratios_at_cuts(rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64), small, large, cuts)
                      for _ in range(max(1, n_resamples))])
    lower = np.percentile(draws, 100.0 * (1.0 - confidence), axis=0)
    meeting = np.nonzero(lower >= target_ratio)[0]
    chosen = int(meeting[0]) if len(meeting) else len(cuts) - 1
    k = int(cuts[chosen])
    threshold = threshold_at_cut(sorted_scores, k)
    return QualityThreshold(threshold=threshold, target_ratio=target_ratio, confidence=confidence,
                            ratio=float(point[chosen]), ratio_lower_bound=float(lower[chosen]),
                            large_share=k / n, n_queries=n, met=bool(len(meeting)))
