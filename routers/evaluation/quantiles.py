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


class ScoreWindow:
    """The scores of the last ``size`` routed queries: a target large-model share turned into a threshold
    on the traffic the app actually gets, with no labels needed.

    A router's training-score quantiles fix the threshold for the *training* distribution; when the
    traffic is different (new domains score higher, measured in ``bench/quality_target.py``), the same
    threshold sends a different share of queries large. Quantiles of recent traffic track the share
    asked for. Scores do not depend on the threshold, so routing with the window's threshold does not
    feed back into the window.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a score window holds at least one score")
        self._values = np.empty(size, dtype=np.float64)
        self._count = 0
        self._next = 0

    @property
    def size(self) -> int:
        return len(self._values)

    def __len__(self) -> int:
        return self._count

    def add(self, score: float) -> None:
        if not np.isfinite(score):
            return
        self._values[self._next] = score
        self._next = (self._next + 1) % self.size
        self._count = min(self._count + 1, self.size)

    def extend(self, scores: Sequence[float] | np.ndarray) -> None:
        for score in np.asarray(scores, dtype=np.float64).ravel():
            self.add(float(score))

    def scores(self) -> np.ndarray:
        """The window's scores (oldest first once it has wrapped; the order does not matter to quantiles)."""
        if self._count < self.size:
            return self._values[: self._count].copy()
        return np.concatenate([self._values[self._next :], self._values[: self._next]])
