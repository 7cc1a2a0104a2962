"""The embedding routers (kNN, MF, SW ranking) on synthetic embeddings where the right answer is known.

Two clusters of queries: on cluster A the small model is right (mostly ties, some outright wins), on
cluster B it is wrong and the large model right. Every router must score A above B, route a new query
near A to the small model and one near B to the large model, and reach the oracle's APGR. No real models:
the embeddings are the test's own vectors, served by text with ``LookupEmbedder``.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from routers import cli
from routers.base import Router
from routers.data import ModelOutcome, QueryExample, RoutingDataset
from routers.embedding import EmbeddingBank, EmbeddingRouter, win_outcomes
from routers.engines import EmbedderConfig
from routers.engines.cache import LookupEmbedder
from routers.errors import ConfigError
from routers.evaluation import evaluate_router
from routers.hybrid.router import HybridLLMRouter
from routers.knn.router import KNNRouter, knn_scores
from routers.mf.model import MFWeights
from routers.mf.router import MatrixFactorizationRouter
from routers.registry import canonical_name, router_class
from routers.sw_ranking.router import SWRankingRouter, similarity_weighted_win_rates
from tests.synthetic_data import (
    CLUSTER_DIM,
    FAST_PARAMS,
    cluster_centres,
    cluster_llm_data,
    fitted,
    near,
    two_clusters,
)

SMALL, LARGE = "small-llm", "large-llm"
ROOT = Path(__file__).resolve().parents[1]
NEW_ROUTERS = ["knn", "mf", "sw_ranking"]
def oracle_apgr(data: RoutingDataset) -> float:
    """The best APGR any router can reach on ``data`` (with half the queries needing the large model, ~0.9)."""
    oracle = router_class("oracle")({}, data.llm_data)
    oracle.fit(data)
    return evaluate_router(oracle, data)[0].apgr


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_routers_score_the_cluster_where_the_small_model_is_right_higher(name: str) -> None:
    train, train_embedder = two_clusters(seed=1)
    test, test_embedder = two_clusters(n_per_cluster=30, seed=2, wins=False)
    router = fitted(name, train, train_embedder)
    scores = router.bind_engines(embedder=test_embedder).dataset_scores(test)
    in_a = np.array([q.startswith("a ") for q in test.queries])
    assert scores[in_a].min() > scores[~in_a].max()
    report, _ = evaluate_router(router, test)
    assert report.apgr > 0.98 * oracle_apgr(test)
    if name != "mf":
        # The memory routers' break-even threshold already separates the clusters (their scores are
        # local averages of the outcomes); MF's linear logit spreads cluster A around its mean of 0.6.
        assert np.all(scores[in_a] >= router.fixed_threshold()) and np.all(scores[~in_a] < router.fixed_threshold())


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_the_default_threshold_escalates_the_oracle_share_of_training_queries(name: str) -> None:
    train, embedder = two_clusters()
    router = fitted(name, train, embedder)
    assert router.config.threshold_rule == "oracle_share" and router.threshold == router.calibrated_threshold
    share = float(np.mean(router.dataset_scores(train) < router.threshold))
    assert (share == pytest.approx(router.train_metrics["oracle_large_share"], abs=0.05)
            and share == pytest.approx(0.5, abs=0.05))
    fixed = router_class(name)({**FAST_PARAMS[name], "threshold_rule": "fixed"}, train.llm_data)
    assert fixed.threshold == (0.0 if name == "knn" else 0.5)
    assert HybridLLMRouter({}).config.threshold_rule == "fixed"  # the seed's rule stays Hybrid's default


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_a_new_query_near_a_cluster_routes_like_it(name: str) -> None:
    train, embedder = two_clusters()
    router = fitted(name, train, embedder)
    a_centre, b_centre = cluster_centres()
    rng = np.random.default_rng(7)
    to_small = router.route_embedding("like cluster a", near(a_centre, rng, 1)[0])
    to_large = router.route_embedding("like cluster b", near(b_centre, rng, 1)[0])
    assert to_small.model_name == SMALL and not to_small.use_large
    assert to_large.model_name == LARGE and to_large.use_large
    assert to_small.score is not None and to_large.score is not None and to_small.score > to_large.score


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_route_batch_makes_one_decision_per_query_like_route_single(name: str) -> None:
    train, embedder = two_clusters(30)
    router = fitted(name, train, embedder)
    queries = [train.queries[0], {"query": train.queries[-1], "task_name": "mine"}]
    results = router.route_batch(batch=queries, task_name="general")
    assert [r["task_name"] for r in results] == ["general", "mine"]
    assert [r["model_name"] for r in results] == [SMALL, LARGE]
    single = router.route_single(train.queries[0])
    assert single["router_score"] == pytest.approx(results[0]["router_score"])
    assert {"query", "model_name", "router_score", "threshold", "cost", "reason"} <= set(single)


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_save_load_round_trip_gives_identical_scores_and_no_pickle(name: str, tmp_path: Path) -> None:
    train, embedder = two_clusters(40)
    router = fitted(name, train, embedder, threshold_rule="oracle_share")
    directory = router.save(tmp_path / name)
    files = sorted(p.name for p in directory.iterdir())
    assert all(f.endswith((".safetensors", ".json")) for f in files) and "router.json" in files
    assert len(files) == 2
    loaded = router_class(name).load(directory)
    assert isinstance(loaded, EmbeddingRouter)
    loaded.bind_engines(embedder=embedder)
    np.testing.assert_array_equal(loaded.dataset_scores(train), router.dataset_scores(train))
    assert loaded.threshold == router.threshold == router.calibrated_threshold
    assert loaded.require_pair().small == SMALL
    np.testing.assert_allclose(loaded.reference_scores(), router.reference_scores())
    assert loaded.config.embedder == router.default_embedder_config()


def test_knn_stores_the_embeddings_in_float16_or_float32(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    train, embedder = two_clusters(20)
    for dtype in ("float16", "float32"):
        directory = fitted("knn", train, embedder, embedding_dtype=dtype).save(tmp_path / dtype)
        stored = load_file(str(directory / "neighbours.safetensors"))
        assert stored["embeddings"].dtype == np.dtype(dtype) and stored["embeddings"].shape == (40, CLUSTER_DIM)
        assert stored["targets"].shape == (40,)


@pytest.mark.parametrize("name", ["knn", "mf", "sw_ranking", "matrix_factorization", "similarity_weighted",
                                  "SW-Ranking"])
def test_names_resolve_in_the_registry(name: str) -> None:
    key = canonical_name(name)
    assert key in NEW_ROUTERS
    cls = router_class(name)
    assert issubclass(cls, EmbeddingRouter) and cls.name == key and cls.engine_roles == frozenset({"embedder"})


def test_hybrid_shares_the_embedding_router_plumbing() -> None:
    assert issubclass(HybridLLMRouter, EmbeddingRouter)
    for cls in (HybridLLMRouter, KNNRouter, MatrixFactorizationRouter, SWRankingRouter):
        assert cls.training_engine_roles(cls({}, None)) == frozenset({"embedder"})


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_unknown_config_keys_are_rejected_naming_the_key(name: str) -> None:
    with pytest.raises(ConfigError, match="neighbours_typo"):
        router_class(name)({"neighbours_typo": 3}, None)


def test_out_of_range_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="k"):
        KNNRouter({"k": 0})
    with pytest.raises(ConfigError, match="tie_credit"):
        SWRankingRouter({"tie_credit": 2.0})
    with pytest.raises(ConfigError, match="latent_dim"):
        MatrixFactorizationRouter({"latent_dim": 0})


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_scoring_needs_a_fit_the_right_embedding_size_and_an_embedder(name: str) -> None:
    train, embedder = two_clusters(10)
    bare = router_class(name)({}, train.llm_data)
    with pytest.raises(ConfigError, match="embedder"):
        bare.fit(train)
    with pytest.raises(Exception, match="not fitted"):
        bare.score_embeddings(np.zeros(CLUSTER_DIM))  # type: ignore[attr-defined]
    router = fitted(name, train, embedder)
    with pytest.raises(ConfigError, match="embedding size 3"):
        router.score_embeddings(np.zeros((1, 3)))


def test_knn_is_the_weighted_mean_gap_of_the_nearest_neighbours() -> None:
    rng = np.random.default_rng(3)
    embeddings, gap = rng.normal(size=(50, 5)), rng.choice([-1.0, 0.0, 1.0], 50)
    queries = rng.normal(size=(4, 5))
    bank = EmbeddingBank.build(embeddings, gap, "float32")
    scores = knn_scores(bank, queries, k=7, weighting="similarity")
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for query, score in zip(queries, scores):
        sims = unit @ (query / np.linalg.norm(query))
        nearest = np.argsort(-sims)[:7]
        weights = np.maximum(sims[nearest], 1e-6)
        assert score == pytest.approx(np.sum(weights * gap[nearest]) / weights.sum(), abs=1e-5)
    uniform = knn_scores(bank, queries[:1], k=50, weighting="uniform")
    assert uniform[0] == pytest.approx(gap.mean(), abs=1e-6)


def test_training_scores_leave_each_query_out() -> None:
    """With k = 1 a query's own label would be its score; left out, it is its nearest other query's."""
    rng = np.random.default_rng(4)
    embeddings, gap = rng.normal(size=(30, 6)), rng.choice([-1.0, 1.0], 30)
    bank = EmbeddingBank.build(embeddings, gap, "float32")
    assert np.array_equal(knn_scores(bank, embeddings, k=1, weighting="uniform"), gap)
    left_out = knn_scores(bank, embeddings, k=1, weighting="uniform", leave_self_out=True)
    unit = bank.embeddings
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(left_out, gap[np.argmax(sims, axis=1)])


def test_sw_ranking_is_routellms_weighted_bradley_terry_fit_in_closed_form() -> None:
    """The closed form equals RouteLLM's compute_elo_mle_with_tie for two models: weighted logistic
    regression, each battle twice, a tie as one win for each side, weights 10 * 10 ** (sim / max sim)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    embeddings, gap = rng.normal(size=(40, 6)), rng.choice([-1.0, 0.0, 0.0, 1.0], 40)
    query = rng.normal(size=6)
    bank = EmbeddingBank.build(embeddings, win_outcomes(gap, 0.5), "float32")
    score = similarity_weighted_win_rates(bank, query[None, :], gamma=math.log(10.0), relative=True)[0]

    sims = bank.embeddings.astype(np.float64) @ (query / np.linalg.norm(query))
    weights = 10 * 10 ** (sims / sims.max())
    x = np.full((80, 1), math.log(10.0))  # rating column of the small model minus the large model's
    y = np.concatenate([(gap >= 0), (gap > 0)]).astype(float)  # copy 1: tie = small win; copy 2: large win
    fit = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=1000)  # unpenalised, as RouteLLM
    fit.fit(x, y, sample_weight=np.concatenate([weights, weights]))
    small_win_rate = 1.0 / (1.0 + 10 ** (-fit.coef_[0][0]))  # RouteLLM: 1 / (1 + 10 ** ((r_l - r_s) / 400))
    assert score == pytest.approx(small_win_rate, abs=1e-4)


def test_sw_ranking_tie_credit_one_is_the_weighted_share_of_small_ok_queries() -> None:
    rng = np.random.default_rng(6)
    embeddings, gap = rng.normal(size=(25, 4)), rng.choice([-1.0, 0.0, 1.0], 25)
    bank = EmbeddingBank.build(embeddings, win_outcomes(gap, 1.0), "float32")
    flat = similarity_weighted_win_rates(bank, rng.normal(size=(1, 4)), gamma=1e-9, relative=True)
    assert flat[0] == pytest.approx(np.mean(gap >= 0), abs=1e-6)  # gamma -> 0: equal weights


def test_mf_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(8)
    weights = MFWeights.initial(6, 4, rng)
    weights.model_bias = rng.normal(size=2)
    x, targets, w = rng.normal(size=(9, 6)), rng.choice([0.0, 0.5, 1.0], 9), rng.uniform(0.1, 1.0, 9)
    grads = weights.gradients(x, targets, w)
    for name, analytic in grads.items():
        values = getattr(weights, name)
        numeric = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            old = values[index]
            values[index] = old + 1e-6
            plus = weights.loss(x, targets, w)
            values[index] = old - 1e-6
            minus = weights.loss(x, targets, w)
            values[index] = old
            numeric[index] = (plus - minus) / 2e-6
        np.testing.assert_allclose(analytic, numeric, atol=1e-7, err_msg=name)


def test_mf_is_seeded_and_ties_can_be_skipped() -> None:
    train, embedder = two_clusters(30)
    a = fitted("mf", train, embedder, seed=3)
    b = fitted("mf", train, embedder, seed=3)
    np.testing.assert_array_equal(a.dataset_scores(train), b.dataset_scores(train))
    skipping = fitted("mf", train, embedder, tie_weight=0.0)
    assert skipping.train_metrics["n_battles"] == 30 + 6  # cluster B's losses and cluster A's wins
    assert a.train_metrics["n_battles"] == 60


# --- the command line ---------------------------------------------------------------------------------
def write_routing_file(path: Path, data: RoutingDataset) -> None:
    with gzip.open(path, "wt") as out:
        for example in data.examples:
            for model, outcome in example.outcomes.items():
                out.write(json.dumps({"task_name": example.task_name, "query": example.query, "ground_truth": None,
                                      "metric": "exact_match", "model_name": model,
                                      "performance": outcome.performance}) + "\n")


def write_cli_config(tmp_path: Path, name: str, train: RoutingDataset, test: RoutingDataset,
                     embedder_model: str) -> Path:
    write_routing_file(tmp_path / "train.jsonl.gz", train)
    write_routing_file(tmp_path / "test.jsonl.gz", test)
    (tmp_path / "llm.json").write_text(json.dumps({
        SMALL: {"size": "7B", "input_price": 0.1, "output_price": 0.1},
        LARGE: {"size": "70B", "input_price": 1.0, "output_price": 1.0}}))
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "router": name,
        "data_path": {"routing_data_train": str(tmp_path / "train.jsonl.gz"),
                      "routing_data_test": str(tmp_path / "test.jsonl.gz"), "llm_data": str(tmp_path / "llm.json")},
        "model_path": {"save_model_path": str(tmp_path / name), "load_model_path": str(tmp_path / name)},
        "hparam": {**FAST_PARAMS[name], "threshold_rule": "oracle_share"},
        "engines": {"embedder": {"model": embedder_model}},
    }))
    return config


def run_train_and_evaluate(capsys: pytest.CaptureFixture[str], config: Path, name: str) -> tuple[dict, dict]:
    assert cli.main(["train", "--config", str(config), "--quiet"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", "--router", f"{name},random", "--config", str(config), "--json", "--quiet",
                     "--load", f"{name}={trained['saved_to']}"]) == 0
    reports = {r["router"]: r for r in map(json.loads, capsys.readouterr().out.splitlines()) if r}
    return trained, reports


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_llmrouter_train_and_evaluate_end_to_end(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI builds its embedder from the config; here that engine serves the test's precomputed vectors
    (``LookupEmbedder``), so the whole train -> save -> load -> evaluate path runs without a model."""
    train, train_embedder = two_clusters(30, seed=1)
    test, test_embedder = two_clusters(15, seed=2, wins=False)
    texts = train.queries + test.queries
    vectors = np.concatenate([train_embedder.embed(train.queries), test_embedder.embed(test.queries)])
    built: list[EmbedderConfig] = []

    def precomputed(config: EmbedderConfig) -> LookupEmbedder:
        built.append(config)
        return LookupEmbedder(texts, vectors, config.model)

    monkeypatch.setattr(cli, "build_embedder", precomputed)
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))  # the CLI's embedding cache goes under tmp_path
    trained, reports = run_train_and_evaluate(capsys, write_cli_config(tmp_path, name, train, test, "synthetic"), name)
    assert built and built[0].model == "synthetic"
    assert trained["train"]["n_train"] == 60 and trained["test"]["apgr"] > 0.98 * oracle_apgr(test)
    assert sorted(p.suffix for p in Path(trained["saved_to"]).iterdir()) == [".json", ".safetensors"]
    assert reports[name]["apgr"] == pytest.approx(trained["test"]["apgr"])
    assert reports[name]["apgr"] > reports["random"]["apgr"]


@pytest.mark.slow
def test_llmrouter_train_and_evaluate_with_the_real_embedder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """24 real queries through MiniLM: arithmetic questions the small model gets right, proofs it gets wrong."""
    model = ROOT / "models/all-minilm-l6-v2"
    if not model.exists():
        pytest.skip("run `bash scripts/setup.sh` first (needs models/all-minilm-l6-v2)")
    easy = [f"What is {a} plus {a + 3}?" for a in range(12)]
    hard = [f"Prove that every group of order {p * p} is abelian, for the prime {p}." for p in (2, 3, 5, 7, 11, 13)]
    hard += [f"Prove the theorem of {n} on the distribution of primes in arithmetic progressions."
             for n in ("Dirichlet", "Chebyshev", "Bertrand", "Linnik", "Siegel", "Walfisz")]

    def dataset(queries_easy: list[str], queries_hard: list[str]) -> RoutingDataset:
        examples = [QueryExample(query=q, task_name="t", outcomes={
            SMALL: ModelOutcome(performance=float(q in queries_easy)), LARGE: ModelOutcome(performance=1.0)})
            for q in queries_easy + queries_hard]
        return RoutingDataset(examples, cluster_llm_data())

    train, test = dataset(easy[:8], hard[:8]), dataset(easy[8:], hard[8:])
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    for name in NEW_ROUTERS:
        config = write_cli_config(tmp_path, name, train, test, str(model))
        trained, reports = run_train_and_evaluate(capsys, config, name)
        assert trained["test"]["apgr"] > 0.95 * oracle_apgr(test), name
        assert reports[name]["apgr"] == pytest.approx(trained["test"]["apgr"])


def test_every_new_router_is_a_router_subclass_with_its_own_config() -> None:
    for name in NEW_ROUTERS:
        cls = router_class(name)
        assert issubclass(cls, Router) and cls.Config is not EmbeddingRouter.Config
