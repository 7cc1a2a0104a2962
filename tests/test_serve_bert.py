"""The BERT router served: its own deployment (the real class, outside Ray) hosting the library router,
the config, and the ingress's HTTP API in process. The Ray Serve end-to-end run is in test_serve_e2e."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routers.bert.router import BertRouter
from routers.errors import ConfigError
from routers.evaluation.calibrate import threshold_for_large_share
from serve_app import ingress as ingress_module
from serve_app.config import AppConfig, parse_app_config
from serve_app.deployments import router_models
from serve_app.pipelines import Pipelines
from tests.fake_handles import Handle, answer_model, answering, fake_metrics, value
from tests.job_helpers import MINILM, save_tiny_bert_router

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["What is the capital of France?", "Solve for x: 3x + 7 = 22."]
pytestmark = pytest.mark.skipif(not (MINILM / "config.json").exists(), reason="run scripts/setup.sh first")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny BERT routers (different seeds: different heads), as hot-swappable artifacts."""
    work = tmp_path_factory.mktemp("bert")
    return {name: save_tiny_bert_router(work / name, work / f"data-{name}", seed=seed)
            for name, seed in (("a", 0), ("b", 1))}


def deployment(artifact: Path) -> Any:
    return router_models.BertRouterDeployment.func_or_class(str(artifact))


async def routed(hosted: Any, query: str, threshold: float | None) -> dict[str, Any]:
    """What ``route`` returns, one batch of one (``@serve.batch`` itself needs a running replica)."""
    [decision] = await hosted.decide_batch([(query, threshold)])
    return decision.model_dump()


def handle_for(hosted: Any) -> Handle:
    return Handle(route=lambda q, t: routed(hosted, q, t),
                  reference_quantiles=lambda: value(hosted.reference_quantiles()))


def app_args(artifact: Path, **extra: Any) -> dict[str, Any]:
    """An app serving only the BERT router (hub-id model names: nothing is loaded)."""
    return {
        "models": {"small": {"engine": {"model": "org/small"}}, "large": {"engine": {"model": "org/large"}}},
        "routers": {"hybrid": None, "automix": None, "bert": {"artifact": str(artifact)}},
        "default_router": "bert",
        "timeouts": {"router_s": 30.0, "answer_s": 5.0, "stream_chunk_s": 5.0},
        "auth": {"api_keys": [], "api_keys_env": None},
        **extra,
    }


def test_the_deployment_decides_as_the_library_does(artifacts: dict[str, Path]) -> None:
    hosted = deployment(artifacts["a"])
    library = BertRouter.load(artifacts["a"])
    for query in QUERIES:
        served = run(routed(hosted, query, None))
        local = library.route_single(query)
        assert served["score"] == pytest.approx(local["router_score"], abs=1e-6)
        assert served["use_large"] == local["use_large"] and served["threshold"] == pytest.approx(local["threshold"])
    pinned = run(routed(hosted, QUERIES[0], 0.0))
    assert pinned["threshold"] == 0.0 and pinned["use_large"] is False
    assert hosted.reference_quantiles() == pytest.approx(list(library.reference_scores()))


def test_the_deployment_hot_swaps_and_rejects_what_it_cannot_apply(artifacts: dict[str, Path]) -> None:
    hosted = deployment(artifacts["a"])
    before = run(routed(hosted, QUERIES[0], None))["score"]
    hosted.reconfigure({"artifact": str(artifacts["b"])})
    after = run(routed(hosted, QUERIES[0], None))["score"]
    assert after == pytest.approx(BertRouter.load(artifacts["b"]).route_single(QUERIES[0])["router_score"], abs=1e-6)
    assert after != pytest.approx(before)
    hosted.reconfigure({})  # the override removed: back to the artifact the replica started with
    assert run(routed(hosted, QUERIES[0], None))["score"] == pytest.approx(before, abs=1e-6)
    with pytest.raises(ValueError, match="BertRouter user_config: unknown key"):
        hosted.reconfigure({"policy_map": "map.json"})
    with pytest.raises(ConfigError, match="does not exist"):
        hosted.reconfigure({"artifact": "nowhere"})
    assert hosted.artifact == str(artifacts["a"])


def test_the_config_names_a_wrong_artifact(artifacts: dict[str, Path]) -> None:
    config = parse_app_config(app_args(artifacts["a"])).resolved()
    assert "bert" in config.enabled_routers()
    with pytest.raises(ConfigError, match=r"routers\.bert\.artifact: .* holds a 'mf' router, not 'bert'"):
        parse_app_config(app_args(ROOT / "artifacts" / "mf")).resolved()


def test_share_uses_the_deployments_training_quantiles(artifacts: dict[str, Path]) -> None:
    hosted = deployment(artifacts["a"])
    pipelines = Pipelines(AppConfig.model_validate(app_args(artifacts["a"])), {}, None, None, None, handle_for(hosted))
    expected = threshold_for_large_share(BertRouter.load(artifacts["a"]).reference_scores(), 0.3)
    assert run(pipelines.threshold_for_share("bert", 0.3)) == pytest.approx(expected)


# --- the real FastAPI app, in process ----------------------------------------------------------------------
@pytest.fixture
def ingress(artifacts: dict[str, Path]) -> Iterator[Any]:
    hosted = deployment(artifacts["a"])
    cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
    instance = cls(app_args(artifacts["a"]), {"small": answer_model(), "large": answer_model()}, None, None, None,
                   handle_for(hosted))
    instance.metrics = fake_metrics()
    with answering(instance):
        yield instance


def request(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=ingress_module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, json=body)

    return asyncio.run(go())


def test_the_http_api_serves_router_bert(ingress: Any, artifacts: dict[str, Path]) -> None:
    assert "router-bert" in {m["id"] for m in request("GET", "/v1/models").json()["data"]}
    library = BertRouter.load(artifacts["a"])
    route = request("POST", "/v1/route", {"model": "router-bert", "queries": QUERIES})
    assert route.status_code == 200, route.text
    for query, item in zip(QUERIES, route.json()["data"], strict=True):
        assert item["router"] == "bert" and item["fallback"] is False
        assert item["score"] == pytest.approx(library.route_single(query)["router_score"], abs=1e-6)
        assert item["use_large"] == (item["score"] < item["threshold"])
    chat = request("POST", "/v1/chat/completions", {"model": "router-bert:0.0", "max_tokens": 4,
                                                    "messages": [{"role": "user", "content": QUERIES[0]}]})
    assert chat.status_code == 200, chat.text
    routing = chat.json()["routing"]
    assert routing["router"] == "bert" and routing["threshold"] == 0.0 and routing["model_key"] == "small"
    share = request("POST", "/v1/route", {"model": "router-bert:share=0.3", "query": QUERIES[1]}).json()["data"][0]
    assert share["large_share"] == 0.3 and share["threshold_source"] == "training score quantiles"
    quality = request("POST", "/v1/route", {"model": "router-bert:quality=0.9", "query": QUERIES[1]})
    assert quality.status_code == 400 and "not scored in the ingress" in quality.json()["error"]["message"]
