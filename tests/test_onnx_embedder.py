"""The embedder's speed-ups keep its decisions: length buckets, the batching embedder and its cache (fast,
on a counting embedder), and the ONNX Runtime embedder against the transformers reference on the real MiniLM
and the shipped router artifacts (slow)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from routers.engines import EmbedderConfig, Engines, build_embedder
from routers.engines.base import Embedder
from routers.engines.batching import BatchingEmbedder, VectorCache, length_buckets, pad_token_ids
from routers.errors import EngineError
from tests.shipped_routing import Memo, sample_test_split

ROOT = Path(__file__).resolve().parents[1]
MINILM = ROOT / "models" / "all-minilm-l6-v2"


# --- length buckets --------------------------------------------------------------------------------------
def test_buckets_cover_every_index_once_shortest_first() -> None:
    lengths = [50, 3, 400, 12, 11, 48, 52, 10, 390]
    buckets = length_buckets(lengths, max_batch_size=4)
    flat = [i for bucket in buckets for i in bucket]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_buckets_bound_padding_and_size() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=300).tolist()
    for bucket in length_buckets(lengths, max_batch_size=16, max_padding=0.25):
        assert len(bucket) <= 16
        real = sum(lengths[i] for i in bucket)
        assert max(lengths[i] for i in bucket) * len(bucket) <= 1.25 * real + 1e-9


def test_one_long_query_is_not_padded_into_short_ones() -> None:
    buckets = length_buckets([10, 10, 10, 500], max_batch_size=32)
    assert [3] in buckets and len(buckets) == 2


def test_pad_token_ids_masks_the_padding() -> None:
    ids, mask = pad_token_ids([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


# --- the batching embedder ---------------------------------------------------------------------------------
class CountingEmbedder(Embedder):
    """A deterministic embedder that records every engine call (the vector is a hash of the text)."""

    dim = 8
    model_name = "counting"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail:
            raise EngineError("engine down")
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    @staticmethod
    def vector(text: str) -> np.ndarray:
        return np.random.default_rng(abs(hash(text)) % 2**32).standard_normal(8).astype(np.float32)


def test_concurrent_callers_share_engine_calls_and_get_their_own_vectors() -> None:
    engine = CountingEmbedder()
    batcher = BatchingEmbedder(engine, max_batch_texts=64, cache_size=0)
    texts = [f"query {i}" for i in range(20)]

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*[batcher.aembed([t]) for t in texts])

    results = asyncio.run(main())
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_array_equal(result[0], engine.vector(text))
    assert sum(len(c) for c in engine.calls) == 20
    assert len(engine.calls) < 20  # the first runs alone, the rest queue behind it and share calls
    stats = batcher.stats.as_dict()
    assert stats["requests"] == 20 and stats["calls"] == len(engine.calls)


def test_a_lone_request_runs_at_once_and_repeats_hit_the_cache() -> None:
    engine = CountingEmbedder()
    batcher = BatchingEmbedder(engine, cache_size=2)

    async def main() -> None:
        await batcher.aembed(["a", "b"])
        await batcher.aembed(["a", "b", "a"])
        await batcher.aembed(["c"])  # evicts "b", the least recently used (the cache keeps 2)
        await batcher.aembed(["b"])

    asyncio.run(main())
    assert engine.calls == [["a", "b"], ["c"], ["b"]]
    assert batcher.cache.hits == 3


def test_duplicates_in_one_call_are_embedded_once() -> None:
    engine = CountingEmbedder()
    out = asyncio.run(BatchingEmbedder(engine, cache_size=0).aembed(["x", "y", "x"]))
    assert engine.calls == [["x", "y"]]
    np.testing.assert_array_equal(out[0], out[2])


def test_an_engine_error_reaches_every_waiting_caller() -> None:
    batcher = BatchingEmbedder(CountingEmbedder(fail=True), cache_size=0)

    async def main() -> list[object]:
        return await asyncio.gather(*[batcher.aembed([f"q{i}"]) for i in range(5)], return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, EngineError) for r in results)


def test_a_caller_that_gives_up_is_left_out() -> None:
    engine = CountingEmbedder()
    batcher = BatchingEmbedder(engine, cache_size=0)

    async def main() -> np.ndarray:
        first = asyncio.ensure_future(batcher.aembed(["first"]))
        gone = asyncio.ensure_future(batcher.aembed(["gone"]))
        await asyncio.sleep(0)
        gone.cancel()
        kept = await batcher.aembed(["kept"])
        await first
        return kept

    kept = asyncio.run(main())
    np.testing.assert_array_equal(kept[0], engine.vector("kept"))
    assert all("gone" not in call for call in engine.calls[1:])


def test_vector_cache_is_bounded_lru() -> None:
    cache = VectorCache(2)
    for key in "abc":
        cache.put(key, np.zeros(1))
    assert cache.get("a") is None and len(cache) == 2


# --- ONNX Runtime against the transformers reference (real MiniLM) ----------------------------------------
needs_minilm = pytest.mark.skipif(not (MINILM / "model.safetensors").exists(),
                                  reason="models/all-minilm-l6-v2 missing: run bash scripts/setup.sh")
TOLERANCE = 1e-4  # per vector component; measured ~2e-7 (float32 kernels summing in another order)


@pytest.fixture(scope="module")
def embedders() -> tuple[Embedder, Embedder]:
    config = {"model": str(MINILM), "num_threads": 2, "max_batch_size": 32}
    return build_embedder(EmbedderConfig(**config)), build_embedder(EmbedderConfig(backend="onnx", **config))


@pytest.mark.slow
@needs_minilm
def test_onnx_vectors_match_transformers(embedders: tuple[Embedder, Embedder]) -> None:
    reference, onnx = embedders
    texts = ["hi", "What is 2 + 2?", "Explain the proof of the Cauchy-Schwarz inequality step by step. " * 12,
             "Ünïcödé, emoji 🚀 and\nnew lines\t\ttabs", "x " * 600]  # the last one is truncated at max_length
    expected, got = reference.embed(texts), onnx.embed(texts)
    assert got.shape == expected.shape == (5, 384)
    assert np.abs(got - expected).max() < TOLERANCE
    # one at a time and in a mixed batch: buckets change nothing
    np.testing.assert_allclose(np.stack([onnx.embed([t])[0] for t in texts]), got, atol=1e-5)


@pytest.mark.slow
@needs_minilm
def test_onnx_export_is_reused_while_the_weights_are_the_same(embedders: tuple[Embedder, Embedder]) -> None:
    from routers.engines.onnx import export_encoder

    exported = export_encoder(MINILM)
    before = exported.stat().st_mtime_ns
    assert export_encoder(MINILM) == exported and exported.stat().st_mtime_ns == before
    assert json.loads(exported.with_suffix(".json").read_text())["name"] == MINILM.name


@pytest.mark.slow
@needs_minilm
def test_onnx_lanes_give_the_same_vectors(embedders: tuple[Embedder, Embedder]) -> None:
    _, onnx = embedders
    laned = build_embedder(EmbedderConfig(model=str(MINILM), backend="onnx", num_threads=2, max_batch_size=32,
                                          lanes=2))
    texts = ["hi", "What is 2 + 2?", "Name the largest planet. " * 30, "tabs\tand\nlines", "x " * 600, "why?"]
    np.testing.assert_allclose(laned.embed(texts), onnx.embed(texts), atol=1e-5)
    np.testing.assert_allclose(laned.embed(texts[:1]), onnx.embed(texts[:1]), atol=1e-5)  # a lone text: no lanes


def test_lane_shares_cover_every_text_once_and_balance_tokens() -> None:
    from routers.engines.onnx import balanced_shares

    lengths = [400, 10, 12, 200, 190, 15, 30, 5]
    shares = balanced_shares(lengths, 2)
    assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
    totals = [sum(lengths[i] for i in share) for share in shares]
    assert abs(totals[0] - totals[1]) <= max(lengths[i] for i in shares[totals.index(max(totals))])
    assert balanced_shares([7], 3) == [[0], [], []]


def test_lanes_need_the_onnx_backend() -> None:
    with pytest.raises(ValueError, match="lanes: 2 needs backend: onnx"):
        EmbedderConfig(model=str(MINILM), lanes=2)


def test_onnx_refuses_a_gpu_device() -> None:
    with pytest.raises(EngineError, match="backend: transformers"):
        build_embedder(EmbedderConfig(model=str(MINILM), backend="onnx", device="cuda"))


SHIPPED = ["hybrid_llm", "hybrid_llm_defended", "blend", "blend_defended", "mf", "domain_prior"]


@pytest.mark.slow
@needs_minilm
def test_onnx_decides_exactly_as_transformers_on_test_queries(embedders: tuple[Embedder, Embedder]) -> None:
    from routers.base import read_artifact_manifest
    from routers.registry import router_class

    queries = sample_test_split(400)  # the whole split runs in bench/route_throughput.py --runtimes
    reference, onnx = (Memo(e) for e in embedders)
    for name in SHIPPED:
        directory = ROOT / "artifacts" / name
        router = router_class(read_artifact_manifest(directory)["router"]).load(directory)
        expected = asyncio.run(router.aroute_many(queries, Engines(embedder=reference), None))
        got = asyncio.run(router.aroute_many(queries, Engines(embedder=onnx), None))
        scores = np.array([[e.score, g.score] for e, g in zip(expected, got, strict=True)])
        flips = sum(e.use_large != g.use_large for e, g in zip(expected, got, strict=True))
        assert np.abs(scores[:, 0] - scores[:, 1]).max() < 1e-4, name
        assert flips == 0, f"{name}: {flips} of {len(queries)} decisions flip"


# --- int8 weights (quantize: int8) -----------------------------------------------------------------------
def test_quantize_needs_the_onnx_backend() -> None:
    with pytest.raises(ValueError, match="quantize: int8 needs backend: onnx"):
        EmbedderConfig(model=str(MINILM), quantize="int8")


def test_int8_vectors_have_a_cache_file_of_their_own() -> None:
    from routers.engines.cache import cache_path

    base = {"model": str(MINILM), "backend": "onnx"}
    float32, int8 = (cache_path("c", EmbedderConfig(**base, quantize=q)) for q in ("none", "int8"))
    assert float32 != int8
    assert float32 == cache_path("c", EmbedderConfig(model=str(MINILM)))  # backend changes no vector


#: measured on the whole test split (bench/embedder_quantisation.py): cosine >= 0.981, 1.5-2.0% of the
#: shipped routers' decisions flip, APGR and quality within +-0.004 (paired, domains resampled)
INT8_MIN_COSINE = 0.97
INT8_MAX_FLIP_SHARE = 0.04


@pytest.mark.slow
@needs_minilm
def test_int8_vectors_stay_close_and_few_decisions_flip(embedders: tuple[Embedder, Embedder]) -> None:
    from routers.base import read_artifact_manifest
    from routers.engines.onnx import QUANTISATIONS, export_encoder
    from routers.registry import router_class

    int8 = build_embedder(EmbedderConfig(model=str(MINILM), backend="onnx", quantize="int8", num_threads=2,
                                         max_batch_size=32, lanes=2))
    exported = export_encoder(MINILM, "int8")
    assert exported.name == "encoder_int8.onnx"
    assert json.loads(exported.with_suffix(".json").read_text())["quantize"] == QUANTISATIONS["int8"]
    # one text per call: a text's vector does not depend on the texts embedded with it
    texts = ["What is the capital of France?", "Solve 3x + 7 = 22 step by step.", "Explain entropy. " * 20, "hi"]
    np.testing.assert_array_equal(int8.embed(texts), np.stack([int8.embed([t])[0] for t in texts]))
    queries = sample_test_split(400)
    reference, quantised = Memo(embedders[1]), Memo(int8)
    cosine = (reference.embed(queries) * quantised.embed(queries)).sum(1)
    assert cosine.min() > INT8_MIN_COSINE and cosine.mean() > 0.99
    for name in SHIPPED:
        directory = ROOT / "artifacts" / name
        router = router_class(read_artifact_manifest(directory)["router"]).load(directory)
        expected = asyncio.run(router.aroute_many(queries, Engines(embedder=reference), None))
        got = asyncio.run(router.aroute_many(queries, Engines(embedder=quantised), None))
        flips = sum(e.use_large != g.use_large for e, g in zip(expected, got, strict=True))
        assert flips <= INT8_MAX_FLIP_SHARE * len(queries), f"{name}: {flips} of {len(queries)} decisions flip"
