"""End to end: the real Serve app (CPU default models, shipped artifacts) over HTTP with httpx and openai."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from serve_helpers import ROOT, default_app_args, free_port, missing_prerequisites, start_serve, stop_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROUTERS = ["hybrid", "automix", "causal", "policy", "smallest", "largest", "random"]
QUERY = "What is the capital of France?"
SERVED = {"smollm2-135m-instruct", "gemma-3-270m"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    missing = missing_prerequisites()
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing: {missing}")
    url = start_serve(default_app_args(), free_port())
    try:
        yield url
    finally:
        stop_serve()


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=300) as c:
        yield c


def chat(client: httpx.Client, model: str, content: str = QUERY, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    return client.post("/v1/chat/completions", json=body)


def test_health_models_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert {f"router-{r}" for r in ROUTERS} | SERVED <= ids
    schema = client.get("/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/route" in schema["paths"]


@pytest.mark.parametrize("router", ROUTERS)
def test_every_pipeline_answers_with_routing_metadata(client: httpx.Client, router: str) -> None:
    response = chat(client, f"router-{router}")
    assert response.status_code == 200, response.text
    body = response.json()
    routing = body["routing"]
    assert routing["router"] == router
    assert body["model"] == routing["model"] in SERVED
    assert routing["model_key"] == ("large" if routing["use_large"] else "small") or routing["fallback"]
    assert routing["fallback"] is False
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] >= 1
    assert routing["cost"] >= 0
    assert response.headers["x-request-id"]


def test_hybrid_decision_matches_the_library(client: httpx.Client) -> None:
    from routers.engines import EmbedderConfig, build_embedder
    from routers.hybrid.router import HybridLLMRouter

    router = HybridLLMRouter.load(ROOT / "artifacts/hybrid_llm")
    embedder = build_embedder(EmbedderConfig(model=str(ROOT / "models/all-minilm-l6-v2")))
    queries = [QUERY, "Solve for x: 3x + 7 = 22. Show your reasoning step by step."]
    served = client.post("/v1/route", json={"model": "router-hybrid", "queries": queries}).json()["data"]
    for query, item in zip(queries, served, strict=True):
        local = router.route_embedding(query, embedder.embed([query])[0])
        assert item["score"] == pytest.approx(local.score, abs=1e-4)
        assert item["use_large"] == local.use_large
    answered = chat(client, "router-hybrid", queries[1]).json()["routing"]
    assert answered["score"] == pytest.approx(served[1]["score"], abs=1e-4)


def test_threshold_in_model_name_moves_the_decision(client: httpx.Client) -> None:
    always_small = client.post("/v1/route", json={"model": "router-hybrid:0.0", "query": QUERY}).json()["data"][0]
    assert always_small["use_large"] is False and always_small["threshold"] == 0.0
    score = always_small["score"]
    above = client.post("/v1/route", json={"model": f"router-hybrid:{min(1.0, score + 1e-3):.6f}", "query": QUERY})
    assert above.json()["data"][0]["use_large"] is True


def test_automix_decision_follows_its_verification_score(client: httpx.Client) -> None:
    from routers.automix.router import AutomixRouter

    router = AutomixRouter.load(ROOT / "artifacts/automix")
    routing = chat(client, "router-automix", "What is 12 + 30?").json()["routing"]
    assert 0.0 <= routing["verification_score"] <= 1.0
    assert routing["verification_samples"] == router.config.num_samples
    local = router.decide_from_score("What is 12 + 30?", routing["verification_score"])
    assert routing["use_large"] == local.use_large == routing["escalated"]


def test_generative_routers_match_the_library(client: httpx.Client) -> None:
    from routers.causal_lm.router import CausalLMRouter
    from routers.engines import build_generator
    from routers.policy.router import PolicyRouter

    for kind, cls, artifact in (("causal", CausalLMRouter, "causallm_router"), ("policy", PolicyRouter, "policy_router")):
        router = cls.load(ROOT / "artifacts" / artifact)
        router.bind_engines(generators={"router": build_generator(router.default_engine_config("router"))})
        local = router.route_single(QUERY)
        served = client.post("/v1/route", json={"model": f"router-{kind}", "query": QUERY}).json()["data"][0]
        assert served["decision_model"] == local["model_name"], (kind, served, local)
        if kind == "policy":
            assert served["policy"] == local["policy"]


def test_openai_client_plain_and_streaming(base_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    for model in ("router-hybrid", "router-automix", "router-causal", "router-policy"):
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUERY}], max_tokens=8)
        assert reply.model in SERVED
        assert reply.model_extra["routing"]["router"] == model.removeprefix("router-")
        chunks = list(client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUERY}], max_tokens=8, stream=True,
            stream_options={"include_usage": True}))
        head = chunks[0]
        assert head.model_extra["routing"]["router"] == model.removeprefix("router-")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes in (["stop"], ["length"])
    completion = client.completions.create(model="router-smallest", prompt="The capital of France is", max_tokens=6)
    assert completion.choices[0].text.strip()


def test_streamed_text_equals_plain_text_when_greedy(client: httpx.Client) -> None:
    plain = chat(client, "smollm2-135m-instruct", max_tokens=12).json()["choices"][0]["message"]["content"]
    pieces = []
    with client.stream("POST", "/v1/chat/completions", json={
        "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": QUERY}], "max_tokens": 12,
        "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                pieces += [c["delta"].get("content") or "" for c in chunk["choices"]]
    assert "".join(pieces) == plain


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "router-hybrid", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
        ({"model": "router-hybrid", "messages": []}, 400, "messages"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "  "}]}, 400, "user message"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400, "cap"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}], "n": 99}, 400, "cap"),
        ({"model": "router-hybrid:1.5", "messages": [{"role": "user", "content": "hi"}]}, 400, "within"),
        ({"model": "router-nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "unknown router"),
        ({"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}, 404, "unknown model"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}], "bogus": 1}, 400, "bogus"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "x" * 20000}]}, 400, "characters"),
    ],
)
def test_bad_requests_get_clear_openai_errors(client: httpx.Client, body: dict, status: int, needle: str) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"] and error["type"]


def test_oversized_body_is_rejected(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", content=b"{" + b" " * 2_000_000 + b"}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_request_id_is_echoed_and_chat_page_served(client: httpx.Client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    page = client.get("/chat")
    assert page.status_code == 200 and "llmrouter" in page.text and "/v1/chat/completions" in page.text


def test_route_only_batch_is_consistent_with_single(client: httpx.Client) -> None:
    queries = [QUERY, "Explain quantum entanglement in one sentence.", "2+2=?"]
    batch = client.post("/v1/route", json={"model": "router-hybrid", "queries": queries}).json()["data"]
    singles = [client.post("/v1/route", json={"model": "router-hybrid", "query": q}).json()["data"][0] for q in queries]
    assert np.allclose([b["score"] for b in batch], [s["score"] for s in singles], atol=1e-4)


@pytest.mark.browser
def test_chat_page_shows_which_model_answered_and_why(base_url: str) -> None:
    from browser import HeadlessPage, chromium_path

    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    page = HeadlessPage(free_port())
    try:
        page.navigate(f"{base_url}/chat?model=router-hybrid&max_tokens=8&q=What%20is%20the%20capital%20of%20France%3F")
        why = page.wait_for("document.querySelector('.msg.assistant .why')?.innerText")
        model = page.evaluate("document.querySelector('.msg.assistant .why').dataset.model")
        answer = page.evaluate("document.querySelector('.msg.assistant').firstChild.textContent")
        options = page.evaluate("[...document.querySelectorAll('#router option')].map(o => o.value)")
    finally:
        page.close()
    assert model in SERVED and f"answered by {model}" in why
    assert "router hybrid" in why and "score" in why and "threshold" in why
    assert answer.strip()
    assert "router-automix" in options and "router-policy" in options
