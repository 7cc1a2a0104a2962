"""The domain-prior router on real routing-data slices (a few MMLU subjects + GSM8K, real outcomes).

``real_slice`` (conftest): query vectors are hashed bags of words served with ``LookupEmbedder`` (no model
download), which separates the subjects well enough for the domain classifier and the weight choice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from routers.blend.model import pooled_apgr
from routers.config import load_config_file
from routers.data import QueryExample, RoutingDataset
from routers.domain_prior.model import PriorSettings, fit_prior, fit_topics, shrunk_mean
from routers.domain_prior.router import WEIGHTS_FILE, DomainPriorRouter
from routers.engines import Embedder
from routers.engines.cache import LookupEmbedder
from routers.errors import ArtifactError
from routers.evaluation.generalisation import task_groups
from routers.registry import canonical_name, router_class
from tests.synthetic_data import HASHED_DIM, hashed_vector


def fitted(data: RoutingDataset, embedder: LookupEmbedder, **params: object) -> DomainPriorRouter:
    router = DomainPriorRouter({"min_topic_queries": 20, **params}, data.llm_data)
    router.bind_engines(embedder=embedder)
    router.fit(data)
    return router


def quality_of(router: DomainPriorRouter, data: RoutingDataset) -> tuple[np.ndarray, np.ndarray]:
    pair = router.require_pair()
    quality = data.performance_matrix([pair.small, pair.large])
    return quality[:, 0], quality[:, 1]


def test_registered_and_config_loads(repo_root: Path) -> None:
    assert router_class(canonical_name("domain")) is DomainPriorRouter
    config = load_config_file(repo_root / "configs/routers/domain_prior.yaml")
    router = router_class(config.router)(config.router_params(), {})
    assert router.config.blend_weight is None and router.config.threshold_rule == "oracle_share"
    assert router.config.settings() == PriorSettings()  # the yaml spells out the class defaults


def test_fit_chooses_the_weight_with_the_best_inner_apgr(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    data, embedder = real_slice
    router = fitted(data, embedder)
    grid = router.config.blend_grid
    assert len(router.inner_apgr) == len(grid)
    assert router.weights is not None
    assert router.weights.blend_weight == grid[int(np.argmax(router.inner_apgr))]
    assert router.weights.domains == sorted(task_groups(data))
    assert router.train_metrics["n_topics"] > 0  # 60-query subjects split into topics of >= 20
    scores = router.dataset_scores(data)
    assert scores.shape == (len(data),) and np.all((scores >= 0.0) & (scores <= 1.0 + 1e-5))
    small, large = quality_of(router, data)
    assert pooled_apgr(scores, small, large) > 0.5  # training fit: better than random
    share = float(np.mean(scores < router.threshold))
    assert abs(share - float(np.mean(small < large))) < 0.05  # oracle_share calibration


def test_the_domain_classifier_names_the_subject(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    data, embedder = real_slice
    router = fitted(data, embedder, blend_weight=1.0)
    assert router.weights is not None
    x = embedder.embed(data.queries).astype(np.float64)
    named = [router.weights.domains[k] for k in router.weights.domain_probabilities(x).argmax(axis=1)]
    truth = [e.task_name for e in data.examples]
    assert np.mean([a == b for a, b in zip(named, truth, strict=True)]) > 0.6  # 7 subjects: chance is 1/7
    decision = router.route_single(next(q for q, t in zip(data.queries, truth, strict=True) if t == "gsm8k"))
    assert decision["domain"] == "gsm8k" and 0.0 < decision["domain_probability"] <= 1.0
    # w = 1: the score is the prior alone, so it orders queries as the expected gap does
    prior = router.weights.part_values(x)[:, 0]
    np.testing.assert_array_equal(np.argsort(router.score_matrix(x), kind="stable"),
                                  np.argsort(prior, kind="stable"))


def test_the_prior_is_the_domain_mixture_of_shrunk_rates() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3.0, 1.0, (80, 8)), rng.normal(-3.0, 1.0, (80, 8))])
    gap = np.concatenate([np.zeros(80), -np.ones(80)])  # domain b: the large model always wins
    weights = fit_prior(x, gap, ["a"] * 80 + ["b"] * 80, PriorSettings(prior_strength=20.0, sub_clusters=0))
    overall = -0.5
    np.testing.assert_allclose(weights.domain_rate, [shrunk_mean(np.zeros(80), overall, 20.0),
                                                      shrunk_mean(-np.ones(80), overall, 20.0)])
    assert weights.domain_rate[0] == pytest.approx(-0.1) and len(weights.centroids) == 0
    values = weights.part_values(x)
    assert values[:80, 0].mean() > values[80:, 0].mean() + 0.5  # domain a's queries look small-suitable


def test_topics_need_enough_queries() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centres, rates = fit_topics(x, np.zeros(40), 0.0, PriorSettings(sub_clusters=8, min_topic_queries=50))
    assert centres.shape == (0, 6) and rates.shape == (0,)
    centres, rates = fit_topics(x, np.zeros(40), 0.0, PriorSettings(sub_clusters=8, min_topic_queries=10))
    assert centres.shape == (4, 6) and np.allclose(np.linalg.norm(centres, axis=1), 1.0)


def test_save_load_round_trip(real_slice: tuple[RoutingDataset, LookupEmbedder], tmp_path: Path) -> None:
    data, embedder = real_slice
    router = fitted(data, embedder)
    router.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_FILE, "router.json"]
    manifest = json.loads((tmp_path / "router.json").read_text())
    assert manifest["state"]["domains"] == router.require_weights().domains
    loaded = DomainPriorRouter.load(tmp_path)
    loaded.bind_engines(embedder=embedder)
    np.testing.assert_array_equal(loaded.dataset_scores(data), router.dataset_scores(data))
    assert loaded.threshold == router.threshold
    assert loaded.route_single(data.queries[0]) == router.route_single(data.queries[0])


def test_a_damaged_artifact_is_refused(real_slice: tuple[RoutingDataset, LookupEmbedder], tmp_path: Path) -> None:
    data, embedder = real_slice
    fitted(data, embedder, blend_weight=0.5).save(tmp_path)
    manifest = json.loads((tmp_path / "router.json").read_text())
    manifest["state"]["domains"] = manifest["state"]["domains"][:-1]
    (tmp_path / "router.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="tensor shapes do not fit together"):
        DomainPriorRouter.load(tmp_path)
    manifest["state"]["domains"] = "gsm8k"
    (tmp_path / "router.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="'domains' must be the list"):
        DomainPriorRouter.load(tmp_path)


def test_one_domain_and_rows_without_a_task_name(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    """Without task names every query is one domain: the prior is its topics' rates alone."""
    data, embedder = real_slice
    unnamed = RoutingDataset([QueryExample(**{**e.model_dump(), "task_name": None}) for e in data.examples],
                             data.llm_data)
    router = fitted(unnamed, embedder)
    assert router.weights is not None and router.weights.domains == ["(no task_name)"]
    assert router.train_metrics["n_topics"] >= 2
    scores = router.dataset_scores(unnamed)
    assert np.all(np.isfinite(scores)) and len(np.unique(scores)) > 10


class HashedWords(Embedder):
    """``hashed_vector`` of any text (the defended path embeds windows of words no lookup table holds)."""

    dim = HASHED_DIM
    model_name = "hashed-words"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([hashed_vector(t) for t in texts], dtype=np.float32)


def test_the_defended_path_names_the_domain_too(real_slice: tuple[RoutingDataset, LookupEmbedder]) -> None:
    """With a gadget defence the score is the max over windows, but the domain is the whole query's."""
    data, _ = real_slice
    router = fitted(data, HashedWords(), blend_weight=0.75, defence={"kind": "window_max"})
    plain = fitted(data, HashedWords(), blend_weight=0.75)
    query = next(q for q, e in zip(data.queries, data.examples, strict=True) if e.task_name == "gsm8k")
    defended, undefended = router.route_single(query), plain.route_single(query)
    assert defended["domain"] == undefended["domain"] == "gsm8k"
    assert defended["domain_probability"] == undefended["domain_probability"]
