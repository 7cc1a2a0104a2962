"""The causal-LM router over N models (``routers.nmodel.causal``): best-of-N labels, the outcome table, the
label-shift correction, and a real fine-tune of a tiny random Llama on the synthetic clusters: it learns the
clusters, calibrates, routes by every rule, and saves and loads as JSON + safetensors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from routers.engines import Engines
from routers.errors import ArtifactError, ConfigError
from routers.nmodel.causal import (
    MultiModelCausalLMRouter,
    best_model_labels,
    held_out_indices,
    label_shares,
    outcome_table,
)
from tests.nmodel_synthetic import COSTS, MODELS, train_test


def test_best_model_is_the_highest_quality_and_ties_go_to_the_cheapest() -> None:
    quality = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.9, 0.5]])
    mean_cost = np.array([3.0, 1.0, 2.0])  # the middle column is the cheapest
    assert best_model_labels(quality, mean_cost).tolist() == [1, 1, 2, 1, 1]


def test_outcome_table_rows_are_shrunk_means_and_an_unseen_label_gets_the_mean() -> None:
    quality = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 0, 0])
    table = outcome_table(labels, quality, prior_strength=0.0)
    assert table[0] == pytest.approx([2 / 3, 1 / 3])
    shrunk = outcome_table(labels, quality, prior_strength=3.0)
    assert shrunk[0] == pytest.approx([2 / 3, 1 / 3])  # shrinking the mean toward itself changes nothing
    assert shrunk[1] == pytest.approx(quality.mean(axis=0))  # no query has label 1: the mean, not NaN
    one = outcome_table(np.array([0, 0, 1]), quality, prior_strength=1.0)
    assert one[1] == pytest.approx((quality[2] + quality.mean(axis=0)) / 2)


def test_label_shares_are_smoothed_and_sum_to_one() -> None:
    shares = label_shares(np.array([0, 0, 0, 2]), 3)
    assert shares.sum() == pytest.approx(1.0)
    assert shares.tolist() == pytest.approx([4 / 7, 1 / 7, 2 / 7])


def test_held_out_queries_cover_every_task_and_at_most_a_third() -> None:
    tasks = ["a"] * 60 + ["b"] * 30 + ["c"] * 9
    held = held_out_indices(tasks, 20, seed=0)
    assert 0 < len(held) <= len(tasks) // 3 + 1
    assert {tasks[i] for i in held} == {"a", "b", "c"}


def router_with_table(table: np.ndarray, shift: np.ndarray) -> MultiModelCausalLMRouter:
    router = MultiModelCausalLMRouter()
    router.models, router.table, router.label_shift = MODELS, table, shift
    return router


def test_expected_quality_mixes_the_table_rows_by_the_names_probabilities() -> None:
    table = np.array([[0.9, 0.8, 0.7], [0.1, 0.9, 0.9], [0.0, 0.2, 0.8]])
    router = router_with_table(table, np.zeros(3))
    sure = router.quality_from_logprobs(np.array([[-50.0, -0.01, -60.0]]))
    assert sure[0] == pytest.approx(table[1], abs=1e-6)
    even = router.quality_from_logprobs(np.array([[-3.0, -3.0, -3.0]]))
    assert even[0] == pytest.approx(table.mean(axis=0))
    # fine-tuning saw label 2 twice as often as the data has it: the shift takes that prior back out
    shifted = router_with_table(table, np.log(np.array([1.0, 1.0, 0.5]))).quality_from_logprobs(
        np.log(np.array([[0.25, 0.25, 0.5]])))
    assert shifted[0] == pytest.approx(table.mean(axis=0))
    with pytest.raises(ValueError, match="log-probabilities"):
        router.quality_from_logprobs(np.zeros((1, 2)))


def test_a_grid_is_refused_since_the_lm_is_fine_tuned_once() -> None:
    with pytest.raises(ConfigError, match="no grid search"):
        MultiModelCausalLMRouter({"grid": [{"lora_r": 8}]})


# --- a real fine-tune on a tiny random Llama ---------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tiny_model_dir: Path) -> MultiModelCausalLMRouter:
    train, _, _ = train_test()
    router = MultiModelCausalLMRouter({
        "base_model": str(tiny_model_dir), "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "learning_rate": 5e-2, "batch_size": 8, "max_length": 48, "num_epochs": 30, "max_steps": 150,
        "warmup_steps": 0, "max_train_examples": 60, "calibration_queries": 15, "score_batch_size": 16})
    router.fit(train)
    return router


@pytest.mark.slow
def test_fine_tuned_names_tell_the_clusters_apart(fitted: MultiModelCausalLMRouter) -> None:
    _, test, _ = train_test()
    quality = fitted.predict_quality(test.queries)
    assert quality.shape == (len(test), len(MODELS))
    table = fitted.table
    assert table is not None
    assert (quality >= table.min(axis=0) - 1e-9).all() and (quality <= table.max(axis=0) + 1e-9).all()
    # A 2-layer random model learns the clusters only partly: each cluster moves the names' probabilities its
    # own way (the cheap model's up on easy queries, the dear one's up on hard ones), and the qualities follow.
    best = fitted.best_probabilities(test.queries)
    by_task = {task: [i for i, t in enumerate(test.task_names) if t == task] for task in ("easy", "medium", "hard")}
    assert best[by_task["easy"], 0].mean() > best[by_task["hard"], 0].mean()
    assert best[by_task["hard"], 2].mean() > best[by_task["easy"], 2].mean()
    assert quality[by_task["easy"], 0].mean() > quality[by_task["hard"], 0].mean()
    metrics = fitted.train_metrics
    assert metrics["final_loss"] < metrics["first_loss"]
    assert metrics["n_finetuned"] <= 60 and metrics["n_calibration"] >= 10


@pytest.mark.slow
def test_every_rule_routes_and_cheap_rules_pick_cheaper_models(fitted: MultiModelCausalLMRouter) -> None:
    _, test, _ = train_test()
    queries = list(test.queries[:12])
    quality, cost = fitted.predict_quality(queries), fitted.estimate_costs(queries)
    assert cost[0] == pytest.approx(COSTS)
    spend = {}
    for rule in ("default", "cost=0", "cost=1000", "quality=0.9", "share=0.5", "budget=0.002"):
        chosen = fitted.choose(quality, cost, rule)
        spend[rule] = float(cost[np.arange(len(queries)), chosen].mean())
    assert spend["cost=1000"] <= spend["cost=0"]
    assert spend["budget=0.002"] <= 0.002
    decisions = fitted.route(queries[:2], "cost=0")
    assert decisions[0].candidates is not None and [c.model for c in decisions[0].candidates] == list(MODELS)


@pytest.mark.slow
def test_saved_router_loads_and_decides_the_same_over_engines(fitted: MultiModelCausalLMRouter,
                                                               tmp_path: Path) -> None:
    _, test, _ = train_test()
    queries = list(test.queries[:6])
    directory = fitted.save(tmp_path / "causal")
    assert {p.name for p in directory.iterdir()} >= {"router.json", "adapter", "causal.safetensors"}
    assert not list(directory.rglob("*.bin")) and not list(directory.rglob("*.pkl"))
    loaded = MultiModelCausalLMRouter.load(directory)
    expected = [d.model_name for d in fitted.route(queries, "cost=0")]
    assert [d.model_name for d in loaded.route(queries, "cost=0")] == expected
    engines = Engines(models={"router": loaded.local_generator()})
    served = asyncio.run(loaded.aroute_many(queries, engines, "cost=0"))
    assert [d.model_name for d in served] == expected
    with pytest.raises(ConfigError, match="router"):
        asyncio.run(loaded.aroute_many(queries, Engines(), "cost=0"))
    (directory / "causal.safetensors").unlink()
    with pytest.raises(ArtifactError):
        MultiModelCausalLMRouter.load(directory)
