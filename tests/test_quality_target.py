"""threshold_for_quality: the cheapest threshold whose bootstrap lower bound keeps quality at a target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from routers import cli
from routers.base import Router
from routers.errors import ConfigError
from routers.evaluation.quality_target import (
    CALIBRATION_FILE,
    QualityCalibration,
    cross_fitted_scores,
    threshold_for_quality,
)
from routers.registry import router_class
from tests.job_helpers import MINILM, data_file, tiny_routing_files, write_yaml
from tests.synthetic_data import FAST_PARAMS, fitted, two_clusters


def informative_queries(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The large model is right on 85% of queries, the small one on 65%; the score is noisy knowledge of
    whether the small model is right."""
    rng = np.random.default_rng(seed)
    large = (rng.random(n) < 0.85).astype(float)
    small = np.where(large == 1, (rng.random(n) < 0.75).astype(float), (rng.random(n) < 0.1).astype(float))
    scores = small + rng.normal(0, 0.6, n)
    return scores, small, large


def quality_ratio(scores: np.ndarray, small: np.ndarray, large: np.ndarray, threshold: float) -> float:
    return float(np.where(scores < threshold, large, small).sum() / large.sum())


def test_the_chosen_threshold_meets_the_bound_and_the_next_cheaper_one_does_not() -> None:
    scores, small, large = informative_queries(3000)
    chosen = threshold_for_quality(scores, small, large, 0.95, n_resamples=400)
    assert chosen.met and chosen.ratio_lower_bound >= 0.95
    assert chosen.ratio == pytest.approx(quality_ratio(scores, small, large, chosen.threshold))
    assert chosen.ratio >= chosen.ratio_lower_bound  # a lower confidence bound sits below the estimate
    assert chosen.large_share == pytest.approx(np.mean(scores < chosen.threshold))
    # one query fewer to the large model: the bound no longer holds
    cheaper = np.sort(scores)[round(chosen.large_share * len(scores)) - 1]
    assert quality_ratio(scores, small, large, cheaper) <= chosen.ratio
    assert 0.2 < chosen.large_share < 0.9  # the score carries information: far from all-large


def test_stricter_targets_and_higher_confidence_cost_more_large_calls() -> None:
    scores, small, large = informative_queries(2000, seed=1)
    shares = [threshold_for_quality(scores, small, large, t, n_resamples=300).large_share for t in (0.9, 0.95, 0.99)]
    assert shares == sorted(shares) and shares[0] < shares[-1]
    loose = threshold_for_quality(scores, small, large, 0.95, confidence=0.5, n_resamples=300)
    strict = threshold_for_quality(scores, small, large, 0.95, confidence=0.99, n_resamples=300)
    assert loose.large_share <= strict.large_share


def test_fewer_calibration_queries_mean_a_more_cautious_threshold() -> None:
    scores, small, large = informative_queries(6000, seed=2)
    many = threshold_for_quality(scores, small, large, 0.95, n_resamples=300)
    few = threshold_for_quality(scores[:300], small[:300], large[:300], 0.95, n_resamples=300)
    assert many.ratio - many.ratio_lower_bound < few.ratio - few.ratio_lower_bound


def test_an_unreachable_target_routes_everything_large_and_says_so() -> None:
    scores, small, large = informative_queries(500, seed=3)
    chosen = threshold_for_quality(scores, small, large, 1.2, n_resamples=200)
    assert not chosen.met and chosen.large_share == 1.0 and np.all(scores < chosen.threshold)


def test_a_threshold_never_splits_equal_scores() -> None:
    scores = np.repeat([0.1, 0.5, 0.9], 100)
    small = np.tile([0.0, 1.0], 150)
    large = np.ones(300)
    chosen = threshold_for_quality(scores, small, large, 0.5, n_resamples=100)
    assert chosen.threshold in (0.1, 0.5, 0.9) or chosen.large_share == 1.0
    assert round(chosen.large_share * 300) % 100 == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="target_ratio"):
        threshold_for_quality(np.zeros(3), np.zeros(3), np.ones(3), 0.0)
    with pytest.raises(ValueError, match="one value per calibration query"):
        threshold_for_quality(np.zeros(3), np.zeros(2), np.ones(3), 0.9)


# --- calibration an artifact carries: save/load, cross-fitting, the CLI ---------------------------------
def test_a_calibration_survives_the_artifact_round_trip_and_gives_the_same_thresholds(tmp_path: Path) -> None:
    train, embedder = two_clusters()
    router = fitted("knn", train, embedder)
    scores, small, large = informative_queries(500, seed=3)
    router.quality_calibration = QualityCalibration(scores, small, large, "unit test")
    expected = router.threshold_for_quality(0.95)
    loaded = router_class("knn").load(router.save(tmp_path / "knn"))
    assert (tmp_path / "knn" / CALIBRATION_FILE).exists()
    assert json.loads((tmp_path / "knn" / "router.json").read_text())["quality_calibration"] == {
        "file": CALIBRATION_FILE, "n_queries": 500, "source": "unit test"}
    assert loaded.quality_calibration is not None and loaded.quality_calibration.source == "unit test"
    assert loaded.threshold_for_quality(0.95) == expected
    assert expected == threshold_for_quality(scores, small, large, 0.95)


def test_a_router_without_calibration_says_how_to_add_one() -> None:
    train, embedder = two_clusters()
    with pytest.raises(ConfigError, match="llmrouter calibrate-quality"):
        fitted("knn", train, embedder).threshold_for_quality(0.9)


def test_a_calibration_drops_queries_without_outcomes_and_rejects_mismatched_arrays() -> None:
    kept = QualityCalibration(np.array([0.1, np.nan, 0.3]), np.array([1.0, 1.0, np.nan]), np.ones(3), "x")
    assert len(kept) == 1
    with pytest.raises(ValueError, match="same queries"):
        QualityCalibration(np.ones(3), np.ones(2), np.ones(3), "x")


def test_cross_fitted_scores_come_from_routers_that_never_saw_the_query() -> None:
    train, embedder = two_clusters()

    def make() -> Router:
        return router_class("knn")(FAST_PARAMS["knn"], train.llm_data).bind_engines(embedder=embedder)

    scores = cross_fitted_scores(make, train, folds=4, seed=5)
    assert np.isfinite(scores).all()
    fold_of = np.random.default_rng(5).permutation(len(train)) % 4
    held_out = np.nonzero(fold_of == 2)[0]
    by_hand = make()
    by_hand.fit(train.subset(np.nonzero(fold_of != 2)[0].tolist()))
    np.testing.assert_allclose(scores[held_out], by_hand.dataset_scores(train.subset(held_out.tolist())))
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fitted_scores(make, train, folds=1)


@pytest.mark.slow
def test_calibrate_quality_cli_cross_fits_or_scores_labelled_files(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    train, test = tiny_routing_files(tmp_path, "mmlu_train.jsonl", 60, 40)
    artifact = tmp_path / "hybrid"
    config = write_yaml(tmp_path / "hybrid.yaml", {
        "router": "hybrid_llm",
        "data_path": {"routing_data_train": train, "llm_data": str(data_file("llm_candidates.json"))},
        "model_path": {"save_model_path": str(artifact), "load_model_path": str(artifact)},
        "hparam": {"hidden_layer_sizes": [8], "max_iter": 20},
        "engines": {"embedder": {"model": str(MINILM)}},
    })
    assert cli.main(["train", "--config", str(config), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["calibrate-quality", "--config", str(config), "--cross-fit", "3", "--quiet"]) == 0
    crossed = json.loads(capsys.readouterr().out)
    assert crossed["n_queries"] == 60 and crossed["source"] == "cross-fit, 3 folds over 60 training queries"
    assert set(crossed["targets"]) == {"0.9", "0.95", "0.98"}
    router = router_class("hybrid_llm").load(artifact)
    assert router.threshold_for_quality(0.9).threshold == pytest.approx(crossed["targets"]["0.9"]["threshold"])
    assert cli.main(["calibrate-quality", "--config", str(config), "--data", test, "--report-targets", "0.9",
                     "--quiet"]) == 0
    labelled = json.loads(capsys.readouterr().out)
    assert labelled["n_queries"] == 40 and labelled["source"] == f"labelled queries from {test}"
    assert router_class("hybrid_llm").load(artifact).quality_calibration.source == labelled["source"]
