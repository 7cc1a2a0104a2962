"""Hybrid LLM router: labels, t* choice, the MLP export, scoring, save/load, routing."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from routers.data import LLMCandidate, ModelOutcome, QueryExample, RoutingDataset
from routers.engines import Embedder
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


class AxisEmbedder(Embedder):
    """Embeds a text as a fixed random vector plus a 'difficulty' signal on axis 0 (test data, not a model)."""

    dim = 8
    model_name = "axis-test"

    def __init__(self, difficulty: dict[str, float]) -> None:
        self.difficulty = difficulty

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            rng = np.random.default_rng(abs(hash(text)) % 2**32)
            v = rng.normal(scale=0.3, size=self.dim)
            v[0] = self.difficulty[text]
            out.append(v)
        return np.asarray(out, dtype=np.float32)


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
    router = HybridLLMRouter({"router_mode": mode, "hidden_layer_sizes": [16], "max_iter": 400,
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
    router = HybridLLMRouter({"hidden_layer_sizes": [8], "max_iter": 200}, data.llm_data).bind_engines(embedder=embedder)
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


def test_default_threshold_escalates_the_oracle_share_on_train() -> None:
    data, embedder = synthetic(200)
    router = HybridLLMRouter({"hidden_layer_sizes": [8]}, data.llm_data).bind_engines(embedder=embedder)
    metrics = router.fit(data)
    share = float(np.mean(router.dataset_scores(data) < router.threshold))
    assert share == pytest.approx(metrics["oracle_large_share"], abs=0.02)
    assert router.with_threshold(0.9).threshold == 0.9


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
