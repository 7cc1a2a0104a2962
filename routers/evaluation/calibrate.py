"""Pick a router's threshold from data instead of by hand (RouteLLM's calibrate_threshold idea)."""

from __future__ import annotations

import numpy as np

from routers.base import Router
from routers.data import RoutingDataset
from routers.evaluation.metrics import threshold_at_cut
from routers.evaluation.quantiles import ScoreQuantiles, threshold_from_quantiles


def threshold_for_large_share(scores: np.ndarray, target_large_share: float) -> float:
    """The threshold that sends ``target_large_share`` of these scores to the large model.

    Queries with ``score < threshold`` go large, so the threshold is the (k+1)-th smallest score with
    k = round(target * n). Ties make the achieved share land on the nearest reachable value.

    ``scores`` may also be a router's ``reference_scores()`` (a :class:`ScoreQuantiles` of its training
    scores); then the threshold interpolates between percentiles (``threshold_from_quantiles``).
    """
    if not 0.0 <= target_large_share <= 1.0:
        raise ValueError("target_large_share must be in [0, 1]")
    if isinstance(scores, ScoreQuantiles):
        return threshold_from_quantiles(scores, target_large_share)
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if len(scores) == 0:
        raise ValueError("cannot calibrate on no queries")
    return threshold_at_cut(scores, round(target_large_share * len(scores)))


def calibrate(router: Router, data: RoutingDataset, target_large_share: float) -> float:
    """Threshold that routes ``target_large_share`` of ``data``'s queries to the large model."""
    return threshold_for_large_share(router.dataset_scores(data), target_large_share)
