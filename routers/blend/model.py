"""The blend router's two logistic heads, their CDF scales, and the blend weight chosen over domains.

Two L2-penalised logistic regressions on the standardised query embedding:

* ``small_right``: P(the small model is right), ``1[q_small >= correct_at]``: a difficulty estimate for
  the small model alone. It ignores the large model, which makes it the head that transfers best to
  subjects the router never saw (``bench/unseen_search.py``);
* ``small_ok``: P(the small model is as good as the large one), ``1[q_small >= q_large]``: Hybrid's
  deterministic label, the better head on seen subjects.

Each head's logit is mapped through the empirical CDF of its own training logits (``HeadScale``: 101 to
1001 quantiles, linear between them, plus a vanishing strictly increasing term so logits beyond the
training range still order), so both live on [0, 1] and blend as ``w * F_right + (1 - w) * F_ok``.

``choose_blend_weight`` picks w from a grid by leave-domains-out inside the training data: the task_name
groups are dealt into inner folds (``routers.evaluation.generalisation.group_folds``), both heads are
fitted on the other folds, and the w with the best pooled out-of-fold APGR wins (ties: the earlier).
Everything is numpy at inference; scikit-learn only fits the heads.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from routers.data import RoutingDataset
from routers.embedding import standardisation
from routers.errors import ArtifactError
from routers.safe_io import load_arrays, save_arrays

HEADS = ("small_right", "small_ok")
#: quantiles kept per head (fewer when there are fewer training queries)
MAX_QUANTILES = 1001
#: weight of the strictly increasing tie-breaking term of ``HeadScale.cdf`` (far below one quantile step)
TIE_BREAK = 1e-6


def head_targets(small: np.ndarray, large: np.ndarray, correct_at: float) -> dict[str, np.ndarray]:
    """0/1 targets of each head (module docstring)."""
    small, large = np.asarray(small, dtype=np.float64), np.asarray(large, dtype=np.float64)
    return {"small_right": (small >= correct_at).astype(np.int64), "small_ok": (small >= large).astype(np.int64)}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class HeadScale:
    """A head's training-logit quantiles: its logits -> their training CDF, strictly increasing."""

    quantiles: np.ndarray

    @classmethod
    def fit(cls, logits: np.ndarray) -> HeadScale:
        n = int(min(max(len(logits), 2), MAX_QUANTILES))
        return cls(np.quantile(np.asarray(logits, dtype=np.float64), np.linspace(0.0, 1.0, n)))

    def cdf(self, logits: np.ndarray) -> np.ndarray:
        q = self.quantiles
        levels = np.linspace(0.0, 1.0, len(q))
        spread = max(float(q[-1] - q[0]), 1e-12)
        tie_break = TIE_BREAK * sigmoid((logits - float(np.median(q))) / spread)
        return np.interp(logits, q, levels) + tie_break


def fit_part_scales(values: np.ndarray) -> np.ndarray:
    """(n_parts, n_quantiles): each column's training quantiles (``HeadScale.fit``), one row per part."""
    return np.stack([HeadScale.fit(values[:, k]).quantiles for k in range(values.shape[1])])


def part_cdfs(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """(n, n_parts): each column of ``values`` on its own training CDF (row k of ``quantiles``)."""
    return np.stack([HeadScale(quantiles[k]).cdf(values[:, k]) for k in range(len(quantiles))], axis=1)


def mix_parts(parts: np.ndarray, weight: float) -> np.ndarray:
    """``weight * first + (1 - weight) * second`` of two CDF-scaled parts (columns)."""
    return weight * parts[:, 0] + (1.0 - weight) * parts[:, 1]


@dataclass
class BlendWeights:
    """Shared standardisation, the two heads' linear logits, their CDF scales and the blend weight."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (2, dim), rows in HEADS order
    intercept: np.ndarray  # (2,)
    quantiles: np.ndarray  # (2, n_quantiles)
    blend_weight: float

    @property
    def embedding_dim(self) -> int:
        return int(self.coef.shape[1])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 2) logits of the two heads."""
        z = (np.asarray(embeddings, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def head_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 2): each head's logit on its training CDF scale."""
        return part_cdfs(self.logits(embeddings), self.quantiles)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        return mix_parts(self.head_scores(embeddings), self.blend_weight)

    def as_stored(self) -> BlendWeights:
        """Rounded to the float32 the artifact keeps, so a loaded router scores as the fitted one."""
        return BlendWeights(*(np.asarray(a, dtype=np.float32).astype(np.float64)
                              for a in (self.mean, self.scale, self.coef, self.intercept, self.quantiles)),
                            blend_weight=self.blend_weight)

    def save(self, path: Path) -> None:
        save_arrays(path, {name: np.asarray(getattr(self, name), dtype=np.float32)
                           for name in ("mean", "scale", "coef", "intercept", "quantiles")})

    @classmethod
    def load(cls, path: Path, blend_weight: float) -> BlendWeights:
        arrays = load_arrays(path)
        try:
            parts = [arrays[name].astype(np.float64) for name in ("mean", "scale", "coef", "intercept", "quantiles")]
        except KeyError as exc:
            raise ArtifactError(f"{path}: missing tensor {exc}") from exc
        mean, scale, coef, intercept, quantiles = parts
        dim = mean.shape[0]
        if (scale.shape != (dim,) or coef.shape != (len(HEADS), dim) or intercept.shape != (len(HEADS),)
                or quantiles.ndim != 2 or quantiles.shape[0] != len(HEADS)):
            raise ArtifactError(f"{path}: tensor shapes do not fit together")
        return cls(mean, scale, coef, intercept, quantiles, blend_weight)


def fit_logistic(z: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    """(coef, intercept) of an L2 logistic regression; a head whose targets are all one class is the
    constant at that class's clipped log-odds (no direction to learn)."""
    if len(np.unique(y)) < 2:
        rate = float(np.clip(np.mean(y), 1e-3, 1 - 1e-3))
        return np.zeros(z.shape[1]), float(np.log(rate / (1 - rate)))
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=500, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(z, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def fit_heads(x: np.ndarray, small: np.ndarray, large: np.ndarray, c: float, correct_at: float,
              seed: int, blend_weight: float = 0.5) -> BlendWeights:
    """Both heads and their CDF scales on (embeddings, the two models' quality)."""
    x = np.asarray(x, dtype=np.float64)
    mean, scale = standardisation(x)
    z = (x - mean) / scale
    targets = head_targets(small, large, correct_at)
    with threadpool_limits(limits=1, user_api="blas"):  # small matmuls: threads cost more than they save
        fitted = [fit_logistic(z, targets[name], c, seed) for name in HEADS]
    coef = np.stack([f[0] for f in fitted])
    intercept = np.array([f[1] for f in fitted])
    logits = z @ coef.T + intercept
    return BlendWeights(mean, scale, coef, intercept, fit_part_scales(logits), blend_weight)


def pooled_apgr(scores: np.ndarray, small: np.ndarray, large: np.ndarray) -> float:
    """APGR of one score vector (APGR reads the large-call share, so no prices are needed)."""
    from routers.evaluation.metrics import CostModel, apgr, cost_quality_curve

    n = len(scores)
    curve = cost_quality_curve(scores, small, large, CostModel(small=np.ones(n), large=np.ones(n)))
    return apgr(curve, float(np.mean(small)), float(np.mean(large)))


def best_weight(parts: np.ndarray, small: np.ndarray, large: np.ndarray,
                grid: Sequence[float]) -> tuple[float, list[float]]:
    """The grid's w whose ``mix_parts`` of the out-of-fold ``parts`` has the best APGR against the rows'
    ``small`` / ``large`` quality (ties: the earlier w), and every w's APGR."""
    apgrs = [pooled_apgr(mix_parts(parts, w), small, large) for w in grid]
    return float(grid[int(np.argmax(apgrs))]), apgrs


def choose_blend_weight(data: RoutingDataset, x: np.ndarray, small: np.ndarray, large: np.ndarray,
                        grid: Sequence[float], n_folds: int, c: float, correct_at: float,
                        seed: int) -> tuple[float, list[float]]:
    """The grid's w with the best pooled APGR over inner leave-domains-out folds of ``data`` (module
    docstring), and every w's APGR. ``x``, ``small``, ``large`` are ``data``'s rows, in order."""
    from routers.evaluation.generalisation import group_folds

    rows, heads = [], []
    for fold in group_folds(data, n_folds, seed):
        fit_rows, eval_rows = np.asarray(fold.fit_indices), np.asarray(fold.eval_indices)
        weights = fit_heads(x[fit_rows], small[fit_rows], large[fit_rows], c, correct_at, seed)
        rows.append(eval_rows)
        heads.append(weights.head_scores(x[eval_rows]))
    order = np.concatenate(rows)
    return best_weight(np.concatenate(heads), small[order], large[order], grid)
