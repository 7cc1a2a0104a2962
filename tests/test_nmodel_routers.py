"""The N-model routers (``routers.nmodel``) on small synthetic data: fit, predict, route by each rule, save and
load (JSON + safetensors), the registry's entries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from routers.engines import Engines
from routers.errors import ArtifactError, ConfigError
from routers.nmodel.base import CostEstimator, MultiModelRouter, stratified_folds
from routers.nmodel.evaluate import fit_and_predict, leave_tasks_out, task_folds
from routers.registry import is_multimodel, multimodel_router_class, multimodel_router_names, router_class
from tests.nmodel_synthetic import COSTS, MODELS, train_test

FAST = {"nmodel_mlp": {"epochs": 25, "batch_size": 32, "learning_rate": 1e-2, "grid": [{"hidden": 16}], "cv_folds": 3},
        "nmodel_mf": {"epochs": 25, "batch_size": 32, "learning_rate": 1e-2, "grid": [{"hidden": 4}], "cv_folds": 3},
        "nmodel_knn": {"cv_folds": 3},
        "nmodel_blend": {"epochs": 25, "batch_size": 32, "learning_rate": 1e-2, "mlp": {"hidden": 16}, "knn_k": 10,
                         "grid": [{"weight": 0.3}, {"weight": 0.7}], "cv_folds": 3}}
LEARNED = ("nmodel_mlp", "nmodel_mf", "nmodel_knn", "nmodel_blend")


def fitted(name: str) -> MultiModelRouter:
    train, _, embedder = train_test()
    router = multimodel_router_class(name)(FAST.get(name, {})).bind_engines(embedder)
    router.fit(train)
    return router


@pytest.fixture(scope="module", params=LEARNED)
def learned(request: pytest.FixtureRequest) -> MultiModelRouter:
    return fitted(request.param)


def test_the_registry_lists_the_n_model_routers_apart() -> None:
    assert set(multimodel_router_names()) == {"nmodel_mlp", "nmodel_mf", "nmodel_knn", "nmodel_blend", "nmodel_causal",
                                              "nmodel_desc", "nmodel_single", "nmodel_random", "nmodel_oracle"}
    assert is_multimodel("knn_n") and not is_multimodel("knn")
    with pytest.raises(ConfigError, match="chooses among N models"):
        router_class("nmodel_mlp")
    with pytest.raises(ConfigError, match="chooses between two models"):
        multimodel_router_class("hybrid_llm")


def test_learned_routers_read_the_cluster_from_the_embedding(learned: MultiModelRouter) -> None:
    _, test, _ = train_test()
    quality, cost = learned.dataset_predictions(test)
    assert quality.shape == (len(test), 3) and np.all((quality >= 0) & (quality <= 1))
    assert np.allclose(cost, COSTS, rtol=1e-6)
    by_task = {task: quality[[i for i, t in enumerate(test.task_names) if t == task]].mean(axis=0)
               for task in ("easy", "medium", "hard")}
    # the cheap model looks good on easy queries only, the dear one everywhere
    assert by_task["easy"][0] > 0.6 > by_task["hard"][0]
    assert by_task["hard"][2] > by_task["hard"][0]
    decisions = learned.route(["easy query 2-0", "hard query 2-0"], "cost=20")
    assert [d.model_name for d in decisions] == ["cheap", "dear"]
    assert decisions[0].rule == "cost=20" and [c.model for c in decisions[0].candidates] == list(MODELS)
    assert decisions[0].to_dict()["candidates"][0]["cost"] == pytest.approx(COSTS[0])


def test_each_rule_routes(learned: MultiModelRouter) -> None:
    queries = [f"{t} query 2-{i}" for t in ("easy", "medium", "hard") for i in range(5)]
    assert {d.model_name for d in learned.route(queries, "budget=0.00001")} == {"cheap"}  # nothing fits: cheapest
    assert {d.model_name for d in learned.route(queries, "cost=1000000")} == {"cheap"}
    assert sum(d.model_name == "dear" for d in learned.route(queries, "share=0.0")) == 0
    default = learned.route(queries)
    assert "default" in default[0].reason and default[-1].model_name == "dear"
    cheaper = [d.model_name for d in learned.route(queries, "quality=0.5")]
    assert sum(m == "dear" for m in cheaper) <= sum(d.model_name == "dear" for d in default)


def test_save_and_load_give_the_same_decisions(learned: MultiModelRouter, tmp_path: Path) -> None:
    _, test, embedder = train_test()
    learned.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl")) and list(tmp_path.glob("*.safetensors"))
    manifest = json.loads((tmp_path / "router.json").read_text())
    assert manifest["kind"] == "multimodel" and manifest["models"] == list(MODELS)
    loaded = multimodel_router_class(learned.name).load(tmp_path).bind_engines(embedder)
    assert np.allclose(loaded.predict_quality(test.queries), learned.predict_quality(test.queries))
    for rule in (None, "quality=0.9", "share=0.2", "budget=0.002"):
        assert ([d.model_name for d in loaded.route(test.queries, rule)]
                == [d.model_name for d in learned.route(test.queries, rule)])
    async_decisions = asyncio.run(loaded.aroute_many(test.queries[:3], Engines(embedder=embedder), "cost=20"))
    assert [d.model_name for d in async_decisions] == [d.model_name for d in loaded.route(test.queries[:3], "cost=20")]


def test_loading_checks_the_artifact(tmp_path: Path) -> None:
    router = fitted("nmodel_knn")
    router.save(tmp_path)
    with pytest.raises(ArtifactError, match="not 'nmodel_mlp'"):
        multimodel_router_class("nmodel_mlp").load(tmp_path)
    (tmp_path / "bank.safetensors").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="not a valid safetensors"):
        multimodel_router_class("nmodel_knn").load(tmp_path)


def test_baselines() -> None:
    train, test, _ = train_test()
    _, single = fit_and_predict("nmodel_single", train, test, None)
    assert np.all(single.default_choice == single.default_choice[0])  # one model for every query
    _, oracle = fit_and_predict("nmodel_oracle", train, test, None)
    rows = np.arange(len(test))
    assert test.quality[rows, oracle.default_choice].mean() == test.quality.max(axis=1).mean()
    random_router, random_run = fit_and_predict("nmodel_random", train, test, None)
    again = random_router.predict_quality(test.queries)
    assert np.array_equal(again, random_run.predictions.quality)  # seeded by the query text
    with pytest.raises(ConfigError, match="needs the labels"):
        multimodel_router_class("nmodel_oracle")({}).route(["q"])


def test_cost_estimator_recovers_price_times_tokens() -> None:
    queries = ["x" * n for n in (40, 400, 4000, 120)]
    tokens = np.array([10, 100, 1000, 30], dtype=np.float64)
    cost = np.column_stack([2e-7 * tokens, 1e-6 * tokens + 1e-4])
    estimator = CostEstimator.fit(queries, cost)
    assert np.allclose(estimator.predict(queries), cost)
    assert np.allclose(CostEstimator.from_json(estimator.to_json(), 2).predict(["x" * 80]), [[4e-6, 1.2e-4]])


def test_folds_stratify_by_task_and_leave_tasks_out() -> None:
    train, _, embedder = train_test()
    folds = stratified_folds(train.task_names, 4, seed=0)
    for k in range(4):
        assert {train.task_names[i] for i in np.nonzero(folds == k)[0]} == {"easy", "medium", "hard"}
    groups = task_folds(train.task_names, 3)
    assert sorted(len({train.task_names[i] for i in g}) for g in groups) == [1, 1, 1]
    run = leave_tasks_out("nmodel_knn", train, 3, embedder, FAST["nmodel_knn"])
    assert run.predictions.quality.shape == (len(train), 3) and np.isfinite(run.predictions.quality).all()
    with pytest.raises(ConfigError, match="2 to 3 folds"):
        task_folds(train.task_names, 4)


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="default_rule"):
        multimodel_router_class("nmodel_knn")({"default_rule": "budget=0.1"})
    with pytest.raises(ConfigError, match="cv_folds"):
        multimodel_router_class("nmodel_mlp")({"cv_folds": 1})
