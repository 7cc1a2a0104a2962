"""N-model evaluation (``routers.evaluation.multimodel``): the hull, AIQ and the figures read off it on
hand-computed examples, the cluster bootstrap, and the reports."""

from __future__ import annotations

import numpy as np
import pytest

from routers.evaluation.multimodel import (
    Predictions,
    RouterRun,
    aiq,
    cluster_counts,
    evaluate_runs,
    hull_cost_to_reach,
    hull_quality_at,
    nondecreasing_hull,
)


def test_hull_drops_points_below_it_and_stops_at_the_highest() -> None:
    cost = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 2.0])
    quality = np.array([0.2, 0.3, 0.8, 0.7, 0.6, 0.25])
    hull_cost, hull_quality = nondecreasing_hull(cost, quality)
    # (2, 0.3) lies below the segment (1, 0.2)-(3, 0.8) (0.5 there); past (3, 0.8) the curve falls
    assert hull_cost.tolist() == [1.0, 3.0]
    assert hull_quality.tolist() == [0.2, 0.8]


def test_aiq_by_hand() -> None:
    hull_cost, hull_quality = np.array([1.0, 3.0]), np.array([0.2, 0.8])
    # over [1, 5]: trapezoid 1..3 = 2 x 0.5 = 1.0, flat 3..5 = 2 x 0.8 = 1.6; / 4
    assert aiq(hull_cost, hull_quality, 1.0, 5.0) == pytest.approx(2.6 / 4)
    # over [0, 5]: nothing left of the first point (RouterBench integrates from the hull's first point)
    assert aiq(hull_cost, hull_quality, 0.0, 5.0) == pytest.approx(2.6 / 5)
    # over [2, 3]: trapezoid from 0.5 to 0.8
    assert aiq(hull_cost, hull_quality, 2.0, 3.0) == pytest.approx(0.65)
    with pytest.raises(ValueError, match="high > low"):
        aiq(hull_cost, hull_quality, 2.0, 2.0)


def test_quality_at_a_cost_and_cost_to_reach_a_quality() -> None:
    hull_cost, hull_quality = np.array([1.0, 3.0]), np.array([0.2, 0.8])
    assert hull_quality_at(hull_cost, hull_quality, 2.0) == pytest.approx(0.5)
    assert hull_quality_at(hull_cost, hull_quality, 10.0) == pytest.approx(0.8)
    assert hull_quality_at(hull_cost, hull_quality, 0.5) is None
    assert hull_cost_to_reach(hull_cost, hull_quality, 0.5) == pytest.approx(2.0)
    assert hull_cost_to_reach(hull_cost, hull_quality, 0.1) == pytest.approx(1.0)
    assert hull_cost_to_reach(hull_cost, hull_quality, 0.9) is None


def test_cluster_bootstrap_draws_whole_clusters_then_queries_within() -> None:
    clusters = ["a"] * 3 + ["b"] * 5 + ["c"] * 2
    draws = list(cluster_counts(clusters, 200, seed=1))
    sizes = {"a": 3, "b": 5, "c": 2}
    for counts in draws:
        per_cluster = {name: counts[[i for i, c in enumerate(clusters) if c == name]].sum() for name in sizes}
        # each drawn cluster contributes its size: a cluster's total is a multiple of it
        assert all(per_cluster[name] % sizes[name] == 0 for name in sizes)
        assert sum(per_cluster[name] // sizes[name] for name in sizes) == 3
    # some resamples leave a whole cluster out
    assert any(counts[:3].sum() == 0 for counts in draws)
    again = list(cluster_counts(clusters, 200, seed=1))
    assert all(np.array_equal(x, y) for x, y in zip(draws, again, strict=True))
    for counts in cluster_counts(clusters, 50, seed=2, mode="stratified"):
        assert counts[:3].sum() == 3 and counts[3:8].sum() == 5 and counts[8:].sum() == 2
    for counts in cluster_counts(clusters, 50, seed=2, mode="queries"):
        assert counts.sum() == 10


def test_reports_a_router_that_beats_the_best_single_model() -> None:
    """Eight tasks of 5 queries: on the 'x' ones only the cheap model is right, on the 'y' ones only the dear
    one. A router that knows which is which gets quality 1 at about half the dear model's cost."""
    n = 40
    task = np.array([f"{'xy'[k % 2]}{k}" for k in range(8) for _ in range(5)])
    is_x = np.char.startswith(task, "x")
    quality = np.column_stack([is_x, ~is_x]).astype(np.float64)
    quality[0, 1] = 1.0  # the dear model is right on one 'x' query: it is the best single model
    cost = np.tile([0.001, 0.01], (n, 1))
    knows = RouterRun("knows", Predictions(quality, cost), quality.argmax(axis=1), "default")
    blind = RouterRun("blind", Predictions(np.tile([0.5, 0.52], (n, 1)), cost), np.ones(n, dtype=int), "default")
    reports = evaluate_runs([knows, blind], ("cheap", "dear"), quality, cost, task.tolist(), n_resamples=100)
    good, bad = reports
    assert good.best_single_model == "dear" and good.best_single_quality == pytest.approx(21 / 40)
    assert good.oracle_quality == 1.0 and good.quality == 1.0
    assert good.quality_at_best_single_cost == pytest.approx(1.0)
    gain = good.intervals["gain_at_best_single_cost"]
    assert gain.value == pytest.approx(19 / 40) and gain.low is not None and gain.low > 0
    # the blind router walks the two single models: its hull is the single models' frontier
    assert bad.aiq == pytest.approx(bad.single_models_aiq)
    assert bad.intervals["aiq_gain_over_single_models"].value == pytest.approx(0.0)
    assert good.aiq is not None and bad.aiq is not None and good.aiq > bad.aiq
    assert set(good.summary()) >= {"quality", "cost", "best_single_model", "best_single_quality", "best_single_cost",
                                   "oracle_quality", "aiq", "quality_at_best_single_cost"}


def test_routers_are_paired_on_the_same_resamples() -> None:
    n = 60
    task = [f"t{k}" for k in range(6) for _ in range(10)]
    rng = np.random.default_rng(0)
    quality = (rng.random((n, 3)) < [0.4, 0.6, 0.8]).astype(np.float64)
    cost = np.tile([0.001, 0.003, 0.01], (n, 1))
    run = RouterRun("a", Predictions(quality + 0.01 * rng.random((n, 3)), cost), quality.argmax(axis=1), "default")
    same = RouterRun("b", run.predictions, run.default_choice, "default")
    reports = evaluate_runs([run, same], ("m1", "m2", "m3"), quality, cost, task, n_resamples=50, compare_to="a")
    paired = reports[1].intervals["aiq_minus_a"]
    # the same predictions: the difference is 0 on every resample, whatever each AIQ's own spread
    assert paired.value == 0.0 and paired.low == 0.0 and paired.high == 0.0
    assert reports[1].intervals["aiq"].width is not None and reports[1].intervals["aiq"].width > 0
