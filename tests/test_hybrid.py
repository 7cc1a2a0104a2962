"""Hybrid LLM router: labels, t* choice, the MLP export, scoring, save/load, routing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from routers.data import LLMCandidate, ModelOutcome, QueryExample, RoutingDataset
from routers.engines.cache import LookupEmbedder
from routers.errors import ArtifactError, ConfigError
from routers.hybrid.labels import (
    choose_t_star,
    deterministic_labels,
    make_labels,
    pairwise_label_difference,
    probabilistic_labels,
    transformed_labels,
)
from routers.hybrid.mlp import fit_mlp
from routers.hybrid.router import HybridLLMRouter
from tests.synthetic_data import AxisEmbedder

SMALL, LARGE = "small-llm", "large-llm"
ROOT = Path(__file__).resolve().parents[1]


def test_label_modes_follow_their_definitions() -> None:
    gap = np.array([-1.0, -0.2, 0.0, 0.3])
    assert deterministic_labels(gap).tolist() == [0, 0, 1, 1]
    soft = probabilistic_labels(gap, tau=0.5)
    assert soft == pytest.approx(1 / (1 + np.exp(-gap / 0.5)))
    assert soft[2] == pytest.approx(0.5)
    assert transformed_labels(gap, 0.25).tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError):
        probabilistic_labels(gap, 0.0)


def test_t_star_maximises_pairwise_label_difference() -> None:
    gap = np.array([-0.9, -0.5, -0.4, -0.1, 0.0, 0.0, 0.2, 0.5])
    t = choose_t_star(gap)
    best = pairwise_label_difference(transformed_labels(gap, t))
    for candidate in np.linspace(0, 1, 101):
        assert pairwise_label_difference(transformed_labels(gap, candidate)) <= best + 1e-12
    assert t == pytest.approx(0.0)  # 4 of 8 positive already: no relaxation needed


def test_t_star_relaxes_when_the_small_model_is_rarely_as_good() -> None:
    gap = np.array([-0.9, -0.6, -0.3, -0.3, -0.2, -0.1, 0.0, 0.1])
    t = choose_t_star(gap)
    assert t == pytest.approx(0.2)  # labels for g >= -0.2: 4 of 8 positive
    labels, used = make_labels(gap, "transformed")
    assert used == t and labels.mean() == 0.5
    assert make_labels(gap, "transformed", t_star=0.6)[1] == 0.6


def test_numpy_forward_pass_matches_sklearn() -> None:
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6))
    y = (x[:, 0] > 0).astype(float)
    weights, info = fit_mlp(x, y, (16, 8), "tanh", "adam", 300, 1e-4, 1e-2, False, seed=1)
    reference = MLPRegressor(hidden_layer_sizes=(16, 8), activation="tanh", max_iter=300, alpha=1e-4,
                             learning_rate_init=1e-2, random_state=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit((x - weights.mean) / weights.scale, y)
    assert weights.predict(x) == pytest.approx(reference.predict((x - weights.mean) / weights.scale), abs=1e-6)
    assert info["n_iter"] > 0


def synthetic(n: int = 300, seed: int = 11) -> tuple[RoutingDataset, AxisEmbedder]:
    """Hard queries (high difficulty) are the ones the small model gets wrong and the large one right."""
    rng = np.random.default_rng(seed)
    examples, difficulty = [], {}
    for i in range(n):
        d = float(rng.uniform(-1, 1))
        query = f"query {i}"
        difficulty[query] = d
        small_right = float(rng.random() > (0.5 + d) / 1.5)
        outcomes = {SMALL: ModelOutcome(performance=small_right), LARGE: ModelOutcome(performance=1.0)}
        examples.append(QueryExample(query=query, task_name="t", outcomes=outcomes))
    llm_data = {SMALL: LLMCandidate(name=SMALL, size="7B", input_price=0.1, output_price=0.1),
                LARGE: LLMCandidate(name=LARGE, size="70B", input_price=1.0, output_price=1.0)}
    return RoutingDataset(examples, llm_data), AxisEmbedder(difficulty)


@pytest.mark.parametrize("mode", ["deterministic", "probabilistic", "transformed"])
def test_every_mode_learns_which_queries_need_the_large_model(mode: str) -> None:
    data, embedder = synthetic()
    train, test = data.split(0.3, seed=5)
    # alpha 1.0: the L2 penalty keeps the MLP off the 7 noise dimensions, so every mode learns the signal.
    router = HybridLLMRouter({"router_mode": mode, "hidden_layer_sizes": [16], "max_iter": 400, "alpha": 1.0,
                              "early_stopping": False}, data.llm_data)
    router.bind_engines(embedder=embedder)
    metrics = router.fit(train)
    assert metrics["n_train"] == len(train) and metrics["mode"] == mode
    scores = router.dataset_scores(test)
    assert np.all((scores >= 0) & (scores <= 1))
    difficulty = np.array([embedder.difficulty[q] for q in test.queries])
    assert np.corrcoef(scores, difficulty)[0, 1] < -0.5  # harder queries score lower (go large)
    from routers.evaluation import evaluate_router

    report, _ = evaluate_router(router, test)
    assert report.apgr > 0.6


def test_threshold_semantics_and_decision_keys() -> None:
    data, embedder = synthetic(120)
    router = HybridLLMRouter({"hidden_layer_sizes": [8], "max_iter": 200}, data.llm_data)
    router.bind_engines(embedder=embedder)
    router.fit(data)
    query = data.queries[0]
    vector = embedder.embed([query])[0]
    score = float(router.score_embeddings(vector)[0])
    assert router.route_embedding(query, vector, threshold=score).use_large is False  # score >= t -> small
    above = router.route_embedding(query, vector, threshold=np.nextafter(score, 2.0))
    assert above.use_large is True and above.model_name == LARGE
    result = router.route_single({"query": query})
    assert {"query", "model_name", "router_score", "threshold", "cost", "reason"} <= set(result)
    assert result["cost"] > 0 and "router_score" in result["reason"]
    assert router.route_batch([query, data.queries[1]])[0]["router_score"] == pytest.approx(result["router_score"])


def test_defaults_are_the_seeds() -> None:
    router = HybridLLMRouter({}, None)
    assert router.config.router_mode == "deterministic" and router.config.router_tau == 0.1
    assert router.config.threshold_rule == "fixed" and router.threshold == 0.5
    assert router.config.hidden_layer_sizes == [128, 64] and router.config.max_iter == 300


def test_fixed_rule_routes_at_half_even_after_fit() -> None:
    data, embedder = synthetic(200)
    router = HybridLLMRouter({"hidden_layer_sizes": [8]}, data.llm_data).bind_engines(embedder=embedder)
    metrics = router.fit(data)
    assert router.threshold == 0.5 and metrics["threshold"] == 0.5
    assert router.calibrated_threshold is not None  # still computed and saved, for threshold_rule: oracle_share


def test_oracle_share_rule_escalates_the_oracle_share_on_train() -> None:
    data, embedder = synthetic(200)
    router = HybridLLMRouter({"hidden_layer_sizes": [8], "threshold_rule": "oracle_share"}, data.llm_data)
    metrics = router.bind_engines(embedder=embedder).fit(data)
    assert router.threshold == router.calibrated_threshold == metrics["threshold"]
    share = float(np.mean(router.dataset_scores(data) < router.threshold))
    assert share == pytest.approx(metrics["oracle_large_share"], abs=0.02)
    assert router.with_threshold(0.9).threshold == 0.9


def test_reference_scores_are_saved_as_quantiles_and_give_share_thresholds(tmp_path: Path) -> None:
    from routers.evaluation import threshold_for_large_share

    data, embedder = synthetic(200)
    router = HybridLLMRouter({"hidden_layer_sizes": [8]}, data.llm_data).bind_engines(embedder=embedder)
    router.fit(data)
    train_scores = router.dataset_scores(data)
    reference = router.reference_scores()
    assert reference is not None and reference.shape == (101,)
    assert reference[0] == pytest.approx(train_scores.min()) and reference[-1] == pytest.approx(train_scores.max())
    for share in (0.0, 0.3, 0.5, 0.8, 1.0):
        threshold = threshold_for_large_share(reference, share)
        assert float(np.mean(train_scores < threshold)) == pytest.approx(share, abs=0.02)
    saved = router.save(tmp_path / "hybrid")
    manifest = json.loads((saved / "router.json").read_text())
    assert len(manifest["reference_scores"]["quantiles"]) == 101 and manifest["reference_scores"]["count"] == 200
    loaded = HybridLLMRouter.load(saved)
    np.testing.assert_allclose(loaded.reference_scores(), reference)
    assert threshold_for_large_share(loaded.reference_scores(), 0.3) == pytest.approx(
        threshold_for_large_share(reference, 0.3))
    # Artifacts from before reference scores load with none.
    del manifest["reference_scores"]
    (saved / "router.json").write_text(json.dumps(manifest))
    assert HybridLLMRouter.load(saved).reference_scores() is None


def test_route_batch_takes_the_seeds_keywords_and_equals_route_single() -> None:
    data, embedder = synthetic(120)
    router = HybridLLMRouter({"hidden_layer_sizes": [8]}, data.llm_data).bind_engines(embedder=embedder)
    router.fit(data)
    batch = [{"query": data.queries[0]}, data.queries[1], {"query": data.queries[2], "task_name": "mine"}]
    results = router.route_batch(batch=batch, task_name="general")
    singles = [router.route_single(q) for q in batch]
    for result, single in zip(results, singles):
        assert {k: v for k, v in result.items() if k != "task_name"} == pytest.approx(single)
    assert [r["task_name"] for r in results] == ["general", "general", "mine"]
    assert "task_name" not in router.route_batch(batch[:1])[0]
    assert router.route_batch(batch=[]) == []


def test_save_load_round_trip_gives_equal_scores(tmp_path: Path) -> None:
    data, embedder = synthetic(150)
    router = HybridLLMRouter({"hidden_layer_sizes": [12, 6], "activation": "tanh"}, data.llm_data)
    router.bind_engines(embedder=embedder).fit(data)
    router.save(tmp_path / "hybrid")
    assert sorted(p.name for p in (tmp_path / "hybrid").iterdir()) == ["mlp.safetensors", "router.json"]
    loaded = HybridLLMRouter.load(tmp_path / "hybrid").bind_engines(embedder=embedder)
    assert loaded.dataset_scores(data) == pytest.approx(router.dataset_scores(data), abs=1e-5)
    assert loaded.threshold == pytest.approx(router.threshold)
    assert loaded.require_pair().small == SMALL


def test_loading_never_unpickles(tmp_path: Path) -> None:
    data, embedder = synthetic(80)
    router = HybridLLMRouter({"hidden_layer_sizes": [4]}, data.llm_data).bind_engines(embedder=embedder)
    router.fit(data)
    directory = router.save(tmp_path / "hybrid")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    (directory / "mlp.pkl").write_bytes(pickle.dumps(Payload()))
    (directory / "mlp.safetensors").replace(directory / "moved.bin")
    (directory / "mlp.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ArtifactError):
        HybridLLMRouter.load(directory)
    assert not marker.exists()


def test_wrong_embedding_size_is_a_clear_error() -> None:
    data, embedder = synthetic(60)
    router = HybridLLMRouter({"hidden_layer_sizes": [4]}, data.llm_data).bind_engines(embedder=embedder)
    router.fit(data)
    with pytest.raises(ConfigError, match="embedding size 3"):
        router.score_embeddings(np.zeros((1, 3)))
    bare = HybridLLMRouter({}, data.llm_data)
    with pytest.raises(ConfigError, match="embedder"):
        bare.fit(data)


def test_lookup_embedder_feeds_fit_like_a_model() -> None:
    data, embedder = synthetic(60)
    lookup = LookupEmbedder(data.queries, embedder.embed(data.queries), "precomputed")
    a = HybridLLMRouter({"hidden_layer_sizes": [4]}, data.llm_data).bind_engines(embedder=lookup)
    b = HybridLLMRouter({"hidden_layer_sizes": [4]}, data.llm_data).bind_engines(embedder=embedder)
    assert a.fit(data)["train_mse"] == pytest.approx(b.fit(data)["train_mse"], rel=1e-4)


def test_shipped_artifact_keeps_its_calibrated_threshold() -> None:
    """The shipped artifact predates threshold_rule; it must route exactly as before: at its saved threshold."""
    artifact = ROOT / "artifacts/hybrid_llm"
    if not (artifact / "router.json").exists():
        pytest.skip("artifacts/hybrid_llm not built")
    manifest = json.loads((artifact / "router.json").read_text())
    router = HybridLLMRouter.load(artifact)
    assert router.config.threshold_rule == "oracle_share"
    assert router.threshold == manifest["state"]["calibrated_threshold"]
    assert router.config.router_mode == manifest["config"]["router_mode"]
    assert HybridLLMRouter.load(artifact, router_threshold=0.5).threshold == 0.5  # an explicit override still wins
    vector = np.zeros(router.mlp.input_dim)  # type: ignore[union-attr]
    score = float(router.score_embeddings(vector)[0])
    assert router.route_embedding("q", vector).use_large == (score < manifest["state"]["calibrated_threshold"])


@pytest.mark.slow
def test_shipped_artifact_routes_with_the_real_embedder() -> None:
    artifact, model = ROOT / "artifacts/hybrid_llm", ROOT / "models/all-minilm-l6-v2"
    if not (artifact / "router.json").exists() or not model.exists():
        pytest.skip("run `bash scripts/setup.sh` first (needs models/ and artifacts/hybrid_llm)")
    from routers.engines import EmbedderConfig, build_embedder

    router = HybridLLMRouter.load(artifact)
    router.bind_engines(embedder=build_embedder(EmbedderConfig(model=str(model))))
    results = router.route_batch(["What is 2 + 2?", "Prove that there are infinitely many primes."])
    assert all(0.0 <= r["router_score"] <= 1.0 for r in results)
    assert {r["model_name"] for r in results} <= set(router.llm_data)


SEED_YAML = """\
router_mode: "probabilistic"
router_tau: 0.1
router_threshold: 0.5

hparam:
  hidden_layer_sizes: [128, 64]
  activation: relu
  solver: adam
  max_iter: 300

model_path:
  save_model_path: "saved_models/hybrid_llm/hybrid_trained.pkl"
"""


def test_the_seeds_yaml_example_parses(tmp_path: Path) -> None:
    from routers.config import build_router, load_config_file

    path = tmp_path / "hybrid_llm.yaml"
    path.write_text(SEED_YAML)
    router = build_router(load_config_file(path), "hybrid_llm")
    assert isinstance(router, HybridLLMRouter)
    cfg = router.config
    assert (cfg.router_mode, cfg.router_tau, cfg.router_threshold, cfg.hidden_layer_sizes) == (
        "probabilistic", 0.1, 0.5, [128, 64])
    assert router.threshold == 0.5
