"""A score distribution summarised by its quantiles (what router artifacts keep of their training scores).

A router's ``reference_scores()`` are the 0th, 1st, ..., 100th percentiles of its scores on its training
queries. They are not 101 queries: the share of training queries scoring below the j-th value is j/100,
so turning a target large-model share into a threshold means interpolating between percentiles
(:func:`threshold_from_quantiles`), not counting values. :class:`ScoreQuantiles` marks such an array so
``threshold_for_large_share`` can tell it from raw scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ScoreQuantiles(np.ndarray):
    """A 1-d float array of quantiles at evenly spaced probabilities 0, 1/(m-1), ..., 1."""

    @classmethod
    def from_values(cls, quantiles: np.ndarray | Sequence[float]) -> ScoreQuantiles:
        values = np.array(quantiles, dtype=np.float64)
        if values.ndim != 1 or len(values) < 2:
            raise ValueError("quantiles must be a 1-d array of at least 2 values")
        if np.any(np.diff(values) < 0):
            raise ValueError("quantiles must be non-decreasing")
        return values.view(cls)

    @property
    def probabilities(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self))


def threshold_from_quantiles(quantiles: np.ndarray | Sequence[float], target_large_share: float) -> float:
    """The threshold below which ``target_large_share`` of the summarised scores fall.

    Queries with ``score < threshold`` go to the large model. Share 0 gives the minimum (nothing is
    strictly below it), share 1 a value just above the maximum (everything is below it), and shares in
    between interpolate linearly between neighbouring percentiles, which is exact up to how the scores
    are spread inside one percentile.
    """
    if not 0.0 <= target_large_share <= 1.0:
        raise ValueError("target_large_share must be in [0, 1]")
    values = ScoreQuantiles.from_values(quantiles)
    if target_large_share >= 1.0:
        return float(np.nextafter(values[-1], np.inf))
    return float(np.interp(target_large_share, values.probabilities, np.asarray(values)))
