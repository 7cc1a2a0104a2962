"""bench/llmrouter_lib.py's own parts, without the llmrouter-lib venv: the data handed to the worker, the
score mapping the worker applies, and reading its scores back onto our evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.llmrouter_lib import (
    LARGE_SIZE_PLACEHOLDER,
    Split,
    apgr_difference,
    lib_llm_data,
    lib_predictions,
    reference_predictions,
    routing_rows,
    write_split,
)
from bench.llmrouter_lib_worker import class_column, hybrid_router_score, softmax_column
from routers.data import ModelPair
from routers.evaluation.generalisation import curve_metrics
from tests.conftest import LARGE_NAME, SMALL_NAME, synthetic_dataset

PAIR = ModelPair(small=SMALL_NAME, large=LARGE_NAME)


def split_of(n: int = 40) -> Split:
    rng = np.random.default_rng(3)
    data = synthetic_dataset(rng.random(n) < 0.6, rng.random(n) < 0.85)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return Split("seen", data, data, x, x)


def test_routing_rows_are_llmrouter_jsonl_small_first_with_embedding_ids() -> None:
    data = synthetic_dataset([1.0, 0.0], [1.0, 1.0])
    rows = routing_rows(data, PAIR)
    assert [(r["model_name"], r["embedding_id"], r["performance"]) for r in rows] == [
        (SMALL_NAME, 0, 1.0), (LARGE_NAME, 0, 1.0), (SMALL_NAME, 1, 0.0), (LARGE_NAME, 1, 1.0)]
    assert {"task_name", "query", "model_name", "performance", "embedding_id"} == set(rows[0])


def test_lib_llm_data_keeps_the_size_order_the_lib_needs() -> None:
    data = synthetic_dataset([1.0], [1.0])
    out = lib_llm_data(dict(data.llm_data), PAIR)
    assert out[SMALL_NAME]["size"] == "1B" and out[LARGE_NAME]["size"] == LARGE_SIZE_PLACEHOLDER
    json.dumps(out)  # it is written as the lib's llm_data JSON


def test_worker_score_mapping() -> None:
    assert np.allclose(hybrid_router_score(np.array([-0.3, 0.4, 1.7])), [0.0, 0.4, 1.0])
    logits = np.array([[2.0, 0.0], [0.0, 0.0], [1000.0, -1000.0]])
    assert np.allclose(softmax_column(logits, 0), [1 / (1 + np.exp(-2.0)), 0.5, 1.0])
    assert class_column(["b", "a"], "a") == 1
    with pytest.raises(ValueError):
        class_column(["b"], "a")


def test_lib_scores_come_back_aligned_with_our_outcomes(tmp_path: Path) -> None:
    split = split_of()
    manifest = write_split(tmp_path, split, PAIR)
    assert np.load(tmp_path / manifest["train_emb"]).shape == split.x_train.shape
    assert json.loads((tmp_path / manifest["eval_queries"]).read_text()) == split.eval.queries
    reference = reference_predictions(split, dict(split.train.llm_data), PAIR)
    gap = reference.small - reference.large
    out = tmp_path / "out" / "seen"
    out.mkdir(parents=True)
    np.save(out / "r.scores.npy", gap)
    np.save(out / "r.raw.npy", -gap)
    np.save(out / "r.large.npy", (gap < 0).astype(np.uint8))
    lib = lib_predictions(tmp_path, "seen", "r", reference)
    assert np.array_equal(lib.scores, gap) and np.array_equal(lib.use_large, gap < 0)
    assert curve_metrics(lib)["apgr"] > 0.9  # the gap itself ranks like the oracle
    raw = lib_predictions(tmp_path, "seen", "r", reference, raw=True)
    assert curve_metrics(raw)["apgr"] < 0.5
    same = apgr_difference(lib, lib, n_resamples=20, seed=0)
    assert same.value == 0.0 and same.low == 0.0 and same.high == 0.0
