"""With a gadget defence on, ``fit`` calibrates the threshold and the reference quantiles on the defended
training scores (``EmbeddingRouter.training_scores``); with it off, nothing changes."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from routers.base import REFERENCE_QUANTILES
from routers.data import ModelOutcome, QueryExample, RoutingDataset
from routers.embedding import EmbeddingRouter
from routers.engines import Embedder
from routers.errors import ConfigError
from routers.evaluation.calibrate import threshold_for_large_share
from routers.evaluation.quality_target import cross_fitted_scores
from routers.registry import router_class
from tests.conftest import LARGE_NAME, SMALL_NAME
from tests.synthetic_data import FAST_PARAMS, cluster_llm_data

DEFENCE = {"kind": "window_max", "grid": 2, "min_fraction": 0.5}
#: the routers whose training scores are ``score_matrix`` of the training embeddings, with small settings
SCORE_ROUTERS: dict[str, dict] = {
    "hybrid_llm": {"threshold_rule": "oracle_share", "hidden_layer_sizes": [8], "max_iter": 80,
                   "learning_rate_init": 1e-2},
    "mf": FAST_PARAMS["mf"],
    "blend": {"inner_folds": 2},
}
EASY = [f"easy{i}" for i in range(12)]
HARD = [f"hard{i}" for i in range(12)]


class WordBag(Embedder):
    """Mean of per-word vectors (fixed random, from crc32) whose axis 0 is +1 for 'easy' words, -1 for
    'hard' ones: any text embeds, windows included (test data, not a model)."""

    dim = 8
    model_name = "word-bag"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            vectors = []
            for word in text.split():
                v = np.random.default_rng(zlib.crc32(word.encode())).normal(scale=0.3, size=self.dim)
                v[0] = 1.0 if word.startswith("easy") else -1.0
                vectors.append(v)
            rows.append(np.mean(vectors, axis=0))
        return np.asarray(rows, dtype=np.float32)


def word_data(n: int = 160, seed: int = 0) -> RoutingDataset:
    """Queries of 10-16 words; the more hard words (more of them in one half than the other, so windows
    score apart from the whole), the likelier the large model wins."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        length = int(rng.integers(10, 17))
        hard_share = rng.uniform(0.0, 0.8)
        words = [str(rng.choice(HARD if rng.random() < hard_share * (2 * k / length) else EASY))
                 for k in range(length)]
        large_wins = rng.random() < hard_share
        small, large = (0.0, 1.0) if large_wins else (1.0, float(rng.random() < 0.5))
        outcomes = {SMALL_NAME: ModelOutcome(performance=small), LARGE_NAME: ModelOutcome(performance=large)}
        examples.append(QueryExample(query=" ".join(words), task_name=f"task-{i % 3}", outcomes=outcomes))
    return RoutingDataset(examples, cluster_llm_data())


def fit(name: str, train: RoutingDataset, defence: dict | None = None) -> EmbeddingRouter:
    params = {**SCORE_ROUTERS.get(name, FAST_PARAMS.get(name, {})), **({"defence": defence} if defence else {})}
    router = router_class(name)(params, train.llm_data)
    assert isinstance(router, EmbeddingRouter)
    router.bind_engines(embedder=WordBag()).fit(train)
    return router


def oracle_share(train: RoutingDataset) -> float:
    quality = train.performance_matrix([SMALL_NAME, LARGE_NAME])
    return float(np.mean(quality[:, 0] < quality[:, 1]))


def whole_scores(router: EmbeddingRouter, train: RoutingDataset) -> np.ndarray:
    return router.score_embeddings(np.asarray(WordBag().embed(train.queries), dtype=np.float64))


@pytest.mark.parametrize("name", SCORE_ROUTERS)
def test_the_defended_threshold_escalates_the_oracle_share_of_defended_training_scores(name: str) -> None:
    train = word_data()
    plain, defended = fit(name, train), fit(name, train, DEFENCE)
    n, target = len(train), oracle_share(train)
    # What is learned does not change (fitted on the whole queries); only the calibration does.
    np.testing.assert_array_equal(whole_scores(defended, train), whole_scores(plain, train))
    scores, whole = defended.dataset_scores(train), plain.dataset_scores(train)
    assert (scores >= whole - 1e-12).all() and (scores > whole + 1e-6).sum() >= n // 10
    # Without defended calibration the old threshold would send fewer training queries large...
    assert np.mean(scores < plain.threshold) < target - 2 / n
    # ... with it, the same share as undefended: the oracle's.
    assert abs(np.mean(scores < defended.threshold) - target) <= 1 / n
    assert abs(np.mean(whole < plain.threshold) - target) <= 1 / n
    assert defended.threshold >= plain.threshold
    assert defended.calibrated_threshold == pytest.approx(threshold_for_large_share(scores, target), abs=1e-12)
    np.testing.assert_allclose(defended.reference_quantiles,
                               np.quantile(scores, np.linspace(0.0, 1.0, REFERENCE_QUANTILES)), rtol=0, atol=1e-12)
    assert defended.reference_count == n
    assert defended.train_metrics["calibrated_on"] == "defended training scores (window_max)"
    # router-X:share= looks up the defended quantiles, so a share asked for is the share sent.
    share_threshold = threshold_for_large_share(defended.reference_scores(), 0.3)
    assert abs(np.mean(scores < share_threshold) - 0.3) <= 0.05


@pytest.mark.parametrize("name", SCORE_ROUTERS)
def test_without_a_defence_fit_calibrates_on_the_whole_query_scores_as_before(name: str) -> None:
    train = word_data()
    router = fit(name, train)
    whole = whole_scores(router, train)  # the scores fit calibrated on before the defended calibration
    assert router.calibrated_threshold == threshold_for_large_share(whole, oracle_share(train))
    np.testing.assert_array_equal(router.reference_quantiles,
                                  np.quantile(whole, np.linspace(0.0, 1.0, REFERENCE_QUANTILES)))
    assert "calibrated_on" not in router.train_metrics


@pytest.mark.parametrize("name", ["knn", "sw_ranking"])
def test_the_memory_routers_refuse_to_fit_with_a_defence(name: str) -> None:
    with pytest.raises(ConfigError, match="does not support a defence yet"):
        fit(name, word_data(), DEFENCE)


def test_cross_fitted_calibration_scores_are_the_defended_ones() -> None:
    train = word_data(120)

    def make(defence: dict | None) -> EmbeddingRouter:
        params = {**SCORE_ROUTERS["hybrid_llm"], **({"defence": defence} if defence else {})}
        router = router_class("hybrid_llm")(params, train.llm_data)
        router.bind_engines(embedder=WordBag())
        return router

    plain = cross_fitted_scores(lambda: make(None), train, folds=3)
    defended = cross_fitted_scores(lambda: make(DEFENCE), train, folds=3)
    # the same fold routers (fitted on whole queries), scored through the defence on the held-out folds
    assert (defended >= plain - 1e-12).all() and (defended > plain + 1e-6).any()


# --- the shipped defended artifacts ----------------------------------------------------------------------
SHIPPED_DEFENDED = {"hybrid": "artifacts/hybrid_llm_defended", "blend": "artifacts/blend_defended"}


@pytest.mark.parametrize("kind", sorted(SHIPPED_DEFENDED))
def test_the_shipped_defended_artifacts_carry_the_defence_and_their_defended_calibration(kind: str) -> None:
    from pathlib import Path

    from routers.registry import served_entry
    from serve_app.config import parse_app_config

    root = Path(__file__).resolve().parents[1]
    artifact = root / SHIPPED_DEFENDED[kind]
    router = router_class(served_entry(kind).name).load(artifact)
    assert isinstance(router, EmbeddingRouter) and router.config.defence is not None
    assert router.config.defence.kind == "window_max"
    assert "defended" in str(router.train_metrics.get("calibrated_on"))
    assert router.reference_scores() is not None and 0.0 < router.threshold < 1.0
    # ``router-X:quality=T`` works on it: cross-fitted evidence on its defended scores, bound met at 0.95
    chosen = router.threshold_for_quality(0.95)
    assert chosen.met and chosen.ratio_lower_bound >= 0.95 and chosen.n_queries == 9603
    # It serves as the router of its kind (the app checks the artifact's router and embedder at start).
    config = parse_app_config({
        "models": {"small": {"engine": {"model": "org/small"}}, "large": {"engine": {"model": "org/large"}}},
        "embedder": {"engine": {"model": "org/all-minilm-l6-v2"}},
        "routers": {"hybrid": None, "automix": None, kind: {"artifact": str(artifact)}}, "default_router": kind,
    }).resolved()
    assert getattr(config.routers, kind).artifact == str(artifact)
