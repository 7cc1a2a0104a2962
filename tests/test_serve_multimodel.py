"""N-model routers in the Serve app, without Ray: the config block (``routers.multimodel``), the ``model``-field
grammar (``router-<name>:cost=0.5`` ...), the decision over the app's models with the app's prices, and the
routing object, through the real ingress app in process (the deployments are fakes)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from routers.data.dataset import estimate_tokens
from routers.engines import AsyncEmbedder
from routers.errors import ConfigError
from routers.nmodel.base import read_manifest
from routers.safe_io import load_arrays
from serve_app import guard as guard_module
from serve_app import ingress as ingress_module
from serve_app import pipelines as pipelines_module
from serve_app.adapters import DeploymentScorer
from serve_app.api import ApiError, RouteResponse, parse_model_field
from serve_app.config import AppConfig, parse_app_config
from serve_app.hot_swap import merged_config
from serve_app.multimodel import HostedLM, ServedMultiModelRouter, has_own_lm
from serve_app.pipelines import Pipelines
from tests.fake_handles import Handle, answer_model, answering, fake_metrics, value

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "artifacts/nmodel_mlp_llmrouter"
HYBRID_ARTIFACT = ROOT / "artifacts/hybrid_llm"
pytestmark = pytest.mark.skipif(not (ARTIFACT / "router.json").exists(), reason="N-model artifact not shipped")
MAP = {"gemma-2-9b-it": "small", "llama-3.1-8b-instruct": "medium", "llama-3.1-nemotron-51b-instruct": "large"}
PRICES = {"small": 0.1, "medium": 0.2, "large": 0.9}
QUERIES = ["What is 2 + 2?", ("Prove that there are infinitely many primes, then give a short Python function "
           "that lists the primes below n."), "Translate 'good morning' into French."]


def vector(text: str) -> np.ndarray:
    """A stand-in query embedding seeded by the text (the same text, the same vector), drawn around the training
    embeddings' mean at their spread, so the router sees inputs like real ones."""
    tensors = load_arrays(ARTIFACT / "mlp.safetensors")
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return (tensors["mean"] + tensors["scale"] * rng.standard_normal(len(tensors["mean"]))).astype(np.float32)


class FakeEmbedder(AsyncEmbedder):
    def __init__(self) -> None:
        self.calls = 0

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([vector(t) for t in texts])


def args(**multimodel: Any) -> dict[str, Any]:
    spec = {"artifact": str(ARTIFACT), "model_map": dict(MAP), "completion_tokens": 64, **multimodel}
    return {
        "models": {key: {"engine": {"model": f"org/{key}"}, "input_price": price, "output_price": price}
                   for key, price in PRICES.items()},
        "embedder": {"engine": {"model": "models/all-minilm-l6-v2"}, "placement": "ingress"},
        "routers": {"hybrid": None, "automix": None, "multimodel": {"nmodel": spec}},
        "default_router": "nmodel",
        "fallback_model": "medium",
        "auth": {"api_keys": [], "api_keys_env": None},
    }


def config_error(data: dict[str, Any], resolve: bool = False) -> str:
    with pytest.raises(ConfigError) as caught:
        config = parse_app_config(data)
        if resolve:
            config.resolved()
    return str(caught.value)


# --- config --------------------------------------------------------------------------------------------------
def test_the_shipped_config_validates_and_lists_the_router() -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "configs/serve_multi.yaml").read_text())["applications"][0]["args"]
    config = parse_app_config(raw).resolved()
    assert config.multimodel_routers() == ["nmodel", "causal_n"]
    assert {"nmodel", "causal_n"} <= set(config.enabled_routers())
    assert len(config.models) >= 3
    for spec in config.routers.multimodel.values():
        assert set(spec.model_map.values()) <= set(config.models)
    # only the causal-LM router gets a RouterLM deployment for its own LM
    specs = config.routers.multimodel
    assert has_own_lm(specs["causal_n"]) and not has_own_lm(specs["nmodel"])


def test_a_router_with_its_own_lm_needs_the_lm_the_app_started_from_its_artifact() -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "configs/serve_multi.yaml").read_text())["applications"][0]["args"]
    config = parse_app_config(raw).resolved()
    spec = config.routers.multimodel["causal_n"]
    with pytest.raises(ConfigError, match="needs a restart"):
        ServedMultiModelRouter("causal_n", spec, config)  # a hot swap onto it: no RouterLM deployment
    started_elsewhere = HostedLM(DeploymentScorer(None, 1.0, "causal_n router LM"), str(ROOT / "artifacts/other"))
    with pytest.raises(ConfigError, match="was started from"):
        ServedMultiModelRouter("causal_n", spec, config, lm=started_elsewhere)
    own = HostedLM(DeploymentScorer(None, 1.0, "causal_n router LM"), spec.artifact)
    assert ServedMultiModelRouter("causal_n", spec, config, lm=own).lm is own


def test_a_two_model_config_is_unchanged() -> None:
    data = args()
    data["routers"] = {"automix": None}
    data["default_router"] = "hybrid"
    data["embedder"] = {"engine": {"model": "org/all-minilm-l6-v2"}}
    data["models"] = {key: data["models"][key] for key in ("small", "large")}
    data["fallback_model"] = "large"
    config = parse_app_config(data)
    assert config.multimodel_routers() == []
    assert config.enabled_routers() == ["hybrid", "smallest", "largest", "random"]


def test_model_map_names_an_unknown_app_model() -> None:
    message = config_error(args(model_map={**MAP, "gemma-2-9b-it": "tiny"}))
    assert "routers.multimodel.nmodel.model_map.gemma-2-9b-it" in message and "'tiny'" in message


def test_model_map_names_an_unknown_data_model() -> None:
    message = config_error(args(model_map={"gpt-5": "small", "llama-3.1-8b-instruct": "medium"}), resolve=True)
    assert "routers.multimodel.nmodel.model_map" in message and "gpt-5" in message
    assert "llama3-chatqa-1.5-70b" in message  # the artifact's models are listed


def test_fewer_than_two_mapped_models_is_refused() -> None:
    message = config_error(args(model_map={"gemma-2-9b-it": "small"}))
    assert "model_map" in message and "at least 2" in message


def test_two_data_models_on_one_app_model_is_refused() -> None:
    message = config_error(args(model_map={"gemma-2-9b-it": "small", "codegemma-7b": "small"}))
    assert "both map to app model 'small'" in message


@pytest.mark.parametrize("rule", ["cost=-1", "share=2", "budget=0", "speed=3", "0.5"])
def test_a_bad_configured_rule_is_refused(rule: str) -> None:
    assert "routers.multimodel.nmodel.rule" in config_error(args(rule=rule)).replace("\n  ", ".")


@pytest.mark.parametrize("name", ["hybrid", "Big", "n-model", "direct"])
def test_router_names_are_the_grammars_and_not_taken(name: str) -> None:
    data = args()
    data["routers"]["multimodel"] = {name: data["routers"]["multimodel"]["nmodel"]}
    data["default_router"] = "smallest"
    assert f"multimodel.{name}" in config_error(data)


def test_the_embedder_must_be_the_one_the_artifact_was_trained_with() -> None:
    data = args()
    data["embedder"]["engine"]["pooling"] = "cls"
    message = config_error(data, resolve=True)
    assert "embedder.engine does not match routers.multimodel.nmodel.artifact" in message and "pooling" in message
    data = args()
    data["embedder"] = None
    assert "needs an 'embedder' section" in config_error(data, resolve=True)


def test_a_two_model_artifact_under_multimodel_is_refused() -> None:
    message = config_error(args(artifact=str(HYBRID_ARTIFACT)), resolve=True)
    assert "not an N-model router" in message


# --- grammar ---------------------------------------------------------------------------------------------------
ROUTERS = ["hybrid", "smallest", "largest", "random", "nmodel"]


def parse(model: str) -> Any:
    return parse_model_field(model, ROUTERS, {"smollm": "small"}, "nmodel", ["nmodel"])


@pytest.mark.parametrize(("model", "rule"), [
    ("router-nmodel", None), ("router-nmodel:cost=0.5", "cost=0.5"), ("router-nmodel:quality=0.95", "quality=0.95"),
    ("router-nmodel:budget=0.002", "budget=0.002"), ("router-nmodel:share=0.3", "share=0.3"),
    ("router-nmodel:default", "default"), ("router", None), ("router:cost=1000", "cost=1000")])
def test_the_model_field_takes_a_selection_rule(model: str, rule: str | None) -> None:
    choice = parse(model)
    assert (choice.kind, choice.rule, choice.threshold, choice.large_share, choice.quality_target) == \
        ("nmodel", rule, None, None, None)


@pytest.mark.parametrize("model", ["router-nmodel:0.4", "router-nmodel:cost=abc", "router-nmodel:share=2",
                                   "router-nmodel:budget=0", "router-nmodel:speed=1", "router-nmodel:cost=nan",
                                   "router:quality=0"])
def test_bad_rules_are_400_naming_model(model: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(model)
    assert caught.value.status == 400 and caught.value.param == "model"


def test_two_model_routers_parse_as_before() -> None:
    choice = parse("router-hybrid:share=0.3")
    assert (choice.kind, choice.large_share, choice.rule) == ("hybrid", 0.3, None)
    assert parse("router-hybrid:0.4").threshold == 0.4
    assert parse("smollm").direct_model == "small"


# --- the decision and the routing object -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipelines() -> Pipelines:
    with pytest.MonkeyPatch.context() as patch:  # the stand-in embedder, not MiniLM, inside the "ingress"
        patch.setattr(pipelines_module, "local_embedder", lambda config: FakeEmbedder())
        return Pipelines(AppConfig.model_validate(args()), {}, None, None, None)


def route(pipelines: Pipelines, rule: str | None) -> list[dict[str, Any]]:
    return asyncio.run(pipelines.route_only("nmodel", QUERIES, None, rule))


def test_every_candidate_is_reported_with_its_quality_cost_and_the_rule(pipelines: Pipelines) -> None:
    items = route(pipelines, "cost=0")
    manifest_models = read_manifest(ARTIFACT)["models"]
    for query, item in zip(QUERIES, items, strict=True):
        assert item["router"] == "nmodel" and item["rule"] == "cost=0" and item["fallback"] is False
        candidates = {c["model_key"]: c for c in item["candidates"]}
        assert set(candidates) == {"small", "medium", "large"}
        for key, c in candidates.items():
            assert c["data_model"] in manifest_models and MAP[c["data_model"]] == key
            assert c["model"] == f"{key}"  # served name: the engine dir's name (org/<key>)
            tokens = estimate_tokens(query)
            assert c["cost"] == pytest.approx((tokens + 64) * PRICES[key] / 1e6)
            assert 0.0 <= c["quality"] <= 1.0
        best = max(candidates.values(), key=lambda c: c["quality"])
        assert item["model_key"] == best["model_key"]  # cost=0: the best predicted quality
        assert item["score"] == pytest.approx(best["quality"])
        assert item["decision_model"] == best["data_model"]
        assert item["use_large"] == (item["model_key"] == "large")


def test_a_high_cost_weight_picks_the_cheapest_and_a_budget_caps_the_cost(pipelines: Pipelines) -> None:
    assert {item["model_key"] for item in route(pipelines, "cost=1e9")} == {"small"}
    for item in route(pipelines, "budget=0.00002"):
        fitting = [c for c in item["candidates"] if c["cost"] <= 0.00002]
        chosen = next(c for c in item["candidates"] if c["model_key"] == item["model_key"])
        assert fitting and chosen["cost"] <= 0.00002
        assert item["model_key"] == max(fitting, key=lambda c: c["quality"])["model_key"]
        assert "cost_weight" not in item


def test_calibrated_rules_resolve_at_the_apps_prices(pipelines: Pipelines) -> None:
    served = pipelines.multimodel["nmodel"]
    assert served.calibration is not None
    assert served.calibration.quality.shape[1] == 3  # the mapped models only
    cheap, dear = route(pipelines, "share=0.0"), route(pipelines, "share=1.0")
    assert all(item["model_key"] != "large" for item in cheap)
    assert cheap[0]["cost_weight"] >= dear[0]["cost_weight"]
    assert route(pipelines, None)[0]["rule"] == "default"


def test_a_hot_swap_changes_an_n_model_routers_rule_and_map_and_reverts() -> None:
    base = AppConfig.model_validate(args()).resolved()
    swapped = merged_config(base, {"routers": {"multimodel": {"nmodel": {
        "rule": "cost=1e9", "model_map": {"gemma-2-9b-it": "medium", "llama-3.1-nemotron-51b-instruct": "large"}}}}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipelines_module, "local_embedder", lambda config: FakeEmbedder())
        served = Pipelines(base, {}, None, None, None)
    assert {item["model_key"] for item in route(served, None)} != {"medium"}
    served.load_routers(swapped)
    # the configured rule now always takes the cheapest mapped model, and "small" is no longer a candidate
    items = route(served, None)
    assert {item["model_key"] for item in items} == {"medium"} and items[0]["rule"] == "cost=1e+09"
    assert {c["model_key"] for c in items[0]["candidates"]} == {"medium", "large"}
    served.load_routers(merged_config(base, {}))  # dropping the override reverts it
    assert {c["model_key"] for c in route(served, None)[0]["candidates"]} == {"small", "medium", "large"}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"other": {"rule": "default"}}, "multimodel.other: not served by this app"),
    ({"nmodel": {"threshold": 0.5}}, "unknown key(s) ['threshold']"),
    ({"nmodel": {"rule": "cost=-1"}}, "rule"),
    ({"nmodel": {"model_map": {"gemma-2-9b-it": "nowhere", "llama-3.1-8b-instruct": "medium"}}}, "nowhere"),
])
def test_a_bad_n_model_hot_swap_is_refused_naming_the_key(overrides: dict[str, Any], message: str) -> None:
    base = AppConfig.model_validate(args()).resolved()
    with pytest.raises((ValueError, ConfigError)) as caught:
        merged_config(base, {"routers": {"multimodel": overrides}})
    assert message in str(caught.value)


def test_one_embedder_call_per_batch(pipelines: Pipelines) -> None:
    embedder = pipelines.local_embedder
    assert isinstance(embedder, FakeEmbedder)
    before = embedder.calls
    route(pipelines, "cost=10")
    assert embedder.calls == before + 1


# --- through the ingress app --------------------------------------------------------------------------------
@pytest.fixture
def ingress() -> Iterator[Any]:
    data = args()
    # the embedder as a deployment (beside a two-model router), to check the N-model router finds it there too
    data["embedder"] = {"engine": {"model": "org/all-minilm-l6-v2"}}
    data["routers"]["hybrid"] = {"artifact": str(HYBRID_ARTIFACT)}
    cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
    instance = cls(data, {key: answer_model() for key in PRICES})
    instance.metrics = fake_metrics()
    instance.answers.metrics = instance.metrics
    guard_module.GUARD.metrics = instance.metrics
    instance.pipelines.embedder = Handle(embed_one=lambda q: value(vector(q)),
                                         embed=lambda qs: value(np.stack([vector(q) for q in qs])))
    try:
        with answering(instance):
            yield instance
    finally:
        guard_module.GUARD.metrics = None


def call(method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=ingress_module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, json=body)

    return asyncio.run(go())


@pytest.mark.skipif(not (HYBRID_ARTIFACT / "router.json").exists(), reason="hybrid artifact not shipped")
def test_chat_route_and_models_through_the_ingress(ingress: Any) -> None:
    models = [card["id"] for card in call("GET", "/v1/models").json()["data"]]
    assert "router-nmodel" in models and "router-hybrid" in models

    response = call("POST", "/v1/chat/completions", {"model": "router-nmodel:cost=1e9", "max_tokens": 4,
                                                     "messages": [{"role": "user", "content": QUERIES[0]}]})
    assert response.status_code == 200, response.text
    body = response.json()
    routing = body["routing"]
    assert routing["model_key"] == "small" and body["model"] == "small"
    assert routing["rule"] == "cost=1e+09" and len(routing["candidates"]) == 3
    usage = body["usage"]
    assert routing["cost"] == pytest.approx((usage["prompt_tokens"] + usage["completion_tokens"]) * 0.1 / 1e6)
    assert ingress.metrics.requests.total(router="nmodel", model="small") == 1

    routed = call("POST", "/v1/route", {"model": "router-nmodel:budget=0.001", "queries": QUERIES})
    assert routed.status_code == 200, routed.text
    parsed = RouteResponse.model_validate(routed.json())
    assert parsed.router == "nmodel" and len(parsed.data) == 3
    assert all(len(item.model_extra["candidates"]) == 3 for item in parsed.data)

    bad = call("POST", "/v1/route", {"model": "router-nmodel:cost=oops", "query": "hi"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"

    two_model = call("POST", "/v1/route", {"model": "router-hybrid", "query": QUERIES[0]})
    assert two_model.status_code == 200
    assert "candidates" not in two_model.json()["data"][0] and "rule" not in two_model.json()["data"][0]


@pytest.mark.skipif(not (HYBRID_ARTIFACT / "router.json").exists(), reason="hybrid artifact not shipped")
def test_a_failing_n_model_decision_falls_back(ingress: Any) -> None:
    ingress.pipelines.embedder = Handle(embed_one=lambda q: value(RuntimeError("embedder down")))
    response = call("POST", "/v1/chat/completions", {"model": "router-nmodel:cost=0", "max_tokens": 4,
                                                     "messages": [{"role": "user", "content": QUERIES[0]}]})
    assert response.status_code == 200, response.text
    routing = response.json()["routing"]
    assert routing["fallback"] is True and routing["model_key"] == "medium"  # the config's fallback_model
    assert routing["router"] == "nmodel" and "embedder down" in routing["reason"] and "candidates" not in routing


@pytest.mark.parametrize("placement", ["ingress", "deployment"])
def test_n_model_routers_alone_get_the_embedder_where_it_is_placed(placement: str) -> None:
    """With no two-model embedding router, an N-model router still brings the embedder: into the ingress, or
    as the Embedder deployment."""
    from serve_app.app import build_app

    data = args()
    data["embedder"]["placement"] = placement
    config = AppConfig.model_validate(data)
    assert config.routers.need_embedder() and not config.routers.embedding_routers()
    ingress_args = build_app(data)._bound_deployment.init_args
    assert (ingress_args[2] is not None) == (placement == "deployment")  # the Embedder deployment, bound
