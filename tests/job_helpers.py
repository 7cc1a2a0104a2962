"""Tiny real inputs for the training-job tests: routing files cut from the published data, YAML, a tiny LM."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from routers.data.fetch import DATASETS
from routers.data.location import DATA_ENV, data_dir, find_data_dir

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / "models/smollm2-135m-instruct"
MINILM = ROOT / "models/all-minilm-l6-v2"
#: the files the tests read: RouteLLM's data as this project splits it (``llmrouter data get routellm --from DIR``)
ROUTELLM_FILES = [f.path for f in DATASETS["routellm"].files]


def routing_data() -> Path:
    """The data directory holding RouteLLM's routing data (``routers.data.location``), which the project does
    not carry. With ``LLMROUTER_DATA`` set (CI sets it) it must be there: a missing directory or file fails
    the test. Unset, the tests that read it skip, saying how to get it, when neither ``../shared/data`` beside
    the checkout nor ``~/.cache/llmrouter/data`` holds ``ROUTELLM_FILES``."""
    if os.environ.get(DATA_ENV):
        return data_dir()
    found = find_data_dir()
    if found is None or not all((found / name).is_file() for name in ROUTELLM_FILES):
        pytest.skip(f"no routing data: `llmrouter data get routellm --from DIR`, DIR a copy of a data directory "
                    f"(CI: ../shared/data), or set {DATA_ENV} to one")
    return found


def data_file(name: str) -> Path:
    """``name`` in the data directory (:func:`routing_data`)."""
    return routing_data() / name


def write_yaml(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(payload))
    return path


def tiny_routing_files(tmp_path: Path, source: str, n_train: int, n_test: int) -> tuple[str, str]:
    """The first queries of a published routing file in the data directory (both models' lines), as small
    train/test files."""
    lines = [line for line in data_file(source).read_text(encoding="utf-8").split("\n") if line.strip()]
    by_query: dict[str, list[str]] = {}
    for line in lines:
        by_query.setdefault(json.loads(line)["query"], []).append(line)
    groups = [g for g in by_query.values() if len(g) == 2]
    tmp_path.mkdir(parents=True, exist_ok=True)
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("\n".join(line for g in groups[:n_train] for line in g) + "\n")
    test.write_text("\n".join(line for g in groups[n_train:n_train + n_test] for line in g) + "\n")
    return str(train), str(test)


def save_tiny_router_lm(path: Path) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer: a causal-LM router base that trains in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM))
    LlamaForCausalLM(LlamaConfig(
        # head size 32: the smallest vLLM's CPU attention takes, so the job's artifact can be served by vLLM
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def save_tiny_bert_router(path: Path, workdir: Path, seed: int = 0) -> Path:
    """A BERT router fine-tuned for two steps on 24 published MMLU queries: a real artifact in seconds."""
    from routers.bert.router import BertRouter
    from routers.data import RoutingDataset, load_llm_data

    train, _ = tiny_routing_files(workdir, "mmlu_train.jsonl", 24, 0)
    data = RoutingDataset.from_files([train], load_llm_data(data_file("llm_candidates.json")))
    router = BertRouter({"base_model": str(MINILM), "max_length": 32, "batch_size": 8, "max_steps": 2,
                         "max_train_examples": 24, "seed": seed}, data.llm_data)
    router.fit(data)
    return router.save(path)
