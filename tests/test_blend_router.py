"""The blend router on real routing-data slices (a few MMLU subjects + GSM8K, real outcomes).

Query vectors come from a hashed bag of words served with ``LookupEmbedder`` (no model download, no
embedding cache), which is enough signal for GSM8K vs MMLU and for the weight choice to be exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.generalisation import factory
from routers.blend.model import HeadScale, choose_blend_weight, fit_heads, head_targets, pooled_apgr
from routers.blend.router import WEIGHTS_FILE, BlendRouter
from routers.config import load_config_file
from routers.data import RoutingDataset
from routers.engines.cache import LookupEmbedder
from routers.errors import ConfigError
from routers.evaluation import leave_domains_out
from routers.evaluation.generalisation import task_groups
from routers.registry import canonical_name, router_class
from tests.synthetic_data import HASHED_DIM

DIM = HASHED_DIM


def fitted(data: RoutingDataset, embedder: LookupEmbedder, **params: object) -> BlendRouter:
    router = BlendRouter(params, data.llm_data)
    router.bind_engines(embedder=embedder)
    router.fit(data)
    return router


def test_registered_and_config_loads(repo_root: Path) -> None:
    assert router_class(canonical_name("blend")) is BlendRouter
    config = load_config_file(repo_root / "configs/routers/blend.yaml")
    router = router_class(config.router)(config.router_params(), {})
    assert router.config.blend_weight is None and router.config.threshold_rule == "oracle_share"


def test_head_targets() -> None:
    targets = head_targets(np.array([1.0, 0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0, 0.0]), 0.5)
    assert targets["small_right"].tolist() == [1, 0, 0, 1]
    assert targets["small_ok"].tolist() == [1, 0, 1, 1]


def test_head_scale_is_strictly_increasing_beyond_the_training_range() -> None:
    scale = HeadScale.fit(np.random.default_rng(0).normal(size=500))
    logits = np.linspace(-10.0, 10.0, 2001)
    cdf = scale.cdf(logits)
    assert np.all(np.diff(cdf) > 0)
    assert cdf.min() >= 0.0 and cdf.max() <= 1.0 + 1e-5
    assert abs(scale.cdf(np.array([np.median(scale.quantiles)]))[0] - 0.5) < 0.01


def test_fit_chooses_the_weight_with_the_best_inner_apgr(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    data, embedder = real_slice
    router = fitted(data, embedder)
    grid = router.config.blend_grid
    assert len(router.inner_apgr) == len(grid)
    assert router.weights is not None
    assert router.weights.blend_weight == grid[int(np.argmax(router.inner_apgr))]
    scores = router.dataset_scores(data)
    assert scores.shape == (len(data),) and np.all((scores >= 0.0) & (scores <= 1.0 + 1e-5))
    pair = router.require_pair()
    quality = data.performance_matrix([pair.small, pair.large])
    assert pooled_apgr(scores, quality[:, 0], quality[:, 1]) > 0.5  # training fit: better than random
    # the oracle's share of training queries goes large at the calibrated threshold
    share = float(np.mean(scores < router.threshold))
    assert abs(share - float(np.mean(quality[:, 0] < quality[:, 1]))) < 0.05


def test_choice_is_a_function_of_the_training_data_only(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    data, embedder = real_slice
    x = embedder.embed(data.queries).astype(np.float64)
    pair = BlendRouter({}, data.llm_data).resolve_pair(data)
    quality = data.performance_matrix([pair.small, pair.large])
    args = (data, x, quality[:, 0], quality[:, 1], [0.0, 0.5, 1.0], 3, 1e-3, 0.5, 1)
    first, apgrs = choose_blend_weight(*args)
    again, apgrs_again = choose_blend_weight(*args)
    assert (first, apgrs) == (again, apgrs_again) and len(apgrs) == 3


def test_save_load_round_trip(real_slice: tuple[RoutingDataset, LookupEmbedder], tmp_path: Path) -> None:
    data, embedder = real_slice
    router = fitted(data, embedder)
    router.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blend.safetensors", "router.json"]
    manifest = json.loads((tmp_path / "router.json").read_text())
    assert manifest["state"]["weights_file"] == WEIGHTS_FILE
    loaded = BlendRouter.load(tmp_path)
    loaded.bind_engines(embedder=embedder)
    np.testing.assert_array_equal(loaded.dataset_scores(data), router.dataset_scores(data))
    assert loaded.threshold == router.threshold
    decision = loaded.route_single(data.queries[0])
    assert decision["model_name"] in data.models


def test_fixed_weight_and_single_domain_fallback(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    data, embedder = real_slice
    fixed = fitted(data, embedder, blend_weight=0.25)
    assert fixed.inner_apgr == [] and fixed.weights is not None and fixed.weights.blend_weight == 0.25
    gsm8k = data.subset(task_groups(data)["gsm8k"])
    single = fitted(gsm8k, embedder)
    assert single.weights is not None and single.weights.blend_weight == single.config.fallback_blend_weight


def test_constant_head_and_wrong_dimension(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    data, embedder = real_slice
    x = embedder.embed(data.queries).astype(np.float64)
    ones = np.ones(len(data))
    weights = fit_heads(x, ones, np.zeros(len(data)), 1e-3, 0.5, 0)  # small always right and never worse
    assert np.all(weights.coef == 0.0) and np.all(np.isfinite(weights.scores(x)))
    router = fitted(data, embedder, blend_weight=1.0)
    with pytest.raises(ConfigError, match="embedding size"):
        router.score_embeddings(np.zeros((2, DIM + 1)))


def test_runs_through_the_generalisation_bench_factory(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    data, embedder = real_slice
    make = factory("blend", {"seed": 0}, dict(data.llm_data), embedder)  # type: ignore[arg-type]
    result = leave_domains_out(make, data, n_folds=3)
    assert result.router == "blend" and result.n_queries == len(data)
    assert result.metrics["apgr"].value is not None
