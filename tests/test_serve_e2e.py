"""End to end: the real Serve app (CPU default models, shipped artifacts) over HTTP with httpx and openai."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from serve_helpers import (
    ROOT,
    default_app_args,
    deploy_config,
    free_port,
    missing_prerequisites,
    start_serve,
    stop_serve,
)

from tests.job_helpers import save_tiny_bert_router

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROUTERS = ["hybrid", "mf", "blend", "domain_prior", "automix", "causal", "policy", "bert", "smallest", "largest",
           "random"]
QUERY = "What is the capital of France?"
SERVED = {"smollm2-135m-instruct", "gemma-3-270m"}


@pytest.fixture(scope="module")
def app_args(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """serve_config.yaml's app, plus the BERT router (no artifact ships: a tiny one is fine-tuned here)."""
    missing = missing_prerequisites()
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing: {missing}")
    args = default_app_args()
    work = tmp_path_factory.mktemp("bert")
    args["routers"]["bert"] = {"artifact": str(save_tiny_bert_router(work / "bert", work / "data")),
                               "deployment": {"max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 0.25}}}
    return args


@pytest.fixture(scope="module")
def base_url(app_args: dict[str, Any]) -> Iterator[str]:
    # Deployed from a Serve config, like `serve run serve_config.yaml`, so a test can hot-swap user_config.
    url = start_serve(app_args, free_port(), declarative=True)
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
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["replica"]
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert {f"router-{r}" for r in ROUTERS} | SERVED <= ids
    schema = client.get("/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/route" in schema["paths"]


def test_model_router_answers_with_the_default_router(client: httpx.Client) -> None:
    default = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]["default_router"]
    assert "router" in {m["id"] for m in client.get("/v1/models").json()["data"]}
    response = chat(client, "router")
    assert response.status_code == 200, response.text
    assert response.json()["routing"]["router"] == default


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


def library_decisions(router_cls: Any, artifact: str, queries: list[str], app_args: dict[str, Any]) -> list[Any]:
    """What the library decides for ``queries`` with the artifact the app serves (defence included), on the
    embedder the app serves (serve_config.yaml's: ONNX Runtime, int8 weights): the served decision must be
    the same."""
    import asyncio

    from routers.engines import EmbedderConfig, Engines, build_embedder

    router = router_cls.load(ROOT / artifact)
    engine = app_args["embedder"]["engine"]
    embedder = build_embedder(EmbedderConfig(**{**engine, "model": str(ROOT / engine["model"])}))
    return asyncio.run(router.aroute_many(queries, Engines(embedder=embedder)))


def test_hybrid_decision_matches_the_library(client: httpx.Client, app_args: dict[str, Any]) -> None:
    from routers.hybrid.router import HybridLLMRouter

    queries = [QUERY, "Solve for x: 3x + 7 = 22. Show your reasoning step by step."]
    served = client.post("/v1/route", json={"model": "router-hybrid", "queries": queries}).json()["data"]
    expected = library_decisions(HybridLLMRouter, "artifacts/hybrid_llm_defended", queries, app_args)
    for item, local in zip(served, expected, strict=True):
        assert item["score"] == pytest.approx(local.score, abs=1e-4)
        assert item["use_large"] == local.use_large
    answered = chat(client, "router-hybrid", queries[1]).json()["routing"]
    assert answered["score"] == pytest.approx(served[1]["score"], abs=1e-4)


def test_mf_decision_matches_the_library(client: httpx.Client, app_args: dict[str, Any]) -> None:
    """router-mf is served like Hybrid: the ingress embeds (ONNX), the library's MF router decides."""
    from routers.mf.router import MatrixFactorizationRouter

    queries = [QUERY, "Solve for x: 3x + 7 = 22. Show your reasoning step by step."]
    response = client.post("/v1/route", json={"model": "router-mf", "queries": queries})
    assert response.status_code == 200, response.text
    assert response.json()["router"] == "mf"
    expected = library_decisions(MatrixFactorizationRouter, "artifacts/mf_defended", queries, app_args)
    for item, local in zip(response.json()["data"], expected, strict=True):
        assert item["router"] == "mf" and item["model"] in SERVED and item["fallback"] is False
        assert item["score"] == pytest.approx(local.score, abs=1e-4)
        assert item["threshold"] == pytest.approx(local.threshold) and item["use_large"] == local.use_large
    answered = chat(client, "router-mf:0.0", queries[1])
    assert answered.status_code == 200, answered.text
    routing = answered.json()["routing"]
    assert routing["router"] == "mf" and routing["model"] == "smollm2-135m-instruct" and routing["threshold"] == 0.0


def test_domain_prior_decision_matches_the_library_and_names_the_domain(client: httpx.Client,
                                                                       app_args: dict[str, Any]) -> None:
    """router-domain_prior over HTTP with the openai client: the library's decision, and the training domain
    it takes the query to be from (a GSM8K word problem is GSM8K's, which the large model serves)."""
    from openai import OpenAI

    from routers.domain_prior.router import DomainPriorRouter

    query = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?")
    local = library_decisions(DomainPriorRouter, "artifacts/domain_prior_defended", [query], app_args)[0]
    served = client.post("/v1/route", json={"model": "router-domain_prior", "queries": [query]}).json()["data"][0]
    assert served["score"] == pytest.approx(local.score, abs=1e-4) and served["use_large"] == local.use_large
    assert served["domain"] == local.extra["domain"] == "gsm8k"
    openai_client = OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", max_retries=0)
    completion = openai_client.chat.completions.create(model="router-domain_prior", max_tokens=8,
                                                       messages=[{"role": "user", "content": query}])
    routing = completion.model_extra["routing"]
    assert routing["router"] == "domain_prior" and routing["domain"] == "gsm8k"
    assert routing["use_large"] == local.use_large and completion.model == routing["model"]


def test_bert_decision_matches_the_library(client: httpx.Client, app_args: dict[str, Any]) -> None:
    """router-bert: the BertRouter deployment's fine-tuned encoder scores, the library decides."""
    from routers.bert.router import BertRouter

    router = BertRouter.load(app_args["routers"]["bert"]["artifact"])
    queries = [QUERY, "Solve for x: 3x + 7 = 22. Show your reasoning step by step."]
    response = client.post("/v1/route", json={"model": "router-bert", "queries": queries})
    assert response.status_code == 200, response.text
    for query, item in zip(queries, response.json()["data"], strict=True):
        local = router.route_single(query)
        assert item["router"] == "bert" and item["fallback"] is False
        assert item["score"] == pytest.approx(local["router_score"], abs=1e-4)
        assert item["use_large"] == local["use_large"]


def test_threshold_in_model_name_moves_the_decision(client: httpx.Client) -> None:
    always_small = client.post("/v1/route", json={"model": "router-hybrid:0.0", "query": QUERY}).json()["data"][0]
    assert always_small["use_large"] is False and always_small["threshold"] == 0.0
    score = always_small["score"]
    above = client.post("/v1/route", json={"model": f"router-hybrid:{min(1.0, score + 1e-3):.6f}", "query": QUERY})
    assert above.json()["data"][0]["use_large"] is True


def test_cost_and_budget_rules_on_two_model_routers(client: httpx.Client) -> None:
    """router-X:budget= / :cost= (the N-model rules on the pair, routers/nmodel/pair.py) at the app's prices,
    for a router scored in the ingress and one in its own deployment, over HTTP and with the openai client."""
    from openai import OpenAI

    forced = client.post("/v1/route", json={"model": "router-hybrid:budget=1e-12", "query": QUERY}).json()["data"][0]
    assert forced["model_key"] == "small" and forced["threshold"] is None and forced["rule"] == "budget=1e-12"
    assert [c["model_key"] for c in forced["candidates"]] == ["small", "large"]
    assert forced["candidates"][1]["cost"] > forced["candidates"][0]["cost"] > 0
    assert forced["candidates"][0]["quality"] == forced["score"] and forced["candidates"][1]["quality"] == 1.0
    quality_only = client.post("/v1/route", json={"model": "router-bert:cost=0", "query": QUERY}).json()["data"][0]
    assert quality_only["model_key"] == "large" and quality_only["cost_weight"] == 0.0
    openai_client = OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", max_retries=0)
    completion = openai_client.chat.completions.create(model="router-blend:cost=1e9", max_tokens=4,
                                                       messages=[{"role": "user", "content": QUERY}])
    routing = completion.model_extra["routing"]
    assert routing["rule"] == "cost=1e+09" and routing["use_large"] is False
    assert completion.model == routing["model"] == "smollm2-135m-instruct"


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

    generative = (("causal", CausalLMRouter, "causallm_router"), ("policy", PolicyRouter, "policy_router"))
    for kind, cls, artifact in generative:
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
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400,
         "temperature"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}], "bogus": 1}, 400, "bogus"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "x" * 20000}]}, 400, "characters"),
        ({"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}], "seed": 2**64}, 400, "seed"),
        ({"model": "router-policy:0.4", "messages": [{"role": "user", "content": "hi"}]}, 400, "takes no threshold"),
        ({"model": "router-hybrid:share=1.5", "messages": [{"role": "user", "content": "hi"}]}, 400, "within"),
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


def test_oversized_chunked_body_is_rejected(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting the bytes received catches it
        yield b'{"model": "router-hybrid", "messages": [{"role": "user", "content": "'
        for _ in range(32):
            yield b"x" * 65536
        yield b'"}]}'

    response = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_route_batch_caps_each_query_not_their_total(client: httpx.Client) -> None:
    cap = default_app_args()["limits"].get("max_prompt_chars", 16000)
    under = ["word " * ((cap - 10) // 5)] * 3  # about 3x the cap in total, each under it
    batch = client.post("/v1/route", json={"model": "router-hybrid", "queries": under})
    assert batch.status_code == 200, batch.text
    assert len(batch.json()["data"]) == 3
    over = client.post("/v1/route", json={"model": "router-hybrid", "queries": ["hi", "x" * (cap + 1)]})
    assert over.status_code == 400 and over.json()["error"]["param"] == "queries.1"


# (served name, library router, the artifact serve_config.yaml serves)
SHARE_ROUTERS = [("hybrid", "hybrid_llm", "hybrid_llm_defended"), ("mf", "mf", "mf_defended"),
                 ("causal", "causallm_router", "causallm_router")]


@pytest.mark.parametrize(("router", "name", "artifact"), SHARE_ROUTERS)
def test_large_share_in_the_model_field(client: httpx.Client, router: str, name: str, artifact: str) -> None:
    """router-X:share=0.3 routes with the threshold that sends 30% of the artifact's training queries large."""
    from routers.evaluation.calibrate import threshold_for_large_share
    from routers.registry import router_class

    reference = router_class(name).load(ROOT / "artifacts" / artifact).reference_scores()
    assert reference is not None, f"the shipped {artifact} artifact stores its training-score quantiles"
    response = client.post("/v1/route", json={"model": f"router-{router}:share=0.3", "query": QUERY})
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    assert item["threshold"] == pytest.approx(threshold_for_large_share(reference, 0.3))
    assert item["large_share"] == 0.3 and item["use_large"] == (item["score"] < item["threshold"])


@pytest.mark.parametrize(("router", "name", "artifact"), SHARE_ROUTERS[:2])
def test_quality_target_in_the_model_field(client: httpx.Client, router: str, name: str, artifact: str) -> None:
    """router-X:quality=0.95 routes with the threshold chosen on the artifact's calibration queries."""
    from routers.registry import router_class

    expected = router_class(name).load(ROOT / "artifacts" / artifact).threshold_for_quality(0.95)
    response = client.post("/v1/route", json={"model": f"router-{router}:quality=0.95", "query": QUERY})
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    assert item["threshold"] == pytest.approx(expected.threshold)
    assert item["quality_target"] == 0.95 and item["quality_lower_bound"] == pytest.approx(expected.ratio_lower_bound)
    assert item["use_large"] == (item["score"] < item["threshold"])


def test_hot_swap_of_the_ingress_user_config_without_restart(client: httpx.Client, base_url: str,
                                                             app_args: dict[str, Any]) -> None:
    """Redeploy with a changed Ingress user_config (as `serve deploy` does): the new threshold applies on the
    same replica with no failed request, and dropping the override reverts it."""
    def decision() -> dict[str, Any]:
        return client.post("/v1/route", json={"model": "router-hybrid", "query": QUERY}).json()["data"][0]

    def wait_for_threshold(expected: float) -> dict[str, Any]:
        deadline = time.time() + 120
        while (current := decision())["threshold"] != pytest.approx(expected) and time.time() < deadline:
            time.sleep(0.5)
        return current

    original = decision()
    replica = client.get("/healthz").json()["replica"]
    assert replica and original["threshold"] != pytest.approx(0.123)
    statuses: list[int] = []
    stop = threading.Event()

    def keep_routing() -> None:  # traffic during both redeploys: none of it may fail
        with httpx.Client(base_url=base_url, timeout=120) as own:
            while not stop.is_set():
                statuses.append(own.post("/v1/route", json={"model": "router-hybrid", "query": QUERY}).status_code)
                time.sleep(0.05)

    traffic = threading.Thread(target=keep_routing)
    traffic.start()
    args = app_args
    try:
        artifact = {"artifact": app_args["routers"]["hybrid"]["artifact"]}  # relative: against LLMROUTER_HOME
        deploy_config(args, {"Ingress": {"routers": {"hybrid": {**artifact, "threshold": 0.123}}}})
        assert wait_for_threshold(0.123)["threshold"] == pytest.approx(0.123)
        deploy_config(args, {"Ingress": {"routers": {"hybrid": artifact}}})  # threshold override removed
        assert wait_for_threshold(original["threshold"])["threshold"] == pytest.approx(original["threshold"])
    finally:
        stop.set()
        traffic.join()
    assert client.get("/healthz").json()["replica"] == replica  # reconfigured in place, not restarted
    assert statuses and set(statuses) == {200}, statuses


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
