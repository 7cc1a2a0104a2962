"""Pure helpers of the N-model side by side with llmrouter-lib (bench/llmrouter_lib_multimodel*.py).

None of these needs the lib's venv: the worker's helpers are plain numpy/json, imported by path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.llmrouter_lib_multimodel import (
    Curve,
    best_row,
    choice_points,
    evaluate_curves,
    paired_difference,
    relabel_weights,
)
from routers.evaluation.multimodel import Predictions, RouterRun, evaluate_runs, operating_points
from routers.selection import argmax_cheapest, weight_grid


def load_worker():
    path = ROOT / "bench/llmrouter_lib_multimodel_worker.py"
    spec = importlib.util.spec_from_file_location("lib_nmodel_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = load_worker()


def toy(n: int = 60, m: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    quality = (rng.random((n, m)) < np.linspace(0.3, 0.9, m)).astype(np.float64)
    cost = np.linspace(1e-4, 4e-3, m)[None, :] * (1 + rng.random((n, 1)))
    tasks = [f"t{i % 5}" for i in range(n)]
    return quality, cost, tasks


# --- the lib's input ------------------------------------------------------------------------------------------
def test_row_order_cheap_and_strong() -> None:
    cost = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]])
    quality = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert worker.row_order(cost) == [1, 2, 0]
    assert worker.row_order(cost, quality, "strong") == [0, 2, 1]  # mean quality 1.0, 0.5, 0.0
    with pytest.raises(ValueError):
        worker.row_order(cost, None, "strong")
    with pytest.raises(ValueError):
        worker.row_order(cost, quality, "dear")


def test_routing_rows_give_the_lib_label_the_tie_break_and_the_utility() -> None:
    models = ["cheap", "mid", "dear"]
    quality = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    cost = np.array([[1.0, 2.0, 3.0]] * 3)
    queries, tasks = ["a", "b", "c"], ["x", "x", "y"]
    cheap = worker.routing_rows(queries, tasks, models, quality, cost, 0.0, worker.row_order(cost))
    assert len(cheap) == 9 and {r["embedding_id"] for r in cheap} == {0, 1, 2}
    assert cheap[0] == {"task_name": "x", "query": "a", "model_name": "cheap", "performance": 1.0, "embedding_id": 0}
    assert worker.label_of_rows(cheap) == {"a": "cheap", "b": "mid", "c": "dear"}
    strong = worker.routing_rows(queries, tasks, models, quality, cost, 0.0, worker.row_order(cost, quality, "strong"))
    assert worker.label_of_rows(strong) == {"a": "dear", "b": "dear", "c": "dear"}
    # a cost weight: performance is the utility quality - L x cost
    utility = worker.routing_rows(queries, tasks, models, quality, cost, 0.6, worker.row_order(cost))
    assert [r["performance"] for r in utility if r["query"] == "b"] == pytest.approx([-0.6, -0.2, -0.8])
    assert worker.label_of_rows(utility)["b"] == "mid"
    # at 1.2, "mid" (1 - 2.4) loses to "cheap" (0 - 1.2) on b
    utility = worker.routing_rows(queries, tasks, models, quality, cost, 1.2, worker.row_order(cost))
    assert worker.label_of_rows(utility) == {"a": "cheap", "b": "cheap", "c": "cheap"}
    # the label is the utility argmax with ties to the cheaper, as our oracle choice
    utility = worker.routing_rows(queries, tasks, models, quality, cost, 0.6, worker.row_order(cost))
    expected = argmax_cheapest(quality - 0.6 * cost, cost)
    assert [worker.label_of_rows(utility)[q] for q in queries] == [models[j] for j in expected]


def test_unique_queries_and_spread_columns_and_softmax() -> None:
    assert worker.unique_queries(["a", "b", "a", "a"])[:2] == ["a", "b"]
    assert len(set(worker.unique_queries(["a", "b", "a", "a"]))) == 4
    spread = worker.spread_columns(np.array([[0.25, 0.75]]), ["m2", "m0"], ["m0", "m1", "m2"])
    assert spread.tolist() == [[0.75, 0.0, 0.25]]
    probabilities = worker.softmax(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]))
    assert np.allclose(probabilities, [[0.25, 0.75], [0.5, 0.5]])


# --- weights and curves ------------------------------------------------------------------------------------
def test_relabel_weights_stop_where_every_label_is_the_cheapest() -> None:
    quality, cost, _ = toy()
    weights = relabel_weights(quality, cost, 5)
    assert weights[0] == 0.0 and len(weights) == 6 and weights == sorted(weights)
    grid = weight_grid(cost)[1:]
    assert all(any(np.isclose(w, g) for g in grid) for w in weights[1:])
    last = weights[-1]
    assert np.array_equal(argmax_cheapest(quality - last * cost, cost), cost.argmin(axis=1))
    before = [g for g in grid if g < last]
    assert not np.array_equal(argmax_cheapest(quality - before[-1] * cost, cost), cost.argmin(axis=1))
    assert relabel_weights(quality, cost, 0) == [0.0]


def test_evaluate_curves_matches_evaluate_runs_on_prediction_sweeps() -> None:
    quality, cost, tasks = toy(80)
    rng = np.random.default_rng(3)
    runs, curves = [], []
    for name in ("a", "b"):
        predicted = np.clip(quality + rng.normal(0, 0.6, quality.shape), 0, 1)
        preds = Predictions(predicted, cost)
        run = RouterRun(name, preds, argmax_cheapest(predicted, cost), "cost=0", 1.0, 0.1)
        runs.append(run)
        curves.append(Curve(run, operating_points(preds, quality, cost), "ours" if name == "a" else "lib", "knn", ""))
    models = ["m0", "m1", "m2", "m3"]
    expected = evaluate_runs(runs, models, quality, cost, tasks, n_resamples=40, seed=1, compare_to="b")
    got = evaluate_curves(curves, models, quality, cost, tasks, 40, 1, "clusters")
    for e, g in zip(expected, got.reports, strict=True):
        assert g.aiq == pytest.approx(e.aiq) and g.quality == pytest.approx(e.quality)
        for key in ("aiq", "quality_at_best_single_cost", "gain_at_best_single_cost", "quality"):
            assert g.intervals[key].low == pytest.approx(e.intervals[key].low)
            assert g.intervals[key].high == pytest.approx(e.intervals[key].high)
    diff = paired_difference(got, 0, 1)
    paired = expected[0].intervals["aiq_minus_b"]
    assert diff.value == pytest.approx(paired.value)
    assert (diff.low, diff.high) == pytest.approx((paired.low, paired.high))
    assert best_row(curves, got.reports, "lib") == 1


def test_choice_points_read_the_chosen_cells() -> None:
    quality = np.array([[1.0, 0.0], [0.0, 1.0]])
    cost = np.array([[1.0, 2.0], [3.0, 4.0]])
    points = choice_points([0.0, 1.0], np.array([[0, 1], [1, 0]]), quality, cost)
    assert points.quality.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert points.cost.tolist() == [[1.0, 4.0], [2.0, 3.0]]
    q, c = points.means()
    assert q.tolist() == [1.0, 0.0] and c.tolist() == [2.5, 2.5]
