"""The bert router: real MiniLM weights fine-tuned for a few steps on a dozen queries.

Arithmetic questions the small model answers as well as the large one (a tie: the small one will do)
and proofs only the large one gets right: a split MiniLM's pooled vectors already separate, so a few
steps of fine-tuning must lower the loss, and the round trip through the artifact must be exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from routers import cli
from routers.bert.model import binary_cross_entropy, encode_queries, predict_probabilities, seeded
from routers.bert.router import BertRouter, BertRouterConfig, initial_classifier
from routers.data import ModelOutcome, QueryExample, RoutingDataset
from routers.errors import ConfigError
from routers.registry import canonical_name, router_class, router_names
from routers.safe_io import UNSAFE_SUFFIXES
from tests.conftest import LARGE_NAME, SMALL_NAME, two_candidates
from tests.job_helpers import MINILM, tiny_routing_files, write_yaml

pytestmark = pytest.mark.skipif(not MINILM.exists(),
                                reason="run `bash scripts/setup.sh` (needs models/all-minilm-l6-v2)")

EASY = [f"What is {a} plus {a + 3}?" for a in range(6)]
HARD = [f"Prove that every group of order {p * p} is abelian, for the prime {p}." for p in (2, 3, 5, 7, 11, 13)]
# 12 queries, batch 4, 6 steps: two epochs in a few seconds; a high constant-ish LR so 6 steps move the loss.
FAST: dict[str, Any] = {"base_model": str(MINILM), "max_length": 32, "batch_size": 4, "epochs": 2, "max_steps": 6,
                        "learning_rate": 2e-4, "warmup_ratio": 0.0, "dropout": 0.0, "threads": 1, "seed": 3}


def dataset(easy: list[str], hard: list[str]) -> RoutingDataset:
    examples = [QueryExample(query=q, task_name="toy", outcomes={
        SMALL_NAME: ModelOutcome(performance=float(q in easy)), LARGE_NAME: ModelOutcome(performance=1.0)})
        for q in easy + hard]
    return RoutingDataset(examples, two_candidates())


@pytest.fixture(scope="module")
def toy() -> RoutingDataset:
    return dataset(EASY, HARD)


@pytest.fixture(scope="module")
def fitted(toy: RoutingDataset) -> tuple[BertRouter, dict[str, Any]]:
    router = BertRouter(FAST, toy.llm_data)
    return router, router.fit(toy)


def initial_scores(toy: RoutingDataset) -> tuple[torch.nn.Module, np.ndarray]:
    """The classifier ``fit`` starts from (same seed: same head) and its scores on ``toy``."""
    config = BertRouterConfig.model_validate(FAST)
    with seeded(config.seed, config.threads):
        model, tokenizer = initial_classifier(config)
    encoded = encode_queries(tokenizer, toy.queries, config.max_length, config.head_share)
    return model, predict_probabilities(model, encoded, tokenizer.pad_token_id, 64, "initial")


def test_fit_moves_encoder_and_head_and_lowers_the_loss(toy: RoutingDataset,
                                                        fitted: tuple[BertRouter, dict[str, Any]]) -> None:
    router, metrics = fitted
    initial, before = initial_scores(toy)
    targets = np.array([1.0] * len(EASY) + [0.0] * len(HARD))
    assert metrics["steps"] == 6 and metrics["n_train"] == 12 and metrics["positive_share"] == 0.5
    assert metrics["train_bce"] < binary_cross_entropy(before, targets)
    assert metrics["train_bce"] == pytest.approx(binary_cross_entropy(router.dataset_scores(toy), targets))
    fitted_params = dict(router.model.named_parameters())
    for name in ("head.weight", "encoder.encoder.layer.0.attention.self.query.weight",
                 "encoder.embeddings.word_embeddings.weight"):
        assert not torch.equal(fitted_params[name], dict(initial.named_parameters())[name]), name
    scores = router.dataset_scores(toy)
    assert scores[: len(EASY)].mean() > scores[len(EASY):].mean()


def test_scores_are_probabilities_and_decisions_follow_the_threshold(
        toy: RoutingDataset, fitted: tuple[BertRouter, dict[str, Any]]) -> None:
    router, metrics = fitted
    scores = router.dataset_scores(toy)
    assert scores.shape == (len(toy),) and np.all((scores >= 0) & (scores <= 1))
    # oracle_share: escalate the share of training queries the large model wins (half of them)
    assert router.threshold == metrics["calibrated_threshold"]
    assert np.mean(scores < router.threshold) == pytest.approx(0.5)
    results = router.route_batch([{"query": q} for q in toy.queries], task_name="toy")
    assert [r["use_large"] for r in results] == list(scores < router.threshold)
    assert [r["router_score"] for r in results] == pytest.approx(scores.tolist())
    assert router.route_single(EASY[0])["router_score"] == pytest.approx(scores[0], abs=1e-6)
    assert router.reference_scores() is not None and router.reference_count == len(toy)


def test_save_then_load_gives_identical_scores(toy: RoutingDataset, fitted: tuple[BertRouter, dict[str, Any]],
                                               tmp_path: Path) -> None:
    router, _ = fitted
    directory = router.save(tmp_path / "bert")
    files = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
    assert {"router.json", "head.safetensors", "encoder/model.safetensors", "encoder/config.json"} <= files
    assert not any(Path(f).suffix in UNSAFE_SUFFIXES for f in files)
    state = torch.get_rng_state()
    loaded = BertRouter.load(directory)
    assert torch.equal(torch.get_rng_state(), state)  # loading draws nothing from the caller's RNG
    assert np.array_equal(loaded.dataset_scores(toy), router.dataset_scores(toy))
    assert loaded.threshold == router.threshold and loaded.pair == router.pair
    assert np.array_equal(loaded.reference_scores(), router.reference_scores())
    assert loaded.train_metrics == json.loads(json.dumps(router.train_metrics))


def test_a_fit_repeats_exactly_for_a_seed(toy: RoutingDataset, fitted: tuple[BertRouter, dict[str, Any]]) -> None:
    router, metrics = fitted
    state = torch.get_rng_state()
    again = BertRouter(FAST, toy.llm_data)
    assert again.fit(toy)["loss_last"] == metrics["loss_last"]
    assert np.array_equal(again.dataset_scores(toy), router.dataset_scores(toy))
    assert torch.equal(torch.get_rng_state(), state)  # the fit's seeding leaves the caller's RNG alone


def test_long_queries_keep_their_start_and_their_end(fitted: tuple[BertRouter, dict[str, Any]]) -> None:
    router, _ = fitted
    text = "opening " + "filler " * 200 + "closing question"
    (ids,) = encode_queries(router.tokenizer, [text], 32, 0.25)
    tokens = router.tokenizer.convert_ids_to_tokens(ids)
    assert len(ids) == 32 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1] == "opening" and tokens[-3:-1] == ["closing", "question"]
    (short,) = encode_queries(router.tokenizer, ["two words"], 32, 0.25)
    assert len(short) == 4


@pytest.mark.parametrize(("override", "field"), [
    ({"max_length": 4}, "max_length"), ({"learning_rate": 0.0}, "learning_rate"), ({"tie_credit": 1.5}, "tie_credit"),
    ({"max_train_examples": 3}, "max_train_examples"), ({"threads": 0}, "threads"), ({"seed": -1}, "seed"),
    ({"threshold_rule": "median"}, "threshold_rule"), ({"hidden_size": 64}, "hidden_size"),
])
def test_config_rejects_bad_values(override: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid config for router 'bert':(.|\n)*{field}"):
        BertRouter(override)


def test_registry_and_engine_roles() -> None:
    assert "bert" in router_names() and router_class("bert") is BertRouter
    assert canonical_name("bert_classifier") == canonical_name("BERT") == "bert"
    probe = BertRouter({}, two_candidates())  # cheap: no model is loaded before fit or load
    assert probe.model is None
    assert probe.engine_roles == probe.training_engine_roles() == probe.evaluation_engine_roles() == frozenset()


def test_a_missing_base_model_is_a_config_error(toy: RoutingDataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hparam.base_model"):
        BertRouter({**FAST, "base_model": str(tmp_path / "no-such-model")}, toy.llm_data).fit(toy)


def test_llmrouter_train_then_evaluate_the_artifact(tmp_path: Path, llm_data_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``llmrouter train`` binds no engine for bert, saves the artifact; ``evaluate --load`` reads it back."""
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    train, test = tiny_routing_files(tmp_path / "data", "gsm8k_train.jsonl", 16, 8)
    config = write_yaml(tmp_path / "bert.yaml", {
        "router": "bert",
        "data_path": {"routing_data_train": train, "routing_data_test": test, "llm_data": str(llm_data_path)},
        "model_path": {"save_model_path": str(tmp_path / "bert"), "load_model_path": str(tmp_path / "bert")},
        "hparam": {**FAST, "max_steps": 2},
    })
    assert cli.main(["train", "--config", str(config), "--quiet"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["train"]["steps"] == 2 and (tmp_path / "bert" / "router.json").exists()
    assert cli.main(["evaluate", "--router", "bert", "--config", str(config), "--json", "--quiet",
                     "--load", f"bert={trained['saved_to']}"]) == 0
    (report,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert report["apgr"] == pytest.approx(trained["test"]["apgr"])
