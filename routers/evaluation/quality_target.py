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

Serving (``router-X:quality=0.95``) needs the labelled evidence at hand: a ``QualityCalibration`` (the
calibration queries' scores and both models' outcomes, no texts) travels in the artifact as
``quality_calibration.safetensors``. ``llmrouter calibrate-quality`` writes it from labelled files (a
sample of the app's own traffic: the distribution the promise is about) or, without them, from
``cross_fitted_scores`` on the training queries.

The search runs over the thresholds a router can realise (``metrics.cut_points``, the cuts of
``metrics.cost_quality_curve``); every resample is evaluated at the same score cuts, with multinomial
query weights, in O(n) per resample.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from routers.errors import ArtifactError
from routers.evaluation.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from routers.evaluation.metrics import cut_points, threshold_at_cut
from routers.progress import progress
from routers.safe_io import load_arrays, save_arrays

if TYPE_CHECKING:
    from routers.base import Router
    from routers.data import RoutingDataset


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


# --- calibration data an artifact carries ------------------------------------------------------------
#: next to ``router.json``; holds the calibration queries' scores and both models' outcomes (no texts)
CALIBRATION_FILE = "quality_calibration.safetensors"


class QualityCalibration:
    """Labelled held-out evidence for ``router-X:quality=T``: the router's scores on calibration queries
    and both models' outcomes there, with the thresholds asked for so far cached by (target, confidence).

    ``source`` says where the evidence came from ("cross-fit, 5 folds over the training queries" or the
    labelled files a user calibrated on); it is reported with every quality-targeted decision.
    """

    def __init__(self, scores: np.ndarray, small: np.ndarray, large: np.ndarray, source: str) -> None:
        scores, small, large = (np.asarray(a, dtype=np.float64).ravel() for a in (scores, small, large))
        if not len(scores) == len(small) == len(large) or len(scores) == 0:
            raise ValueError("a quality calibration needs scores and both models' outcomes for the same "
                             f"queries (got {len(scores)}, {len(small)}, {len(large)})")
        keep = np.isfinite(scores) & np.isfinite(small) & np.isfinite(large)
        self.scores, self.small, self.large = scores[keep], small[keep], large[keep]
        if len(self.scores) == 0:
            raise ValueError("a quality calibration needs at least one query with a finite score and outcomes")
        self.source = source
        self._thresholds: dict[tuple[float, float], QualityThreshold] = {}

    def __len__(self) -> int:
        return len(self.scores)

    def threshold(self, target_ratio: float, confidence: float = DEFAULT_CONFIDENCE) -> QualityThreshold:
        """``threshold_for_quality`` on the calibration queries (computed once per target)."""
        key = (float(target_ratio), float(confidence))
        if key not in self._thresholds:
            self._thresholds[key] = threshold_for_quality(self.scores, self.small, self.large, target_ratio,
                                                          confidence=confidence)
        return self._thresholds[key]

    def manifest(self) -> dict[str, object]:
        """What ``router.json`` records about it (the arrays go to ``CALIBRATION_FILE``)."""
        return {"file": CALIBRATION_FILE, "n_queries": len(self), "source": self.source}

    def save(self, directory: Path) -> None:
        save_arrays(directory / CALIBRATION_FILE, {"scores": self.scores, "small": self.small, "large": self.large})

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, object]) -> QualityCalibration:
        path = directory / str(manifest.get("file", CALIBRATION_FILE))
        arrays = load_arrays(path)
        try:
            scores, small, large = arrays["scores"], arrays["small"], arrays["large"]
        except KeyError as exc:
            raise ArtifactError(f"{path}: missing tensor {exc}") from exc
        return cls(scores, small, large, str(manifest.get("source", "unknown")))


def calibration_from_scores(scores: np.ndarray, data: RoutingDataset, small_model: str, large_model: str,
                            source: str) -> QualityCalibration:
    """A calibration from a router's scores on labelled queries (both models' outcomes known)."""
    quality = data.performance_matrix([small_model, large_model])
    return QualityCalibration(scores, quality[:, 0], quality[:, 1], source)


def cross_fitted_scores(make_router: Callable[[], Router], data: RoutingDataset, folds: int,
                        seed: int = 0) -> np.ndarray:
    """Each query's score from a router fitted on the other folds (random k-fold over queries).

    This is how the shipped artifacts get calibration evidence without a labelled split of their own:
    no score comes from a router that saw the query's label. The deployed router is fitted on all the
    queries, so it is a little better than each fold's router; its quality at a threshold chosen on
    these scores is, if anything, a little higher than the calibration says.
    """
    if folds < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    if len(data) < folds:
        raise ValueError(f"{len(data)} queries cannot be split into {folds} folds")
    fold_of = np.random.default_rng(seed).permutation(len(data)) % folds
    scores = np.full(len(data), np.nan)
    for k in progress(range(folds), desc="cross-fitting calibration scores", unit="fold"):
        held_out = np.nonzero(fold_of == k)[0]
        router = make_router()
        router.fit(data.subset(np.nonzero(fold_of != k)[0].tolist()))
        scores[held_out] = router.dataset_scores(data.subset(held_out.tolist()))
    return scores
