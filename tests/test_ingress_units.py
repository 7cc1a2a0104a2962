"""Fast tests of the ingress pieces, without Ray Serve: the ASGI guard (auth before the body, body cap,
catch-all 500, logs), the model field, the request/response models, router-step failures, answer-model
retries and streaming, hot-swap config merging and the metrics bookkeeping."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from ray import exceptions as ray_errors

from routers.automix.router import AutomixRouter
from routers.engines import SamplingParams
from routers.evaluation.calibrate import threshold_for_large_share
from routers.hybrid.router import HybridLLMRouter
from serve_app.adapters import RouterUnavailable, StepTimeout, generation_result
from serve_app.answers import Answers, client_error_message, is_transient
from serve_app.api import MAX_SEED, ApiError, ChatCompletionRequest, RouterChoice, parse_model_field
from serve_app.config import AppConfig
from serve_app.errors import install_error_handlers
from serve_app.guard import GuardSettings, IngressGuard
from serve_app.hot_swap import check_ingress_user_config, merged_config
from serve_app.ingress import RouterIngress
from serve_app.openai_shapes import AnswerRequest
from serve_app.pipelines import Pipelines
from serve_app.routing import Routing
from tests.fake_handles import ANSWER, Handle, Stream, fake_metrics, remote_error, value
from tests.serve_helpers import as_clients

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-unit-0123456789abcdef"
HYBRID_ARTIFACT = ROOT / "artifacts/hybrid_llm"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- the ASGI guard ------------------------------------------------------------------------------------------
class Echo(BaseModel):
    text: str


@pytest.fixture
def guarded() -> tuple[FastAPI, GuardSettings, list[str]]:
    """A small app behind the real guard and error handlers; the list records which bodies were parsed."""
    parsed: list[str] = []
    app = FastAPI()
    install_error_handlers(app)
    settings = GuardSettings(api_keys=[KEY.encode()], max_body_bytes=2048, metrics=fake_metrics())
    app.add_middleware(IngressGuard, settings=settings)

    @app.post("/v1/echo")
    async def echo(body: Echo) -> dict[str, str]:
        parsed.append(body.text)
        return {"text": body.text}

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app, settings, parsed


def call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return run(go())


@pytest.fixture
def serve_logs() -> Iterator[list[str]]:
    """Everything logged on the ``ray.serve`` logger (the ingress's structured logs) during the test."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(message)s %(exc_text)s"))
    logger = logging.getLogger("ray.serve")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_unauthenticated_callers_get_401_before_the_body_is_read(guarded: Any) -> None:
    app, settings, parsed = guarded
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        invalid = call(app, "POST", "/v1/echo", json={"nope": 1}, headers=headers)
        assert invalid.status_code == 401, invalid.text
        assert invalid.json()["error"]["type"] == "authentication_error"
        assert "nope" not in invalid.text and "text" not in invalid.text  # no schema details
    valid_body = call(app, "POST", "/v1/echo", json={"text": "hi"}, headers={"Authorization": "Bearer nope"})
    assert valid_body.status_code == 401 and parsed == []
    auth = {"Authorization": f"Bearer {KEY}"}
    assert call(app, "POST", "/v1/echo", json={"nope": 1}, headers=auth).status_code == 400
    assert call(app, "POST", "/v1/echo", json={"text": "hi"}, headers=auth).json() == {"text": "hi"}
    assert call(app, "GET", "/healthz").status_code == 200  # health stays open
    assert settings.metrics.requests.total(status="401") == 4  # type: ignore[union-attr]


def test_chunked_body_over_the_limit_is_413(guarded: Any) -> None:
    app, _, parsed = guarded

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    response = call(app, "POST", "/v1/echo", content=chunks(), headers=auth)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert parsed == []

    async def small() -> AsyncIterator[bytes]:
        yield b'{"text": '
        yield b'"fits"}'

    assert call(app, "POST", "/v1/echo", content=small(), headers=auth).json() == {"text": "fits"}
    declared = call(app, "POST", "/v1/echo", content=b"{" + b" " * 4000 + b"}", headers=auth)
    assert declared.status_code == 413


def test_unexpected_exceptions_are_clean_500s_logged_with_the_request_id(guarded: Any, serve_logs: list[str]) -> None:
    app, settings, _ = guarded
    response = call(app, "GET", "/v1/boom", headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "req-42"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "req-42" in error["message"]
    assert "secret" not in response.text and "Traceback" not in response.text and "RuntimeError" not in response.text
    logged = "\n".join(serve_logs)
    assert "req-42" in logged and "secret internal detail" in logged  # the details go to the log only
    assert settings.metrics.requests.total(status="500") == 1  # type: ignore[union-attr]


def test_api_keys_never_reach_the_logs(guarded: Any, serve_logs: list[str]) -> None:
    app, _, _ = guarded
    for key in (KEY, KEY + "x", "wrong"):
        call(app, "POST", "/v1/echo", json={"text": "hi"}, headers={"Authorization": f"Bearer {key}"})
        call(app, "GET", "/v1/boom", headers={"Authorization": f"Bearer {key}"})
    logged = "\n".join(serve_logs)
    assert "http_request" in logged  # the requests were logged ...
    assert KEY not in logged  # ... without the key


# --- the model field and request models ------------------------------------------------------------------
ROUTERS = ["hybrid", "automix", "causal", "policy", "smallest", "largest", "random"]


def parse(model: str) -> RouterChoice:
    return parse_model_field(model, ROUTERS, {"small-model": "small"})


def test_routellm_model_names_map_onto_our_routers_and_thresholds() -> None:
    """router-mf-0.3 (RouteLLM: strong iff P(strong wins) >= 0.3) = ours: large iff P(small wins) <= 0.7."""
    routers = [*ROUTERS, "mf", "bert", "sw_ranking"]
    choice = parse_model_field("router-mf-0.3", routers, {})
    assert choice.kind == "mf" and choice.routellm_threshold == 0.3
    assert choice.threshold == np.nextafter(0.7, 1.0)
    for small_win_rate, strong in ((0.7, True), (0.69, True), (0.71, False)):  # RouteLLM's rule, on 1 - score
        assert (small_win_rate < choice.threshold) == strong == (1 - small_win_rate >= 0.3 - 1e-12)
    assert parse_model_field("router-causal_llm-0.5", routers, {}).kind == "causal"
    assert parse_model_field("router-random-0.2", routers, {}) == RouterChoice(
        kind="random", threshold=0.8, routellm_threshold=0.2)  # uniform win rate: 80% of queries go strong
    assert parse_model_field("router-mf-0", routers, {}).threshold > 1.0  # theta 0: everything strong
    for bad, status, needle in (("router-hybrid-0.3", 404, "RouteLLM-style names"),
                                ("router-mf-1.5", 400, "within [0, 1]"), ("router-mf-x", 400, "not a number")):
        with pytest.raises(ApiError) as caught:
            parse_model_field(bad, routers, {})
        assert caught.value.status == status and needle in caught.value.message and caught.value.param == "model"
    with pytest.raises(ApiError, match="'bert' .* is not enabled"):
        parse_model_field("router-bert-0.5", ROUTERS, {})


def test_model_field_threshold_share_and_routers_without_a_threshold() -> None:
    assert parse("router-hybrid:0.4") == RouterChoice(kind="hybrid", threshold=0.4)
    assert parse("router-hybrid:share=0.3") == RouterChoice(kind="hybrid", large_share=0.3)
    assert parse("router-random:share=1") == RouterChoice(kind="random", large_share=1.0)
    assert parse("router-hybrid:quality=0.95") == RouterChoice(kind="hybrid", quality_target=0.95)
    assert parse("router-automix:quality=1") == RouterChoice(kind="automix", quality_target=1.0)
    for bad, needle in (("router-hybrid:share=1.5", "within [0, 1]"), ("router-hybrid:share=-0.1", "within"),
                        ("router-hybrid:share=nan", "within"), ("router-hybrid:share=x", "not a number"),
                        ("router-policy:0.4", "takes no threshold"),
                        ("router-policy:share=0.2", "takes no large-model share"),
                        ("router-smallest:0.5", "takes no threshold"),
                        ("router-hybrid:quality=0", "above 0"), ("router-hybrid:quality=1.2", "within [0, 1]"),
                        ("router-hybrid:quality=x", "not a number"),
                        ("router-policy:quality=0.9", "takes no quality target"),
                        ("router-random:quality=0.9", "takes no quality target")):
        with pytest.raises(ApiError) as caught:
            parse(bad)
        assert caught.value.status == 400 and needle in caught.value.message, (bad, caught.value.message)


def test_model_field_takes_cost_and_budget_for_two_model_routers() -> None:
    assert parse("router-hybrid:cost=500") == RouterChoice(kind="hybrid", rule="cost=500")
    assert parse("router-random:budget=0.002") == RouterChoice(kind="random", rule="budget=0.002")
    for bad, needle in (("router-hybrid:budget=-1", "budget"), ("router-hybrid:cost=x", "must be a number"),
                        ("router-smallest:cost=1", "takes no threshold")):
        with pytest.raises(ApiError) as caught:
            parse(bad)
        assert caught.value.status == 400 and needle in caught.value.message, (bad, caught.value.message)


def test_cost_and_budget_on_a_two_model_router_price_the_apps_models() -> None:
    priced = config(models={"small": {"engine": {"model": "org/small"}, "input_price": 1.0, "output_price": 2.0},
                            "large": {"engine": {"model": "org/large"}, "input_price": 10.0, "output_price": 30.0}},
                    limits={"default_max_tokens": 100})
    pipelines = Pipelines(priced, {}, None, None, None)
    queries = ["What is 2+2?", "Prove that there are infinitely many primes. " * 10]
    costs = pipelines.pair_costs(queries, 100)
    assert costs[0, 1] > costs[0, 0] and costs[1, 1] > costs[0, 1]  # longer queries cost more
    budget = float(costs[:, 1].mean())  # the large call fits for the short query only
    items = run(pipelines.route_only("random", queries, None, f"budget={budget!r}"))
    assert [item["model_key"] for item in items[1:]] == ["small"]
    assert items[1]["threshold"] is None  # -inf: the budget forces the small model; JSON has no infinity
    assert items[0]["threshold"] == 1.0  # the large model fits: small only if predicted as good
    for item, row in zip(items, costs, strict=True):
        assert item["rule"] == f"budget={budget:g}"
        assert [c["model_key"] for c in item["candidates"]] == ["small", "large"]
        assert [c["cost"] for c in item["candidates"]] == pytest.approx(list(row))
        assert item["candidates"][0]["quality"] == item["score"] and item["candidates"][1]["quality"] == 1.0
    # cost=0: quality alone, so the reference (large) model; a huge weight: the cheaper (small) one
    assert {i["model_key"] for i in run(pipelines.route_only("random", queries * 5, None, "cost=0"))} == {"large"}
    assert {i["model_key"] for i in run(pipelines.route_only("random", queries * 5, None, "cost=1e9"))} == {"small"}
    routing = run(pipelines.route("random", queries[0], [], SamplingParams(max_tokens=10), None, "cost=1e9"))
    assert routing.model_key == "small" and routing.info["cost_weight"] == 1e9


def test_a_decision_naming_one_of_the_apps_models_is_answered_by_it() -> None:
    from routers.base import RouteDecision

    three = config(models={key: {"engine": {"model": f"org/{key}"}} for key in ("small", "medium", "large")})
    pipelines = Pipelines(three, {}, None, None, None)
    medium = RouteDecision(query="q", model_name="medium", app_model="medium", reason="policy map -> medium",
                           extra={"policy": "Ambiguous_Query"})
    routing = pipelines.routing_for("policy", medium)
    assert routing.model_key == "medium" and routing.use_large is False and routing.info["policy"] == "Ambiguous_Query"
    large = pipelines.routing_for("policy", medium.model_copy(update={"app_model": "large"}))
    assert large.model_key == "large" and large.use_large is True
    with pytest.raises(RouterUnavailable, match="'huge', which this app does not serve"):
        pipelines.routing_for("policy", medium.model_copy(update={"app_model": "huge"}))


def test_seed_is_bounded_to_int64() -> None:
    base = {"model": "router-hybrid", "messages": [{"role": "user", "content": "hi"}]}
    assert ChatCompletionRequest.model_validate({**base, "seed": MAX_SEED}).seed == 2**63 - 1
    for seed in (2**63, 2**64, -1):
        with pytest.raises(ValidationError, match="seed"):
            ChatCompletionRequest.model_validate({**base, "seed": seed})


# --- router steps: any failure is RouterUnavailable (the ingress then falls back) --------------------------
def config(**extra: Any) -> AppConfig:
    data = {"models": {"small": {"engine": {"model": "org/small"}}, "large": {"engine": {"model": "org/large"}}},
            "routers": {"hybrid": None, "automix": None}, "default_router": "smallest",
            "timeouts": {"router_s": 1.0, "answer_s": 0.3, "stream_chunk_s": 0.3}, **extra}
    return AppConfig.model_validate(data)


@pytest.mark.skipif(not (HYBRID_ARTIFACT / "router.json").exists(), reason="hybrid artifact not shipped")
def test_hybrid_dimension_mismatch_is_router_unavailable() -> None:
    from routers.hybrid.router import HybridLLMRouter

    pipelines = Pipelines(config(), {}, None, None, None)
    pipelines.embedding_routers["hybrid"] = HybridLLMRouter.load(HYBRID_ARTIFACT)
    pipelines.embedder = Handle(embed_one=lambda q: value(np.zeros(7, dtype=np.float32)),
                                embed=lambda qs: value(np.zeros((len(qs), 7), dtype=np.float32)))
    with pytest.raises(RouterUnavailable, match="hybrid MLP"):
        run(pipelines.route("hybrid", "hi", [], SamplingParams()))
    with pytest.raises(RouterUnavailable, match="hybrid MLP"):
        run(pipelines.route_only("hybrid", ["a", "b"], None))


def test_batch_embed_failure_is_router_unavailable() -> None:
    pipelines = Pipelines(config(), {}, None, None, None)
    pipelines.embedding_routers["hybrid"] = HybridLLMRouter.load(HYBRID_ARTIFACT)
    pipelines.embedder = Handle(embed=lambda qs: value(ray_errors.ActorDiedError()))
    with pytest.raises(RouterUnavailable, match="embedder failed: ActorDiedError"):
        run(pipelines.route_only("hybrid", ["a", "b"], None))


def test_generative_router_junk_decision_is_router_unavailable() -> None:
    pipelines = Pipelines(config(), {}, None, None, None)
    pipelines.causal = Handle(route=lambda q, t: value({"not": "a decision"}))
    with pytest.raises(RouterUnavailable, match="causal router failed: ValidationError"):
        run(pipelines.route("causal", "hi", [], SamplingParams()))


def test_automix_decision_failure_is_router_unavailable() -> None:
    class BrokenAutomix(AutomixRouter):
        def verification_score(self, query: str, answer: str, samples: Any) -> float:
            raise ZeroDivisionError("no votes")

    completion = {"prompt_tokens": 3, "completions": [{"text": "4", "finish_reason": "stop", "completion_tokens": 1}]}
    small = Handle(generate=lambda m, p: value(completion))
    pipelines = Pipelines(config(), as_clients({"small": small, "large": small}), None, None, None)
    pipelines.automix_router = BrokenAutomix.load(ROOT / "artifacts/automix")
    with pytest.raises(RouterUnavailable, match="AutoMix decision failed: ZeroDivisionError"):
        run(pipelines.route("automix", "2+2?", [{"role": "user", "content": "2+2?"}], SamplingParams()))


def test_large_share_uses_the_routers_reference_scores() -> None:
    class WithReference:
        def reference_scores(self) -> list[float]:
            return list(np.linspace(0.0, 1.0, 101))

    pipelines = Pipelines(config(), {}, None, None, None)
    pipelines.embedding_routers["hybrid"] = WithReference()
    assert run(pipelines.threshold_for_share("hybrid", 0.3)) == pytest.approx(
        threshold_for_large_share(np.linspace(0, 1, 101), 0.3))
    assert run(pipelines.threshold_for_share("random", 0.25)) == 0.25
    without = AutomixRouter.load(ROOT / "artifacts/automix")
    without.reference_quantiles = None  # an artifact without a score distribution
    pipelines.automix_router = without
    with pytest.raises(ApiError) as caught:
        run(pipelines.threshold_for_share("automix", 0.3))
    assert caught.value.status == 400 and "reference score distribution" in caught.value.message


def test_causal_large_share_asks_the_router_deployment_for_its_quantiles() -> None:
    """The causal router lives in its own (hot-swappable) deployment: its quantiles come from there."""
    quantiles = list(np.linspace(0.0, 1.0, 101) ** 2)
    causal = Handle(reference_quantiles=lambda: value(quantiles))
    pipelines = Pipelines(config(routers={"hybrid": None, "automix": None,
                                          "causal": {"artifact": "artifacts/causallm_router"}}),
                          {}, None, causal, None)
    from routers.evaluation.quantiles import ScoreQuantiles

    expected = threshold_for_large_share(ScoreQuantiles.from_values(np.asarray(quantiles)), 0.3)
    assert run(pipelines.threshold_for_share("causal", 0.3)) == pytest.approx(expected)
    assert 0.0 < expected < 1.0
    run(pipelines.threshold_for_share("causal", 0.5))
    assert causal.reference_quantiles.calls == 2  # not cached: a hot swap may change the artifact
    no_quantiles = Pipelines(pipelines.config, {}, None, Handle(reference_quantiles=lambda: value(None)), None)
    with pytest.raises(ApiError) as caught:
        run(no_quantiles.threshold_for_share("causal", 0.3))
    assert caught.value.status == 400 and "llmrouter reference-scores" in caught.value.message


# --- answer models: retry only what is transient ----------------------------------------------------------
def model(generate: Any = ANSWER, stream: Stream | None = None) -> Handle:
    return Handle(generate=lambda m, p: value(generate), stream=lambda m, p: stream,
                  usage=lambda m, t: value({"prompt_tokens": 2, "completion_tokens": len(t)}))


def ask(**params: Any) -> AnswerRequest:
    return AnswerRequest.chat([{"role": "user", "content": "hi"}], SamplingParams(**params))


def routing(model_key: str = "small") -> Routing:
    return Routing(router="hybrid", model_key=model_key, use_large=model_key == "large", reason="test")


def test_error_classification() -> None:
    assert is_transient(ray_errors.ActorDiedError()) and is_transient(StepTimeout("slow"))
    assert is_transient(remote_error(ray_errors.ActorUnavailableError("gone", None)))
    assert not is_transient(remote_error(ValueError("Seed must be between 0 and 2**64 - 1")))
    assert client_error_message(remote_error(ValueError("bad seed"))) == "bad seed"
    assert client_error_message(remote_error(RuntimeError("boom"))) is None


def test_transient_failure_is_retried_on_the_other_model() -> None:
    small, large = model(ray_errors.ActorDiedError()), model()
    answers = Answers(config(), as_clients({"small": small, "large": large}))
    chosen = routing("small")
    assert run(answers.generate(chosen, ask())).generation_result() == generation_result(ANSWER)
    assert chosen.model_key == "large" and chosen.info["retried_on"] == "large"


def test_bad_parameters_are_400_and_not_retried() -> None:
    small, large = model(remote_error(ValueError("Seed must be between 0 and 2**64 - 1"))), model()
    with pytest.raises(ApiError) as caught:
        run(Answers(config(), as_clients({"small": small, "large": large})).generate(routing(), ask()))
    assert caught.value.status == 400 and "Seed must be" in caught.value.message
    assert "Traceback" not in caught.value.message
    assert large.generate.calls == 0  # type: ignore[attr-defined]


def test_model_bug_is_500_and_not_retried() -> None:
    small, large = model(remote_error(KeyError("oops"))), model()
    with pytest.raises(ApiError) as caught:
        run(Answers(config(), as_clients({"small": small, "large": large})).generate(routing(), ask()))
    assert caught.value.status == 500 and caught.value.kind == "server_error"
    assert large.generate.calls == 0  # type: ignore[attr-defined]


def test_both_models_down_is_503_with_retry_after() -> None:
    handles = {"small": model(ray_errors.ActorDiedError()), "large": model(StepTimeout("slow"))}
    with pytest.raises(ApiError) as caught:
        run(Answers(config(), as_clients(handles)).generate(routing(), ask()))
    assert caught.value.status == 503 and caught.value.headers["Retry-After"]


def test_stream_waits_for_the_first_token_and_retries_a_dead_model() -> None:
    dead = Stream([ray_errors.ActorUnavailableError("replica gone", None)])
    alive = Stream(["Hel", "lo"])
    answers = Answers(config(), as_clients({"small": model(stream=dead), "large": model(stream=alive)}))
    chosen = routing("small")
    opened = run(answers.open_stream(chosen, ask()))
    assert opened.model_key == chosen.model_key == "large" and dead.cancelled
    assert opened.first is not None and opened.first["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert chosen.info["fallbacks"] == [{"model": "small", "error": "unavailable"}]

    async def collect() -> list[dict[str, Any]]:
        return [c async for c in answers.chunks(opened)]

    chunks = run(collect())
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["Hel", "lo", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_first_token_timeout_then_503() -> None:
    slow = {k: model(stream=Stream(["late"], delays=[5.0])) for k in ("small", "large")}
    with pytest.raises(ApiError) as caught:
        run(Answers(config(), as_clients(slow)).open_stream(routing(), ask()))
    assert caught.value.status == 503 and "Retry-After" in caught.value.headers


def test_stream_chunk_timeout_sends_an_error_event_then_done() -> None:
    stalls = Stream(["one", "two"], delays=[0.0, 5.0])
    answers = Answers(config(), as_clients({"small": model(stream=stalls), "large": model()}))
    ingress = plain_ingress()
    ingress.answers = answers
    chosen = routing("small")
    opened = run(answers.open_stream(chosen, ask()))

    async def collect() -> list[str]:
        return [e async for e in ingress.stream_chunks(chosen, opened, ask(max_tokens=4), 0.0, False, "r1")]

    events = run(collect())
    assert events[-1] == "data: [DONE]\n\n"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and "StepTimeout" in error["message"]
    head = json.loads(events[0].removeprefix("data: "))
    assert head["choices"][0]["delta"]["content"] == "one" and head["routing"]["model_key"] == "small"
    assert stalls.cancelled
    assert ingress.metrics.requests.total(status="stream_error") == 1


# --- the ingress itself, outside Serve ------------------------------------------------------------------------
def plain_ingress(**extra: Any) -> Any:
    """The ingress class without Serve's wrapper (its methods are the real ones), with fake metrics."""
    cls = RouterIngress.func_or_class.__mro__[1]
    assert cls.__name__ == "RouterIngress"
    ingress = cls(config(**extra).model_dump(), {"small": model(), "large": model()})
    ingress.metrics = fake_metrics()
    return ingress


def test_route_only_caps_each_query_not_their_sum() -> None:
    ingress = plain_ingress(limits={"max_prompt_chars": 100})
    ingress.check_queries(["x" * 90] * 5, batched=True)  # 450 characters in all: fine
    with pytest.raises(ApiError) as caught:
        ingress.check_queries(["x" * 10, "x" * 101], batched=True)
    assert caught.value.status == 400 and caught.value.param == "queries.1"


@pytest.mark.skipif(not (HYBRID_ARTIFACT / "router.json").exists(), reason="hybrid artifact not shipped")
def test_hot_swap_merges_onto_the_start_config_and_rejects_what_it_cannot_apply() -> None:
    base = config(routers={"hybrid": {"artifact": str(HYBRID_ARTIFACT)}, "automix": None,
                           "causal": {"artifact": str(HYBRID_ARTIFACT)}},
                  embedder={"engine": {"model": "org/all-minilm-l6-v2"}}, default_router="hybrid")
    swapped = merged_config(base, {"routers": {"hybrid": {"threshold": 0.9}}})
    assert swapped.routers.hybrid.threshold == 0.9
    assert merged_config(base, {}).routers.hybrid.threshold is None  # dropping the override reverts it
    relative = merged_config(base, {"routers": {"hybrid": {"artifact": "artifacts/hybrid_llm"}}})
    assert Path(relative.routers.hybrid.artifact).is_absolute()
    for bad, needle in (({"routers": {"causal": {"artifact": "x"}}}, "CausalLMRouter deployment"),
                        ({"routers": {"policy": {"policy_map": "x"}}}, "PolicyRouter deployment"),
                        ({"routers": {"policy": {"threshold": 0.5}}}, "takes no threshold"),
                        ({"routers": {"hybrid": {"thresold": 0.2}}}, "unknown key"),
                        ({"limits": {}}, "takes only 'routers'")):
        with pytest.raises(ValueError, match=needle):
            check_ingress_user_config(bad)
    with pytest.raises(ValueError, match="not enabled"):
        merged_config(base, {"routers": {"automix": {"threshold": 0.5}}})


# --- metrics bookkeeping -------------------------------------------------------------------------------------
def test_metrics_keep_cost_and_baseline_so_negative_savings_count() -> None:
    metrics = fake_metrics()
    metrics.record("automix", "large", {"use_large": True, "escalated": True, "cost": 3.0, "cost_saved": -1.0}, 0.2)
    metrics.record("hybrid", "small", {"use_large": False, "cost": 1.0, "cost_saved": 4.0}, 0.01)
    metrics.record("hybrid", "large", {"fallback": True, "use_large": True, "cost": 0.0, "cost_saved": 0.0}, None)
    metrics.record_error("hybrid", "small", 503)
    metrics.record_error(None, None, 401)
    saved = metrics.cost_baseline.total() - metrics.cost.total()
    assert saved == pytest.approx(-1.0 + 4.0)  # the escalation's overspend is subtracted, not dropped
    assert metrics.cost_baseline.total(router="automix") == pytest.approx(2.0)
    assert metrics.requests.total(status="ok") == 2 and metrics.requests.total(status="fallback") == 1
    assert metrics.requests.total(status="503", router="hybrid") == 1
    assert metrics.requests.total(status="401", router="none") == 1
    assert metrics.fallbacks.total() == 1 and metrics.escalations.total(router="automix") == 1
    assert metrics.decisions.total(decision="fallback") == 1 and metrics.decisions.total(decision="small") == 1


# --- the load benchmark's bookkeeping ------------------------------------------------------------------------
def test_load_bench_accounts_for_every_request() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_bench", ROOT / "bench/load_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["load_bench"] = bench  # dataclasses look their module up while the class is built
    spec.loader.exec_module(bench)

    def reply(request: httpx.Request) -> httpx.Response:
        content = json.loads(request.content)["messages"][0]["content"]
        if content == "html":
            return httpx.Response(200, text="<html>proxy error</html>")
        if content == "drop":
            raise httpx.ConnectError("refused", request=request)
        if content == "busy":
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json={"model": "small-model"})

    tally = bench.Tally(planned=6)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply), base_url="http://test") as client:
            for content in ("ok", "html", "drop", "busy", "ok"):
                tally.sent += 1
                await bench.send_one(client, {"messages": [{"role": "user", "content": content}]}, tally)

    run(go())
    assert tally.statuses == Counter({"200": 2, "200-not-json": 1, "503": 1})
    assert tally.client_errors == Counter({"ConnectError": 1})
    assert (tally.responses, tally.not_sent, tally.lost) == (4, 1, 0)
    assert len(tally.latencies) == 2 and tally.routed["small-model"] == 2
    tally.sent += 1  # one more sent with no outcome recorded: that one is lost, not hidden
    assert tally.lost == 1 and tally.not_sent == 0


def test_the_reason_names_the_served_model_and_keeps_the_artifacts_name() -> None:
    """Artifacts name their training data's models; users must read which served model answered."""
    from routers.base import RouteDecision
    from serve_app.routing import Routing as TypedRouting

    def decision_info(kind: str, decision: RouteDecision, served: str) -> dict[str, Any]:
        return TypedRouting.decided(kind, decision, "small", served, {"small": "small"}).info

    decision = RouteDecision(query="q", model_name="mistralai/Mixtral-8x7B-Instruct-v0.1", use_large=False,
                             reason="router model wrote policy Standard_Query -> policy map -> "
                                    "mistralai/Mixtral-8x7B-Instruct-v0.1", extra={"policy": "Standard_Query"})
    info = decision_info("policy", decision, "smollm2-135m-instruct")
    assert info["reason"].endswith("-> smollm2-135m-instruct (the artifact's mistralai/Mixtral-8x7B-Instruct-v0.1)")
    assert info["decision_model"] == "mistralai/Mixtral-8x7B-Instruct-v0.1" and info["policy"] == "Standard_Query"
    same = decision_info("policy", decision, "mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert same["reason"] == decision.reason
