"""The description router (``routers.nmodel.description``) on the synthetic clusters: it learns quality from
(query, model description) pairs, a model added from its description alone is predicted as the model whose
description it shares, a few labelled examples set the new model's bias, and the artifact round-trips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routers.data.multimodel import MultiModelDataset
from routers.data.schema import LLMCandidate
from routers.engines.cache import LookupEmbedder
from routers.errors import ConfigError
from routers.nmodel.description import DescriptionRouter, descriptions_of
from tests.nmodel_synthetic import COSTS, DIM, MODELS, clusters

DESCRIPTIONS = {"cheap": "a tiny fast model that answers only easy questions",
                "mid": "a mid-sized model, right on most questions",
                "dear": "a large expensive model, right on nearly everything"}
FAST = {"epochs": 40, "batch_size": 64, "hidden": 32, "learning_rate": 1e-2, "cv_folds": 3}


def described_data() -> tuple[MultiModelDataset, MultiModelDataset, LookupEmbedder]:
    """The synthetic clusters with a description per model, and an embedder that knows queries and descriptions."""
    train, train_vectors = clusters(40, seed=1)
    test, test_vectors = clusters(20, seed=2)
    rng = np.random.default_rng(3)
    vectors = {**train_vectors, **test_vectors, **{t: rng.normal(size=DIM) * 3 for t in DESCRIPTIONS.values()}}
    embedder = LookupEmbedder(list(vectors), np.stack(list(vectors.values())), "synthetic")
    candidates = {m: LLMCandidate(name=m, input_price=1.0, feature=DESCRIPTIONS[m]) for m in MODELS}
    return replace(train, candidates=candidates), test, embedder


@pytest.fixture(scope="module")
def fitted() -> tuple[DescriptionRouter, MultiModelDataset, MultiModelDataset]:
    train, test, embedder = described_data()
    router = DescriptionRouter(FAST)
    router.bind_engines(embedder)
    router.fit(train)
    return router, train, test


def by_task(data: MultiModelDataset, quality: np.ndarray) -> dict[str, np.ndarray]:
    return {task: quality[[i for i, t in enumerate(data.task_names) if t == task]].mean(axis=0)
            for task in ("easy", "medium", "hard")}


def test_it_learns_each_model_from_its_description(fitted: Any) -> None:
    router, _, test = fitted
    means = by_task(test, router.predict_quality(test.queries))
    assert means["easy"][0] > 0.8 and means["hard"][0] < 0.3  # cheap: right on easy, wrong on hard
    assert means["hard"][2] > means["hard"][1] > means["hard"][0]
    chosen = router.choose(router.predict_quality(test.queries), router.estimate_costs(test.queries), "cost=20")
    easy = [i for i, t in enumerate(test.task_names) if t == "easy"]
    assert (chosen[easy] == 0).mean() > 0.8  # easy queries go to the cheap model once cost counts


def test_a_model_added_from_its_description_is_predicted_like_the_one_it_describes(fitted: Any,
                                                                                    tmp_path: Path) -> None:
    router, train, test = fitted
    directory = router.save(tmp_path / "desc")
    added = DescriptionRouter.load(directory).bind_engines(router.embedder)
    added.add_model("dear-2", DESCRIPTIONS["dear"], (float(COSTS[2]), 0.0))
    quality = added.predict_quality(test.queries)
    assert added.models == (*MODELS, "dear-2") and added.calibration is None
    assert quality[:, 3] == pytest.approx(quality[:, 2], abs=1e-9)  # same description and price: same vector
    assert added.estimate_costs(test.queries[:1])[0, 3] == pytest.approx(COSTS[2])
    # a few labelled queries on which the new model is always wrong: Platt scaling on them pulls its predictions
    # there, to Platt's smoothed target for 10 negatives, 1/12
    examples = list(train.queries[:10])
    shifted = DescriptionRouter.load(directory).bind_engines(router.embedder)
    shifted.add_model("broken", DESCRIPTIONS["dear"], (float(COSTS[2]), 0.0), (examples, np.zeros(10)))
    predicted = shifted.predict_quality(examples)[:, 3]
    assert predicted.mean() == pytest.approx(1 / 12, abs=0.02)
    assert shifted.predict_quality(test.queries)[:, 3].mean() < quality[:, 3].mean()
    with pytest.raises(ConfigError, match="already in the pool"):
        added.add_model("dear", DESCRIPTIONS["dear"], (1.0, 0.0))


def test_saved_router_predicts_the_same_with_an_added_model(fitted: Any, tmp_path: Path) -> None:
    router, train, test = fitted
    grown = DescriptionRouter.load(router.save(tmp_path / "desc")).bind_engines(router.embedder)
    grown.add_model("new", DESCRIPTIONS["mid"], (float(COSTS[1]), 0.0),
                    (list(train.queries[:20]), train.quality[:20, 1]))
    loaded = DescriptionRouter.load(grown.save(tmp_path / "grown")).bind_engines(router.embedder)
    assert loaded.models == grown.models
    assert loaded.predict_quality(test.queries) == pytest.approx(grown.predict_quality(test.queries))


def test_data_without_descriptions_is_refused_naming_the_models() -> None:
    train, _, _ = described_data()
    bare = replace(train, candidates={})
    with pytest.raises(ConfigError, match=r"'feature' text .* none for \['cheap', 'mid', 'dear'\]"):
        descriptions_of(bare)
