"""Defences against confounder gadgets (Shafran et al., "Rerouting LLM Routers", 2025).

A *gadget* is a short string a client appends (or prepends) to its query so that an embedding router
scores the query as hard and sends it to the large model: the query embedding is a mean over tokens, so
a few chosen words move it. ``bench/gadget_attack.py`` finds such gadgets black-box over ``/v1/route``.

``window_max`` routes on the question rather than on whatever was added to it: the query's words are cut
at ``grid`` evenly spaced word positions, and every contiguous window covering at least ``min_fraction``
of the words is scored along with the whole query. The defended score is

    max(score(whole), max over windows of score(window) - margin)

so an added gadget lowers the score only if it lowers the score of *every* window, including the ones
that leave it out: a suffix or prefix of up to ``1 - min_fraction`` of the words is left out by some
window. ``margin`` keeps clean queries where they were (a window only counts when it beats the whole by
more than ``margin``). The score can only go up (fewer queries large at the same threshold). It costs one
embedding per window (``grid`` 2 / ``min_fraction`` 0.5, the shipped setting: the two halves), and only
for the queries that need it: routing scores the whole texts first and the windows only of the queries
whose whole text goes large (``windows: when_needed``), since a query the whole text keeps on the small
model stays there whatever its windows score. Decisions are those of the full defended score; the reported
score of a query kept small is its whole text's. Evaluation and calibration (``dataset_scores``,
``training_scores``) always score every window. Queries of fewer than ``min_words`` words are scored whole.

The defence is part of the router's config (``defence: {kind: window_max, ...}`` in
``configs/routers/*.yaml`` or an artifact's ``router.json``), so the library (``dataset_scores``,
``route_queries``) and the Serve app (``aroute_many``) score through the same code. Off by default.
With it on, ``fit`` calibrates the ``oracle_share`` threshold and records the training-score quantiles
(``router-X:share=``) on the *defended* scores of the training queries (``EmbeddingRouter.training_scores``:
the windows embedded once more, combined with the same plan), so turning the defence on keeps the
operating point. What the router learns (weights, Blend's head CDFs) is fitted on the whole queries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from routers.base import goes_large

_WORD = re.compile(r"\S+")


class GadgetDefenceConfig(BaseModel):
    """How an embedding router scores a query against appended / prepended gadgets."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["window_max"] = "window_max"
    grid: int = Field(default=4, ge=2, le=16, description="cut points: windows start and end at multiples of "
                      "1/grid of the query's words")
    min_fraction: float = Field(default=0.5, gt=0.0, le=1.0,
                                description="shortest window scored, as a fraction of the query's words")
    margin: float = Field(default=0.0, ge=0.0, description="a window counts only by what it beats the whole by, "
                          "less this")
    min_words: int = Field(default=8, ge=2, description="shorter queries are scored whole")
    windows: Literal["when_needed", "always"] = Field(
        default="when_needed", description="when routing, score the windows only of queries whose whole text "
        "goes to the large model (the defended score can only be higher, so the other decisions cannot "
        "change; their reported score is the whole query's); 'always': every query's defended score, for "
        "share_calibration.source: traffic")

    def needs_windows(self, whole_score: float, threshold: float) -> bool:
        """Whether routing needs this query's windows: always, or when its whole text goes large."""
        return self.windows == "always" or goes_large(whole_score, threshold)


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each whitespace-separated word."""
    return [m.span() for m in _WORD.finditer(text)]


def windows(text: str, grid: int, min_fraction: float, min_words: int) -> list[str]:
    """The contiguous word windows of ``text`` (original spacing and line breaks kept) that start and end
    at the ``grid`` cut points and cover at least ``min_fraction`` of the words; the whole text excluded.
    Duplicates are dropped, order is fixed (by start, then end)."""
    spans = word_spans(text)
    n = len(spans)
    if n < min_words:
        return []
    cuts = sorted({round(n * k / grid) for k in range(grid + 1)})
    shortest = max(1, int(np.ceil(min_fraction * n - 1e-9)))
    out: list[str] = []
    seen = {text}
    for i in cuts:
        for j in cuts:
            if j - i < shortest or (i == 0 and j == n):
                continue
            window = text[spans[i][0]:spans[j - 1][1]]
            if window not in seen:
                seen.add(window)
                out.append(window)
    return out


@dataclass(frozen=True)
class ScoringPlan:
    """The texts to embed for a batch of queries (each query's whole text first, then its windows), and
    which query each text belongs to."""

    texts: list[str]
    owner: np.ndarray
    margin: float

    @property
    def whole_mask(self) -> np.ndarray:
        """True at each query's whole text (the first of its texts), False at its windows."""
        mask = np.ones(len(self.owner), dtype=bool)
        mask[1:] = self.owner[1:] != self.owner[:-1]
        return mask

    def combine(self, scores: np.ndarray, n_queries: int) -> np.ndarray:
        """One defended score per query from the scores of ``texts``."""
        scores = np.asarray(scores, dtype=np.float64)
        return combine_scores(scores, self.owner, n_queries, self.margin)

    @property
    def window_texts(self) -> list[str]:
        return [text for text, whole in zip(self.texts, self.whole_mask, strict=True) if not whole]

    def combine_parts(self, whole: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """One defended score per query from the whole texts' scores and ``window_texts``' scores."""
        is_whole = self.whole_mask
        scores = np.empty(len(self.texts), dtype=np.float64)
        scores[is_whole] = whole
        scores[~is_whole] = windows
        return self.combine(scores, int(is_whole.sum()))


def combine_scores(scores: np.ndarray, owner: np.ndarray, n_queries: int, margin: float) -> np.ndarray:
    """``max(whole, max(windows) - margin)`` per query; the first text of each query is its whole text."""
    if len(scores) != len(owner):
        raise ValueError(f"{len(scores)} scores for {len(owner)} texts")
    first = np.full(n_queries, -1, dtype=np.int64)
    for index in range(len(owner) - 1, -1, -1):
        first[owner[index]] = index
    if (first < 0).any():
        raise ValueError("every query needs its whole text in the plan")
    whole = scores[first]
    best_window = np.full(n_queries, -np.inf)
    is_window = np.ones(len(owner), dtype=bool)
    is_window[first] = False
    np.maximum.at(best_window, owner[is_window], scores[is_window] - margin)
    return np.maximum(whole, best_window)


class WindowMaxDefence:
    def __init__(self, config: GadgetDefenceConfig) -> None:
        self.config = config

    def variants(self, text: str) -> list[str]:
        c = self.config
        return [text, *windows(text, c.grid, c.min_fraction, c.min_words)]

    def plan(self, queries: Sequence[str]) -> ScoringPlan:
        texts: list[str] = []
        owner: list[int] = []
        for index, query in enumerate(queries):
            variants = self.variants(query)
            texts.extend(variants)
            owner.extend([index] * len(variants))
        return ScoringPlan(texts, np.asarray(owner, dtype=np.int64), self.config.margin)


def build_defence(config: GadgetDefenceConfig | None) -> WindowMaxDefence | None:
    if config is None:
        return None
    return WindowMaxDefence(config)
