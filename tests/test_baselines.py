"""Reference routers: smallest, largest, random, oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routers.base import Router
from routers.baselines import LargestLLMRouter, OracleRouter, RandomRouter, SmallestLLMRouter
from routers.errors import ConfigError, NotFittedError
from routers.evaluation import evaluate_router
from routers.registry import canonical_name, router_class, router_names


def fitted(router: Router, data) -> Router:
    router.fit(data)
    return router


def test_smallest_and_largest(random_routing_dataset) -> None:
    small = evaluate_router(fitted(SmallestLLMRouter(), random_routing_dataset), random_routing_dataset)[0]
    large = evaluate_router(fitted(LargestLLMRouter(), random_routing_dataset), random_routing_dataset)[0]
    assert small.large_share == 0.0 and small.quality == pytest.approx(small.quality_small)
    assert large.large_share == 1.0 and large.quality == pytest.approx(large.quality_large)
    assert small.cost < large.cost
    decision = fitted(LargestLLMRouter(), random_routing_dataset).route_single("hello?")
    assert decision["model_name"] == "large-llm" and decision["reason"] == "always the largest model"
    decision = fitted(SmallestLLMRouter(), random_routing_dataset).route_single({"query": "hello?"})
    assert decision["model_name"] == "small-llm" and decision["cost"] > 0


def test_random_router_share_and_reproducibility(random_routing_dataset) -> None:
    router = fitted(RandomRouter({"large_share": 0.3, "seed": 7}), random_routing_dataset)
    scores = router.dataset_scores(random_routing_dataset)
    assert np.array_equal(scores, router.dataset_scores(random_routing_dataset))
    report, _ = evaluate_router(router, random_routing_dataset)
    assert report.large_share == pytest.approx(0.3, abs=0.08)
    decision = router.route_single("What is 2+2?")
    assert decision["model_name"] in {"small-llm", "large-llm"} and 0 <= decision["random_draw"] < 1
    assert decision["use_large"] == (decision["random_draw"] < 0.3)


def test_random_apgr_near_half_and_oracle_above_one(make_routing_dataset) -> None:
    rng = np.random.default_rng(99)  # independent of RandomRouter's default seed 0
    data = make_routing_dataset(rng.random(4000) < 0.5, rng.random(4000) < 0.8)
    random_report = evaluate_router(fitted(RandomRouter(), data), data)[0]
    oracle_report = evaluate_router(fitted(OracleRouter(), data), data)[0]
    assert random_report.apgr == pytest.approx(0.5, abs=0.05)
    assert oracle_report.apgr > 1.0
    # At its default threshold the oracle escalates exactly the queries only the large model gets right.
    matrix = data.performance_matrix(["small-llm", "large-llm"])
    assert oracle_report.quality == pytest.approx(np.maximum(matrix[:, 0], matrix[:, 1]).mean())
    assert oracle_report.large_share == pytest.approx(np.mean(matrix[:, 1] > matrix[:, 0]))


def test_oracle_cannot_route_live(random_routing_dataset) -> None:
    with pytest.raises(ConfigError, match="evaluation only"):
        fitted(OracleRouter(), random_routing_dataset).route_single("q")


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="large_shar"):
        RandomRouter({"large_shar": 0.2})


def test_no_pair_before_fit() -> None:
    with pytest.raises(NotFittedError):
        SmallestLLMRouter().route_single("q")


def test_save_and_load_round_trip(random_routing_dataset, tmp_path: Path) -> None:
    router = fitted(RandomRouter({"large_share": 0.2, "seed": 5}), random_routing_dataset).with_threshold(0.4)
    router.save(tmp_path / "random")
    loaded = RandomRouter.load(tmp_path / "random")
    assert loaded.threshold == 0.4 and loaded.pair == router.pair
    assert np.array_equal(loaded.dataset_scores(random_routing_dataset), router.dataset_scores(random_routing_dataset))
    assert {p.name for p in (tmp_path / "random").iterdir()} == {"router.json"}


def test_registry_names_and_aliases() -> None:
    assert canonical_name("Largest") == "largest_llm" and canonical_name("causal-lm") == "causallm_router"
    assert router_class("smallest") is SmallestLLMRouter
    assert {"hybrid_llm", "automix", "causallm_router", "policy_router"} <= set(router_names())
    with pytest.raises(ConfigError, match="known routers"):
        canonical_name("nope")
