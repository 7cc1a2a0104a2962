"""Causal-LM router: labels, parsing, LoRA training/resume/merge on a tiny random Llama, artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from routers.causal_lm.labels import (
    SFTExample,
    balanced_indices,
    best_llm,
    best_llm_labels,
    router_prompt,
    training_text,
)
from routers.causal_lm.parsing import parse_llm_name
from routers.causal_lm.router import CausalLMRouter, ensure_merged
from routers.data import ModelOutcome, QueryExample
from routers.errors import ConfigError
from routers.safe_io import UNSAFE_SUFFIXES
from tests.conftest import LARGE_NAME, ROOT, SMALL_NAME, synthetic_dataset, two_candidates
from tests.tiny_models import TINY_EXAMPLES, full_forward_logprobs, tiny_train_config

SMOLLM = ROOT / "models" / "smollm2-135m-instruct"
ARTIFACT = ROOT / "artifacts" / "causallm_router"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GPT4 = "gpt-4-1106-preview"


def example(query: str, **perf: float) -> QueryExample:
    return QueryExample(query=query, outcomes={k: ModelOutcome(performance=v) for k, v in perf.items()})


# --- labels ----------------------------------------------------------------------------------------
def test_prompt_template_is_exact() -> None:
    assert router_prompt("What is 2+2?") == "Query: What is 2+2?\n\nBest LLM: "
    assert training_text("q", "gpt-4", "</s>") == "Query: q\n\nBest LLM: gpt-4</s>"


def test_best_llm_is_highest_performance_and_ties_go_to_the_cheaper_model() -> None:
    order = ["cheap", "dear"]
    assert best_llm(example("a", cheap=0.0, dear=1.0), order) == "dear"
    assert best_llm(example("b", cheap=1.0, dear=0.0), order) == "cheap"
    assert best_llm(example("c", cheap=1.0, dear=1.0), order) == "cheap"
    assert best_llm(example("d", cheap=0.0, dear=0.0), order) == "cheap"


def test_labels_order_candidates_by_cost_not_by_the_order_given() -> None:
    data = synthetic_dataset([1, 0, 1, 0], [1, 1, 0, 0])
    # Listing the large model first must not make it win ties: llm_data says it is dearer.
    assert best_llm_labels(data, [LARGE_NAME, SMALL_NAME]) == [SMALL_NAME, LARGE_NAME, SMALL_NAME, SMALL_NAME]


def test_balanced_indices_balance_then_fill_from_the_larger_label() -> None:
    labels = ["s"] * 90 + ["l"] * 10
    chosen = balanced_indices(labels, 40, seed=0)
    picked = [labels[i] for i in chosen]
    assert len(chosen) == 40 and chosen == sorted(chosen)
    assert picked.count("l") == 10 and picked.count("s") == 30
    even = [labels[i] for i in balanced_indices(labels, 16, seed=1)]
    assert even.count("l") == 8 and even.count("s") == 8


# --- parsing ---------------------------------------------------------------------------------------
CANDIDATES = [MIXTRAL, GPT4]


@pytest.mark.parametrize(
    ("text", "name", "method"),
    [
        (GPT4, GPT4, "exact"),
        (f"  {MIXTRAL}\nQuery: next", MIXTRAL, "exact"),
        (f'"{GPT4}".', GPT4, "exact"),
        ("GPT-4-1106-Preview", GPT4, "normalized"),
        ("Mixtral-8x7B-Instruct-v0.1", MIXTRAL, "normalized"),
        ("mistralai / mixtral 8x7b instruct v0.1", MIXTRAL, "normalized"),
        ("The best LLM is gpt-4-1106-preview, clearly", GPT4, "normalized"),
        ("gpt-4-1106-previw", GPT4, "fuzzy"),
        ("mistralai/Mixtral-8x7B-Instruct", MIXTRAL, "fuzzy"),
        ("", GPT4, "fallback"),
        ("\n\n  \n", GPT4, "fallback"),
        ("banana", GPT4, "fallback"),
        (f"either {MIXTRAL} or {GPT4}", GPT4, "fallback"),
    ],
)
def test_parse_llm_name(text: str, name: str, method: str) -> None:
    result = parse_llm_name(text, CANDIDATES, fallback=GPT4)
    assert (result.name, result.method, result.raw) == (name, method, text)


def test_parse_fallback_is_configurable_and_fuzzy_threshold_is_respected() -> None:
    assert parse_llm_name("banana", CANDIDATES, fallback=MIXTRAL).name == MIXTRAL
    assert parse_llm_name("gpt-4-1106-previw", CANDIDATES, fallback=MIXTRAL, fuzzy_threshold=0.99).method == "fallback"
    with pytest.raises(ValueError):
        parse_llm_name("x", [], fallback=GPT4)


# --- step API without a model -----------------------------------------------------------------------
@pytest.fixture
def bare_router() -> CausalLMRouter:
    router = CausalLMRouter({}, two_candidates())
    router.resolve_pair()
    return router


def test_step_api_prompt_params_and_continuations(bare_router: CausalLMRouter) -> None:
    assert bare_router.router_prompt("hi") == "Query: hi\n\nBest LLM: "
    params = bare_router.router_params()
    assert params.temperature == 0.0 and params.stop == ["\n"] and params.max_tokens == 32
    assert bare_router.candidate_continuations() == [SMALL_NAME, LARGE_NAME]


def test_score_is_sigmoid_of_the_logprob_difference(bare_router: CausalLMRouter) -> None:
    assert bare_router.score_from_logprobs([-1.0, -1.0]) == pytest.approx(0.5)
    assert bare_router.score_from_logprobs([-1.0, -3.0]) == pytest.approx(1 / (1 + math.exp(-2)))
    assert bare_router.score_from_logprobs([-1000.0, 0.0]) == pytest.approx(0.0)
    assert bare_router.score_from_logprobs([-math.inf, -math.inf]) == 0.5
    assert bare_router.score_from_logprobs([-2.0, -math.inf]) == 1.0
    with pytest.raises(ValueError):
        bare_router.score_from_logprobs([-1.0])


def test_decide_from_generation_follows_the_parsed_name_without_a_score(bare_router: CausalLMRouter) -> None:
    small = bare_router.decide_from_generation("q", SMALL_NAME)
    assert (small.model_name, small.use_large, small.extra["parse_method"]) == (SMALL_NAME, False, "exact")
    assert small.extra["parse_failed"] is False and small.extra["decided_by"] == "generation"
    garbage = bare_router.decide_from_generation("q", "???")
    assert (garbage.model_name, garbage.use_large, garbage.extra["parse_method"]) == (LARGE_NAME, True, "fallback")
    assert garbage.extra["generated"] == "???" and garbage.extra["parse_failed"] is True
    assert "fallback_model" in garbage.reason
    fallback_small = CausalLMRouter({"fallback_model": SMALL_NAME}, two_candidates())
    decision = fallback_small.decide_from_generation("q", "???")
    assert (decision.model_name, decision.use_large, decision.extra["parse_failed"]) == (SMALL_NAME, False, True)


def test_the_generated_name_decides_at_the_default_threshold_and_the_score_is_reported(
    bare_router: CausalLMRouter,
) -> None:
    # The score favours the large model, but without an explicit threshold the generated name decides.
    decision = bare_router.decide_from_generation("q", f"{SMALL_NAME}\nmore", score=0.1)
    out = decision.to_dict(bare_router.score_key)
    assert (out["model_name"], out["use_large"], out["router_score"]) == (SMALL_NAME, False, 0.1)
    assert out["parsed_model"] == out["model_name"] and out["decided_by"] == "generation"
    assert "threshold" not in out and out["parse_failed"] is False
    failed = bare_router.decide_from_generation("q", "banana", score=0.9).to_dict(bare_router.score_key)
    assert (failed["model_name"], failed["parse_failed"], failed["router_score"]) == (LARGE_NAME, True, 0.9)


def test_an_explicit_threshold_makes_the_score_decide(bare_router: CausalLMRouter) -> None:
    # The generated name says small, but a score below the (per-call) threshold routes large.
    decision = bare_router.decide_from_generation("q", SMALL_NAME, score=0.3, threshold=0.4)
    assert (decision.use_large, decision.threshold, decision.score) == (True, 0.4, 0.3)
    assert decision.extra["parsed_model"] == SMALL_NAME and decision.extra["decided_by"] == "threshold"
    assert bare_router.decide_from_generation("q", LARGE_NAME, score=0.6, threshold=0.5).use_large is False
    # A configured threshold (YAML router_threshold, calibrate / with_threshold) is explicit too.
    configured = CausalLMRouter({"router_threshold": 0.5}, two_candidates())
    assert configured.decide_from_generation("q", LARGE_NAME, score=0.6).use_large is False
    bare_router.with_threshold(0.7)
    assert bare_router.decide_from_generation("q", SMALL_NAME, score=0.6).use_large is True
    with pytest.raises(ValueError, match="score"):
        bare_router.decide_from_generation("q", SMALL_NAME)


def test_fallback_model_must_be_one_of_the_pair() -> None:
    router = CausalLMRouter({"fallback_model": "someone-else"}, two_candidates())
    with pytest.raises(ConfigError, match="fallback_model"):
        router.decide_from_generation("q", "???")


# --- tiny model: training, resume, merge, artifacts -------------------------------------------------
def test_encode_example_masks_the_prompt_and_keeps_the_answer_when_truncating(tiny_model_dir: Path) -> None:
    from routers.causal_lm.training import IGNORE_INDEX, encode_example, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    long = SFTExample(router_prompt("word " * 200), LARGE_NAME)
    encoded = encode_example(tokenizer, long, max_length=32)
    answer = tokenizer(LARGE_NAME, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert len(encoded["input_ids"]) == 32
    assert encoded["input_ids"][-len(answer):] == answer
    assert encoded["labels"][-len(answer):] == answer
    assert set(encoded["labels"][: -len(answer)]) == {IGNORE_INDEX}
    assert tokenizer.decode(encoded["input_ids"][: -len(answer)]).endswith("Best LLM: ")


def test_learning_rate_warms_up_then_decays_linearly_to_the_last_step() -> None:
    from routers.causal_lm.training import CausalLMTrainConfig, _learning_rate

    config = CausalLMTrainConfig(learning_rate=1.0, warmup_steps=2)
    rates = [_learning_rate(step, config, total_steps=6) for step in range(6)]
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])
    constant = config.model_copy(update={"lr_schedule": "constant"})
    assert [_learning_rate(step, constant, 6) for step in range(2, 6)] == [1.0] * 4


@pytest.mark.slow
def test_training_reduces_the_answer_loss(tiny_model_dir: Path) -> None:
    from routers.causal_lm.training import train_causal_lm

    seen: list[dict[str, float]] = []
    result = train_causal_lm(tiny_train_config(tiny_model_dir), TINY_EXAMPLES, on_step=seen.append)
    assert result.steps == 12 and len(result.losses) == 12 and result.samples_per_s > 0
    assert [s["step"] for s in seen] == list(range(1, 13))
    assert np.mean(result.losses[-3:]) < 0.85 * np.mean(result.losses[:3])


@pytest.mark.slow
def test_checkpoint_resume_continues_the_step_count(tiny_model_dir: Path, tmp_path: Path) -> None:
    from routers.causal_lm.training import train_causal_lm

    checkpoint = tmp_path / "ckpt"
    # Constant rate: a linear schedule's rates depend on max_steps, which this test changes between runs.
    first = train_causal_lm(tiny_train_config(tiny_model_dir, max_steps=3, checkpoint_dir=str(checkpoint),
                                              checkpoint_every=1, lr_schedule="constant"), TINY_EXAMPLES)
    assert first.steps == 3 and json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 3
    assert not [p for p in checkpoint.iterdir() if p.suffix in UNSAFE_SUFFIXES]
    second = train_causal_lm(tiny_train_config(tiny_model_dir, max_steps=5, checkpoint_dir=str(checkpoint),
                                               lr_schedule="constant"), TINY_EXAMPLES)
    assert (second.resumed_from_step, second.steps, len(second.losses)) == (3, 5, 5)
    assert second.losses[:3] == first.losses
    # Resuming reproduces an uninterrupted run: same data order, same weights and optimizer moments.
    straight = train_causal_lm(tiny_train_config(tiny_model_dir, max_steps=5, lr_schedule="constant"), TINY_EXAMPLES)
    assert second.losses == pytest.approx(straight.losses, rel=1e-4)


def _ddp_worker(rank: int, world: int, port: int, base: str, out: str) -> None:
    import torch.distributed as dist

    from routers.causal_lm.training import CausalLMTrainConfig, train_causal_lm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        config = CausalLMTrainConfig(base_model=base, lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=2e-2,
                                     batch_size=2, max_length=48, max_steps=3, num_threads=1)
        result = train_causal_lm(config, TINY_EXAMPLES, adapter_dir=Path(out) / "adapter")
        Path(out, f"rank{rank}.json").write_text(json.dumps({"losses": result.losses, "steps": result.steps}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_training_shards_data_and_only_rank0_saves(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two gloo workers, as Ray Train's TorchTrainer would start them: same all-reduced losses, one adapter."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tiny_model_dir), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["steps"] == 3 and len(ranks[0]["losses"]) == 3
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_merged_model_loads_in_transformers_generator_and_generates(tiny_model_dir: Path, tmp_path: Path) -> None:
    from routers.causal_lm.training import merge_lora, train_causal_lm
    from routers.engines import GeneratorConfig, SamplingParams
    from routers.engines.hf import TransformersGenerator

    adapter = tmp_path / "adapter"
    train_causal_lm(tiny_train_config(tiny_model_dir, max_steps=4), TINY_EXAMPLES, adapter_dir=adapter)
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    merged = merge_lora(tiny_model_dir, adapter, tmp_path / "merged")
    assert (merged / "model.safetensors").exists() and (merged / "tokenizer.json").exists()
    assert not [p for p in merged.iterdir() if p.suffix in UNSAFE_SUFFIXES]
    generator = TransformersGenerator(GeneratorConfig(model=str(merged), prompt_format="chat", device="cpu"))
    prompts = [router_prompt("easy question 1?"), router_prompt("a much longer hard proof question 2!")]
    result = generator.generate(prompts, SamplingParams(max_tokens=6, stop=["\n"]))
    assert len(result) == 2 and all(isinstance(r.text, str) for r in result)
    batched = generator.batch_sequence_logprobs(prompts, [SMALL_NAME, LARGE_NAME])
    reference = np.array([full_forward_logprobs(generator, p, [SMALL_NAME, LARGE_NAME]) for p in prompts])
    np.testing.assert_allclose(batched, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_router_fit_save_load_round_trip_without_pickle(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = synthetic_dataset([1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 0, 1],
                             queries=[f"question {i}?" for i in range(6)])
    router = CausalLMRouter({"base_model": str(tiny_model_dir), "lora_r": 4, "lora_alpha": 8, "max_steps": 3,
                             "batch_size": 2, "max_length": 48, "max_new_tokens": 4,
                             "engine": {"device": "cpu"}}, two_candidates())
    metrics = router.fit(data)
    assert metrics["steps"] == 3 and metrics["n_train"] == 6
    scores = router.dataset_scores(data)
    assert scores.shape == (6,) and np.all((scores >= 0) & (scores <= 1))
    reference = router.reference_scores()  # fit keeps the training-score quantiles for share routing
    assert reference is not None and reference.shape == (101,)
    assert reference[0] == pytest.approx(scores.min(), abs=1e-5)
    assert reference[-1] == pytest.approx(scores.max(), abs=1e-5)
    saved = router.save(tmp_path / "artifact")
    files = [p for p in saved.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in UNSAFE_SUFFIXES]
    assert (saved / "adapter" / "adapter_model.safetensors").exists()
    loaded = CausalLMRouter.load(saved)
    assert loaded.pair == router.pair
    engine = loaded.default_engine_config("router")
    assert engine is not None and Path(engine.model) == ensure_merged(saved) == saved / "merged"
    np.testing.assert_allclose(loaded.dataset_scores(data), scores, atol=1e-5)
    np.testing.assert_allclose(loaded.reference_scores(), reference)
    result = loaded.route_single("question 1?")
    assert result["model_name"] in (SMALL_NAME, LARGE_NAME)
    assert 0.0 <= result["router_score"] <= 1.0
    assert {"generated", "parse_method", "parse_failed", "parsed_model"} <= set(result)
    # The generated name (or the fallback) decides: the result never contradicts its parsed model.
    assert result["model_name"] == result["parsed_model"] and result["decided_by"] == "generation"
    batch = loaded.route_batch(batch=["question 1?", "question 4?"])
    assert batch[0]["model_name"] == result["model_name"]
    assert batch[0]["router_score"] == pytest.approx(result["router_score"], abs=1e-5)


@pytest.mark.slow
def test_engine_overrides_reach_the_generator_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    router = CausalLMRouter({"base_model": str(tiny_model_dir), "lora_r": 2, "max_steps": 1, "batch_size": 2,
                             "max_length": 32}, two_candidates())
    assert router.default_engine_config("router") is None  # nothing trained yet
    router.fit(synthetic_dataset([1, 0], [1, 1], queries=["a?", "b?"]))
    saved = router.save(tmp_path / "artifact")
    loaded = CausalLMRouter.load(saved, tensor_parallel_size=2, engine={"backend": "vllm", "max_batch_size": 4})
    engine = loaded.default_engine_config("router")
    assert engine is not None and engine.backend == "vllm"
    assert (engine.tensor_parallel_size, engine.max_batch_size, engine.prompt_format) == (2, 4, "chat")
    assert engine.max_input_tokens == 32 and Path(engine.model) == saved / "merged"
    with pytest.raises(ConfigError):
        CausalLMRouter({"engine": {"no_such_field": 1}})
    with pytest.raises(ConfigError):
        CausalLMRouter({"use_lora": False})


# --- the shipped artifact ---------------------------------------------------------------------------
@pytest.mark.slow
def test_shipped_artifact_routes_a_query() -> None:
    if not (ARTIFACT / "router.json").exists() or not (SMOLLM / "model.safetensors").exists():
        pytest.skip("artifacts/causallm_router or models/smollm2-135m-instruct missing")
    adapter = ARTIFACT / "adapter" / "adapter_model.safetensors"
    assert adapter.stat().st_size < 10 * 2**20
    router = CausalLMRouter.load(ARTIFACT)
    assert router.pair is not None and router.pair.small == MIXTRAL and router.pair.large == GPT4
    result = router.route_single("Natalia sold clips to 48 of her friends in April. How many clips did she sell?")
    assert result["model_name"] in (MIXTRAL, GPT4)
    assert 0.0 <= result["router_score"] <= 1.0
    assert result["parse_method"] in ("exact", "normalized", "fuzzy", "fallback")
    assert result["model_name"] == result["parsed_model"]
    reference = router.reference_scores()  # None until the artifact is rebuilt with reference scores
    assert reference is None or reference.shape == (101,)
