"""Evaluation among N models: cost-quality curves, AIQ, quality at the best single model's cost, cluster bootstrap.

A router's predictions on labelled test queries (every candidate's predicted quality and its cost estimate)
are swept over the cost weights of ``cost=L`` (``routers.selection.weight_grid``): each weight is one
operating point, its mean realised quality and mean realised cost (the data's own cost of the chosen calls).
Against that curve:

* the **single models**: each model's (mean cost, mean quality) point; the *best single model* is the one of
  highest quality (ties: the cheaper); their non-dominated frontier is drawn beside the routers;
* the **oracle**: per query the best model (ties: the cheapest), quality and cost;
* **AIQ** (RouterBench, Hu et al. 2024): the area under the curve's non-decreasing convex hull over a cost
  range, divided by the range. The range is the same for every router compared: from the cheapest to the
  dearest single model's mean cost; the hull is extended flat to the right of its last point and counts 0
  left of its first (as RouterBench's code, which integrates from the hull's first point);
* **quality at the best single model's cost**: the hull's quality there (interpolated), and the **cost to
  reach the best single model's quality**: the least cost at which the hull reaches it (None if never);
* **cluster bootstrap** (``ClusterBootstrap``): each resample draws task clusters (``task_name``) with
  replacement, then queries with replacement inside each drawn cluster (two-stage), so the interval covers
  which tasks the traffic comes from, not only which queries. Every router is evaluated on the *same*
  resamples, so differences between routers (and against the best single model) get paired intervals.
  With few clusters (RouterBench's pool has 2) the cluster stage is coarse; ``mode="stratified"`` keeps the
  tasks and resamples queries within each, ``mode="queries"`` ignores the clusters.

Everything a resample needs is a weighted mean over queries of (operating points x queries) matrices, so a
1000-resample interval of a whole curve costs a few matrix products.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from routers.evaluation.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    BootstrapMode,
    MetricInterval,
    cluster_resample_indices,
    percentile_interval,
)
from routers.selection import argmax_cheapest, pick_by_cost, weight_grid


# --- hull and AIQ -------------------------------------------------------------------------------------------
def nondecreasing_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of (cost, quality) points: the operating points a router reaches by
    mixing its points at random, keeping only the part where paying more buys quality.

    Upper concave hull by the monotone chain, cut at its highest point (past it, the hull falls; a user would
    stay at the highest point, so the curve goes on flat from there)."""
    cost, quality = np.asarray(cost, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    if cost.shape != quality.shape or cost.ndim != 1 or len(cost) == 0:
        raise ValueError("cost and quality must be 1-d arrays of the same, non-zero length")
    order = np.lexsort((-quality, cost))  # by cost; at equal cost the best quality first
    hull: list[tuple[float, float]] = []
    for x, y in zip(cost[order], quality[order], strict=True):
        if hull and x == hull[-1][0]:
            continue  # same cost, lower quality: below the hull
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point when it lies on or below the segment from hull[-2] to (x, y)
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append((x, y))
    points = np.array(hull)
    top = int(np.argmax(points[:, 1]))
    return points[: top + 1, 0], points[: top + 1, 1]


def hull_quality_at(hull_cost: np.ndarray, hull_quality: np.ndarray, cost: float) -> float | None:
    """The hull's quality at ``cost`` (flat right of its last point); None left of its first point."""
    if cost < hull_cost[0] - 1e-15:
        return None
    return float(np.interp(cost, hull_cost, hull_quality))


def hull_cost_to_reach(hull_cost: np.ndarray, hull_quality: np.ndarray, quality: float) -> float | None:
    """The least cost at which the hull reaches ``quality``; None when it never does."""
    if hull_quality[-1] < quality - 1e-12:
        return None
    if hull_quality[0] >= quality:
        return float(hull_cost[0])
    k = int(np.argmax(hull_quality >= quality - 1e-12))
    x1, x2, y1, y2 = hull_cost[k - 1], hull_cost[k], hull_quality[k - 1], hull_quality[k]
    return float(x1 + (quality - y1) * (x2 - x1) / (y2 - y1))


def aiq(hull_cost: np.ndarray, hull_quality: np.ndarray, low: float, high: float) -> float:
    """Area under the hull over [low, high], divided by ``high - low`` (0 left of the hull's first point, flat
    right of its last)."""
    if not high > low:
        raise ValueError(f"AIQ needs a cost range with high > low, got [{low}, {high}]")
    start = max(low, float(hull_cost[0]))
    if start >= high:
        return 0.0
    inside = hull_cost[(hull_cost > start) & (hull_cost < high)]
    xs = np.unique(np.concatenate([[start, high], inside]))
    ys = np.interp(xs, hull_cost, hull_quality)  # np.interp holds the last value: flat right of the hull
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / (high - low)


# --- curves -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictions:
    """What a router says about labelled test queries: predicted quality and cost estimates, (n, m) each."""

    quality: np.ndarray
    cost: np.ndarray


@dataclass(frozen=True)
class OperatingPoints:
    """A router's operating points on labelled queries: per cost weight, the realised quality and cost of
    every query's chosen model, (n_points, n_queries) each, and each point's weight."""

    weights: np.ndarray
    quality: np.ndarray
    cost: np.ndarray

    def means(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean quality and cost of each point, queries weighted by ``counts`` (a bootstrap draw) or equally."""
        if counts is None:
            return self.quality.mean(axis=1), self.cost.mean(axis=1)
        total = counts.sum()
        return self.quality @ counts / total, self.cost @ counts / total


def operating_points(predictions: Predictions, quality: np.ndarray, cost: np.ndarray,
                     weights: np.ndarray | None = None) -> OperatingPoints:
    """Sweep ``cost=L`` over ``weights`` (default: ``weight_grid`` of the realised costs)."""
    if weights is None:
        weights = weight_grid(cost)
    rows = np.arange(len(quality))
    chosen = np.stack([pick_by_cost(predictions.quality, predictions.cost, w) for w in weights])
    return OperatingPoints(np.asarray(weights), quality[rows, chosen], cost[rows, chosen])


def oracle_choice(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per query, the best model, the cheapest among equals."""
    return argmax_cheapest(np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64))


@dataclass(frozen=True)
class Reference:
    """The figures every router is compared with on one query set (and one bootstrap draw)."""

    model_quality: np.ndarray
    model_cost: np.ndarray
    oracle_quality: float
    oracle_cost: float

    @property
    def best_single(self) -> int:
        best = self.model_quality.max()
        tied = np.nonzero(self.model_quality >= best - 1e-12)[0]
        return int(tied[np.argmin(self.model_cost[tied])])

    @property
    def cost_range(self) -> tuple[float, float]:
        return float(self.model_cost.min()), float(self.model_cost.max())


def reference(quality: np.ndarray, cost: np.ndarray, counts: np.ndarray | None = None) -> Reference:
    n = len(quality)
    counts = np.ones(n) if counts is None else counts
    total = counts.sum()
    rows = np.arange(n)
    oracle = oracle_choice(quality, cost)
    return Reference(model_quality=counts @ quality / total, model_cost=counts @ cost / total,
                     oracle_quality=float(counts @ quality[rows, oracle] / total),
                     oracle_cost=float(counts @ cost[rows, oracle] / total))


def curve_metrics(points_quality: np.ndarray, points_cost: np.ndarray, ref: Reference,
                  best: int | None = None) -> dict[str, float | None]:
    """AIQ, quality at the best single model's cost, cost to reach its quality, for one curve. ``best`` fixes
    which model is "the best single" (a bootstrap resample compares with the model the whole test set names)."""
    hull_cost, hull_quality = nondecreasing_hull(points_cost, points_quality)
    low, high = ref.cost_range
    best = ref.best_single if best is None else best
    at_cost = hull_quality_at(hull_cost, hull_quality, float(ref.model_cost[best]))
    return {
        "aiq": aiq(hull_cost, hull_quality, low, high) if high > low else None,
        "quality_at_best_single_cost": at_cost,
        "gain_at_best_single_cost": None if at_cost is None else at_cost - float(ref.model_quality[best]),
        "cost_to_reach_best_single_quality": hull_cost_to_reach(hull_cost, hull_quality,
                                                                float(ref.model_quality[best])),
    }


def single_model_frontier_metrics(ref: Reference, best: int | None = None) -> dict[str, float | None]:
    """The same figures for the single models' points (a router that always sends every query to one model,
    mixed at random between two)."""
    return curve_metrics(ref.model_quality, ref.model_cost, ref, best)


# --- the cluster bootstrap ---------------------------------------------------------------------------------
def cluster_counts(clusters: Sequence[str | None], n_resamples: int, seed: int = 0,
                   mode: BootstrapMode = "clusters") -> Iterator[np.ndarray]:
    """Per resample, how many times each query is drawn (a float vector of length n), from
    ``cluster_resample_indices``' draws (``mode`` as there)."""
    n = len(clusters)
    for indices in cluster_resample_indices(clusters, n_resamples, seed, mode):
        yield np.bincount(indices, minlength=n).astype(np.float64)


# --- one evaluation of several routers on one query set ----------------------------------------------------
class MultiModelReport(BaseModel):
    """One router's figures on one N-model test set (``llmrouter evaluate --json`` prints one per router)."""

    model_config = ConfigDict(frozen=True)

    router: str
    n_queries: int
    n_clusters: int
    models: list[str]
    #: at the router's default operating point (``rule``)
    rule: str
    quality: float
    cost: float
    best_single_model: str
    best_single_quality: float
    best_single_cost: float
    oracle_quality: float
    oracle_cost: float
    aiq: float | None
    single_models_aiq: float | None
    quality_at_best_single_cost: float | None
    cost_to_reach_best_single_quality: float | None
    #: 95% bootstrap intervals (``bootstrap`` says how they resample); paired: ``gain_*`` is the router's
    #: quality at the best single model's cost minus that model's quality, ``aiq_gain_*`` its AIQ minus the
    #: single models' frontier's, both computed on the same resample
    intervals: dict[str, MetricInterval] = Field(default_factory=dict)
    bootstrap: str = ""
    fit_seconds: float | None = None
    route_seconds: float | None = None
    curve_cost: list[float] = Field(default_factory=list)
    curve_quality: list[float] = Field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """The fields ``--json`` prints (the curve left out)."""
        return self.model_dump(mode="json", exclude={"curve_cost", "curve_quality"})


@dataclass(frozen=True)
class RouterRun:
    """A router's predictions on the test set, the model index it picks per query at its default rule, and
    how long fitting and predicting took."""

    name: str
    predictions: Predictions
    default_choice: np.ndarray
    rule: str
    fit_seconds: float | None = None
    route_seconds: float | None = None


def resample_metrics(points: OperatingPoints, run: RouterRun, quality: np.ndarray, cost: np.ndarray,
                     counts: np.ndarray | None, best: int) -> dict[str, float | None]:
    """Every figure with an interval, on one draw (``counts``; None: the test set as it is), against single
    model ``best`` (the best on the whole test set: the paired comparison is with that model)."""
    ref = reference(quality, cost, counts)
    point_quality, point_cost = points.means(counts)
    figures = curve_metrics(point_quality, point_cost, ref, best)
    frontier = single_model_frontier_metrics(ref, best)
    rows = np.arange(len(quality))
    weights = np.ones(len(quality)) if counts is None else counts
    figures["quality"] = float(weights @ quality[rows, run.default_choice] / weights.sum())
    figures["cost"] = float(weights @ cost[rows, run.default_choice] / weights.sum())
    figures["aiq_gain_over_single_models"] = (None if figures["aiq"] is None or frontier["aiq"] is None
                                              else figures["aiq"] - frontier["aiq"])
    return figures


INTERVAL_KEYS = ("quality", "cost", "aiq", "quality_at_best_single_cost", "gain_at_best_single_cost",
                 "cost_to_reach_best_single_quality", "aiq_gain_over_single_models")


def evaluate_runs(runs: Sequence[RouterRun], models: Sequence[str], quality: np.ndarray, cost: np.ndarray,
                  clusters: Sequence[str | None], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  mode: BootstrapMode = "clusters", confidence: float = DEFAULT_CONFIDENCE,
                  compare_to: str | None = None) -> list[MultiModelReport]:
    """Each router's report on one labelled query set, the intervals on the same resamples for every router.
    ``compare_to`` names a router whose figures every router's are paired with: intervals
    ``aiq_minus_<name>`` and ``quality_at_best_single_cost_minus_<name>``, each difference taken per resample."""
    quality, cost = np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    ref = reference(quality, cost)
    best = ref.best_single
    all_points = [operating_points(run.predictions, quality, cost) for run in runs]
    points_figures = [resample_metrics(points, run, quality, cost, None, best)
                      for points, run in zip(all_points, runs, strict=True)]
    draws: list[dict[str, list[float]]] = [{key: [] for key in INTERVAL_KEYS} for _ in runs]
    for counts in cluster_counts(clusters, n_resamples, seed, mode):
        for k, (points, run) in enumerate(zip(all_points, runs, strict=True)):
            figures = resample_metrics(points, run, quality, cost, counts, best)
            for key in INTERVAL_KEYS:
                value = figures[key]
                draws[k][key].append(np.nan if value is None else float(value))
    paired_keys = ("aiq", "quality_at_best_single_cost")
    other = next((k for k, run in enumerate(runs) if run.name == compare_to), None)
    if compare_to is not None and other is None:
        raise ValueError(f"compare_to={compare_to!r} is not among the routers {[run.name for run in runs]}")
    frontier = single_model_frontier_metrics(ref, best)
    label = f"{confidence:.0%} percentile, {n_resamples} resamples of {mode}" + (
        " (task clusters, then queries within them)" if mode == "clusters" else "")
    reports = []
    for k, (points, run) in enumerate(zip(all_points, runs, strict=True)):
        figures = points_figures[k]
        intervals = {}
        for key in INTERVAL_KEYS:
            low, high = percentile_interval(np.asarray(draws[k][key]), confidence) if n_resamples else (None, None)
            intervals[key] = MetricInterval(value=figures[key], low=low, high=high)
        if other is not None:
            for key in paired_keys:
                mine, theirs = figures[key], points_figures[other][key]
                diffs = np.asarray(draws[k][key]) - np.asarray(draws[other][key])
                low, high = percentile_interval(diffs, confidence) if n_resamples else (None, None)
                value = None if mine is None or theirs is None else mine - theirs
                intervals[f"{key}_minus_{compare_to}"] = MetricInterval(value=value, low=low, high=high)
        point_quality, point_cost = points.means()
        reports.append(MultiModelReport(
            router=run.name, n_queries=len(quality), n_clusters=len(set(clusters)), models=list(models),
            rule=run.rule, quality=float(figures["quality"]), cost=float(figures["cost"]),
            best_single_model=models[best], best_single_quality=float(ref.model_quality[best]),
            best_single_cost=float(ref.model_cost[best]), oracle_quality=ref.oracle_quality,
            oracle_cost=ref.oracle_cost, aiq=figures["aiq"], single_models_aiq=frontier["aiq"],
            quality_at_best_single_cost=figures["quality_at_best_single_cost"],
            cost_to_reach_best_single_quality=figures["cost_to_reach_best_single_quality"],
            intervals=intervals, bootstrap=label, fit_seconds=run.fit_seconds, route_seconds=run.route_seconds,
            curve_cost=[float(c) for c in point_cost], curve_quality=[float(q) for q in point_quality]))
    return reports


# --- the PNG ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlotPanel:
    """One panel of the PNG: a test set's single models and the routers' reports on it."""

    title: str
    reports: Sequence[MultiModelReport]
    models: Sequence[str]
    model_quality: np.ndarray
    model_cost: np.ndarray


def plot_multimodel(panels: Sequence[PlotPanel], path: str | Path) -> Path:
    """Cost-quality curves (their hulls) of the routers beside the single models, their frontier and the
    oracle; one panel per test set, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from routers.evaluation.plot import save

    fig, axes = plt.subplots(1, len(panels), figsize=(8.0 * len(panels), 5.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        draw_multimodel_panel(ax, panel.reports, panel.models, panel.model_quality, panel.model_cost, panel.title)
    return save(fig, path)


def draw_multimodel_panel(ax: object, reports: Sequence[MultiModelReport], models: Sequence[str],
                          model_quality: np.ndarray, model_cost: np.ndarray, title: str = "") -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    ax.scatter(model_cost, model_quality, color="black", marker="o", s=18, zorder=3, label="single models")
    for name, x, y in zip(models, model_cost, model_quality, strict=True):
        ax.annotate(short_model_name(name), (x, y), fontsize=6.5, xytext=(3, -8), textcoords="offset points")
    hull_cost, hull_quality = nondecreasing_hull(np.asarray(model_cost), np.asarray(model_quality))
    ax.plot(hull_cost, hull_quality, color="black", linestyle=":", linewidth=1,
            label="single models' frontier")
    for report in reports:
        if report.router.endswith("oracle"):
            continue
        hc, hq = nondecreasing_hull(np.asarray(report.curve_cost), np.asarray(report.curve_quality))
        hc = np.append(hc, max(float(np.max(model_cost)), hc[-1]))
        hq = np.append(hq, hq[-1])
        aiq_text = "-" if report.aiq is None else f"{report.aiq:.3f}"
        ax.plot(hc, hq, linewidth=1.6, label=f"{report.router:<16} AIQ {aiq_text}")
    if reports:
        first = reports[0]
        ax.scatter([first.oracle_cost], [first.oracle_quality], marker="*", s=90, color="gold",
                   edgecolor="black", zorder=4, label=f"oracle {first.oracle_quality:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", prop={"family": "monospace", "size": 7.5}, framealpha=0.9)


def short_model_name(name: str) -> str:
    return name.split("/")[-1][:22]
