"""Training labels of the Hybrid LLM router (Ding et al., "Hybrid LLM", ICLR 2024).

With q_s, q_l the small and large model's quality on a query, the quality gap is g = q_s - q_l and:

* ``deterministic``: y = 1[q_s >= q_l] (the small model is at least as good);
* ``probabilistic``: y = sigmoid(g / tau), a soft label; tau -> 0 recovers the deterministic label;
* ``transformed``: y = 1[q_s >= q_l - t*] = 1[g >= -t*], a relaxed label that also counts queries where
  the small model is at most t* worse. The paper picks t* to maximise the average pairwise label
  difference (1/N^2) sum_{i,j} |y_i - y_j| = 2 p (1 - p), p the share of positive labels: the labels
  are as informative (as far from all-equal) as possible, which is the most balanced split.
  ``choose_t_star`` sweeps every distinct relaxation that changes the labels (t = -g_i) and keeps the
  one maximising 2 p (1 - p); ties go to the smallest t (the least relaxation).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

LabelMode = Literal["deterministic", "probabilistic", "transformed"]


def quality_gap(small_quality: np.ndarray, large_quality: np.ndarray) -> np.ndarray:
    return np.asarray(small_quality, dtype=np.float64) - np.asarray(large_quality, dtype=np.float64)


def deterministic_labels(gap: np.ndarray) -> np.ndarray:
    return (np.asarray(gap) >= 0).astype(np.float64)


def probabilistic_labels(gap: np.ndarray, tau: float) -> np.ndarray:
    if tau <= 0:
        raise ValueError("router_tau must be > 0")
    return 1.0 / (1.0 + np.exp(-np.asarray(gap, dtype=np.float64) / tau))


def transformed_labels(gap: np.ndarray, t_star: float) -> np.ndarray:
    return (np.asarray(gap) >= -t_star).astype(np.float64)


def pairwise_label_difference(labels: np.ndarray) -> float:
    """(1/N^2) sum_{i,j} |y_i - y_j| for 0/1 labels, i.e. 2 p (1 - p)."""
    p = float(np.mean(labels)) if len(labels) else 0.0
    return 2.0 * p * (1.0 - p)


def choose_t_star(gap: np.ndarray) -> float:
    """The relaxation t* >= 0 maximising the average pairwise label difference (see module docstring)."""
    gap = np.asarray(gap, dtype=np.float64)
    if len(gap) == 0:
        raise ValueError("cannot choose t* from no queries")
    candidates = np.unique(np.concatenate([[0.0], np.clip(-gap, 0.0, None)]))
    best_t, best_value = 0.0, -1.0
    for t in candidates:  # ascending, so ties keep the smallest relaxation
        value = pairwise_label_difference(transformed_labels(gap, float(t)))
        if value > best_value + 1e-12:
            best_t, best_value = float(t), value
    return best_t


def make_labels(gap: np.ndarray, mode: LabelMode, tau: float = 0.1,
                t_star: float | None = None) -> tuple[np.ndarray, float | None]:
    """Labels for ``mode``; returns (labels, the t* used or None)."""
    if mode == "deterministic":
        return deterministic_labels(gap), None
    if mode == "probabilistic":
        return probabilistic_labels(gap, tau), None
    if mode == "transformed":
        t = choose_t_star(gap) if t_star is None else float(t_star)
        return transformed_labels(gap, t), t
    raise ValueError(f"unknown router_mode {mode!r}")
