"""The embedding routers (kNN, MF, SW ranking, blend, domain prior) served like Hybrid, without Ray: the
config (artifact and embedder checks naming the key), the model names, the pipeline (embed with the
Embedder deployment, the library router decides), ``share=``, hot swap, and the in-process HTTP app.

MF, blend and domain prior are the shipped ``artifacts/{mf,blend,domain_prior}``; kNN and SW ranking are
trained here on the synthetic two-cluster data of ``test_embedding_routers`` (their real banks are ~9 MB
each, so none is shipped).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from routers.embedding import EmbeddingRouter
from routers.engines import EmbedderConfig, SamplingParams
from routers.errors import ConfigError
from routers.evaluation.calibrate import threshold_for_large_share
from routers.registry import router_class
from serve_app import ingress as ingress_module
from serve_app.adapters import RouterUnavailable
from serve_app.api import ApiError, RouterChoice, parse_model_field
from serve_app.config import (
    EMBEDDING_ROUTER_KINDS,
    AppConfig,
    check_embedder_matches,
    parse_app_config,
)
from serve_app.hot_swap import check_ingress_user_config, merged_config
from serve_app.pipelines import Pipelines
from tests.fake_handles import Handle, answer_model, answering, fake_metrics, value
from tests.synthetic_data import fitted, two_clusters

ROOT = Path(__file__).resolve().parents[1]
MF_ARTIFACT = ROOT / "artifacts" / "mf"
HYBRID_ARTIFACT = ROOT / "artifacts" / "hybrid_llm"
BLEND_ARTIFACT = ROOT / "artifacts" / "blend"
DOMAIN_PRIOR_ARTIFACT = ROOT / "artifacts" / "domain_prior"
NEW_KINDS = ["blend", "domain_prior", "knn", "mf", "sw_ranking"]
pytestmark = pytest.mark.skipif(not (MF_ARTIFACT / "router.json").exists(), reason="mf artifact not shipped")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> artifact directory: the shipped MF, blend and domain prior, and kNN / SW ranking fitted on
    synthetic embeddings."""
    train, embedder = two_clusters()
    directory = tmp_path_factory.mktemp("embedding-artifacts")
    paths = {"mf": MF_ARTIFACT, "blend": BLEND_ARTIFACT, "domain_prior": DOMAIN_PRIOR_ARTIFACT}
    for kind in ("knn", "sw_ranking"):
        fitted(kind, train, embedder).save(directory / kind)
        paths[kind] = directory / kind
    return paths


def app_args(artifacts: dict[str, Path], **extra: Any) -> dict[str, Any]:
    """An app serving only the embedding routers (hub-id model names: nothing is loaded)."""
    return {
        "models": {"small": {"engine": {"model": "org/small"}}, "large": {"engine": {"model": "org/large"}}},
        "embedder": {"engine": {"model": "org/all-minilm-l6-v2"}},
        "routers": {"hybrid": None, "automix": None, **{k: {"artifact": str(p)} for k, p in artifacts.items()}},
        "default_router": "mf",
        "timeouts": {"router_s": 1.0, "answer_s": 0.5, "stream_chunk_s": 0.5},
        "auth": {"api_keys": [], "api_keys_env": None},
        **extra,
    }


def loaded(artifacts: dict[str, Path], kind: str) -> EmbeddingRouter:
    router = router_class(EMBEDDING_ROUTER_KINDS[kind].name).load(artifacts[kind])
    assert isinstance(router, EmbeddingRouter)
    return router


def query_vector(router: EmbeddingRouter, seed: int = 0) -> np.ndarray:
    """A vector of the router's embedding size (what the Embedder deployment would send back)."""
    return np.random.default_rng(seed).normal(size=router.embedding_dim()).astype(np.float32)


def embedder_returning(vector: np.ndarray) -> Handle:
    return Handle(embed_one=lambda q: value(vector), embed=lambda qs: value(np.stack([vector] * len(qs))))


# --- config -----------------------------------------------------------------------------------------------
def test_every_embedding_kind_is_a_router_kind_with_the_same_spec() -> None:
    assert set(NEW_KINDS) | {"hybrid"} == set(EMBEDDING_ROUTER_KINDS)
    for kind, served in EMBEDDING_ROUTER_KINDS.items():
        assert issubclass(router_class(served.name), EmbeddingRouter), kind


def test_the_config_serves_knn_mf_and_sw_ranking(artifacts: dict[str, Path]) -> None:
    config = parse_app_config(app_args(artifacts)).resolved()
    assert set(NEW_KINDS) <= set(config.enabled_routers())
    assert "hybrid" not in config.enabled_routers()
    assert sorted(config.routers.embedding_routers()) == NEW_KINDS
    assert parse_app_config(app_args(artifacts, routers={"mf": {"artifact": str(MF_ARTIFACT), "threshold": 0.3}})
                            ).routers.mf.threshold == 0.3


def test_the_shipped_app_serves_mf_blend_and_domain_prior_next_to_hybrid() -> None:
    """blend is the default: the best measured unseen-domain APGR (bench/README.md)."""
    args = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    config = parse_app_config(args)
    assert config.default_router == "blend"
    # every embedding router ships with the gadget defence on (bench/README.md, "The router's own cost")
    assert config.routers.mf is not None and config.routers.mf.artifact == "artifacts/mf_defended"
    assert config.routers.blend is not None and config.routers.blend.artifact == "artifacts/blend_defended"
    assert config.routers.domain_prior is not None
    assert config.routers.domain_prior.artifact == "artifacts/domain_prior_defended"
    assert config.routers.hybrid is not None and config.routers.hybrid.artifact == "artifacts/hybrid_llm_defended"
    for kind in ("hybrid", "mf", "blend", "domain_prior"):
        manifest = json.loads((ROOT / getattr(config.routers, kind).artifact / "router.json").read_text())
        assert manifest["config"]["defence"]["kind"] == "window_max", kind
    assert {"hybrid", "mf", "blend", "domain_prior"} <= set(config.enabled_routers())
    engine = EmbedderConfig.model_validate(args["embedder"]["engine"])
    check_embedder_matches("mf", MF_ARTIFACT, engine)  # no error
    check_embedder_matches("blend", BLEND_ARTIFACT, engine)
    check_embedder_matches("domain_prior", DOMAIN_PRIOR_ARTIFACT, engine)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_a_missing_artifact_names_the_key(artifacts: dict[str, Path], kind: str) -> None:
    args = app_args({**artifacts, kind: Path("artifacts/does-not-exist")})
    with pytest.raises(ConfigError, match=rf"routers\.{kind}\.artifact"):
        parse_app_config(args).resolved()


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_an_artifact_trained_with_another_embedder_names_the_key(artifacts: dict[str, Path], kind: str,
                                                                 tmp_path: Path) -> None:
    other = tmp_path / kind
    shutil.copytree(artifacts[kind], other)
    manifest = json.loads((other / "router.json").read_text())
    manifest["state"]["embedder"]["model"] = "models/bge-small-en"
    (other / "router.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=rf"routers\.{kind}\.artifact.*trained on 'bge-small-en' embeddings"
                                          rf".*llmrouter train --router {kind}"):
        parse_app_config(app_args({**artifacts, kind: other})).resolved()


def test_an_artifact_of_another_router_names_the_key(artifacts: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"routers\.knn\.artifact: .* holds a 'mf' router, not 'knn'"):
        parse_app_config(app_args({**artifacts, "knn": MF_ARTIFACT})).resolved()


def test_embedding_routers_need_an_embedder(artifacts: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"routers\.knn needs an 'embedder' section"):
        parse_app_config(app_args(artifacts, embedder=None))


# --- model names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "expected"),
    [("router-mf", RouterChoice(kind="mf")),
     ("router-mf:0.4", RouterChoice(kind="mf", threshold=0.4)),
     ("router-mf:share=0.2", RouterChoice(kind="mf", large_share=0.2)),
     ("router-knn:0.7", RouterChoice(kind="knn", threshold=0.7)),
     ("router-sw_ranking", RouterChoice(kind="sw_ranking")),
     ("router-sw_ranking:share=0.5", RouterChoice(kind="sw_ranking", large_share=0.5)),
     ("router:share=0.2", RouterChoice(kind="mf", large_share=0.2))],
)
def test_model_names_resolve(artifacts: dict[str, Path], model: str, expected: RouterChoice) -> None:
    config = AppConfig.model_validate(app_args(artifacts))
    assert parse_model_field(model, config.enabled_routers(), {"small": "small"}, config.default_router) == expected


@pytest.mark.parametrize(("model", "status", "needle"),
                         [("router-nope", 404, "unknown router 'nope'"), ("router-hybrid", 404, "unknown router"),
                          ("router-mf:1.5", 400, "within [0, 1]"), ("router-knn:share=x", 400, "not a number")])
def test_bad_model_names_are_still_clear_errors(artifacts: dict[str, Path], model: str, status: int,
                                                needle: str) -> None:
    config = AppConfig.model_validate(app_args(artifacts))
    with pytest.raises(ApiError) as caught:
        parse_model_field(model, config.enabled_routers(), {"small": "small"}, config.default_router)
    assert caught.value.status == status and needle in caught.value.message


# --- the pipeline: embed remotely, the library router decides ---------------------------------------------
@pytest.mark.parametrize("kind", NEW_KINDS)
def test_the_served_decision_is_the_library_routers(artifacts: dict[str, Path], kind: str) -> None:
    router = loaded(artifacts, kind)
    vector = query_vector(router)
    pipelines = Pipelines(AppConfig.model_validate(app_args(artifacts)), {}, embedder_returning(vector), None, None)
    local = router.route_embedding("q", vector)
    routing = run(pipelines.route(kind, "q", [], SamplingParams()))
    assert routing.router == routing.info["router"] == kind
    assert routing.info["score"] == pytest.approx(local.score)
    assert routing.info["threshold"] == pytest.approx(local.threshold)
    assert routing.model_key == ("large" if local.use_large else "small")
    pinned = run(pipelines.route(kind, "q", [], SamplingParams(), threshold=0.0))
    assert pinned.info["threshold"] == 0.0 and pinned.model_key == ("small" if local.score >= 0.0 else "large")
    batch = run(pipelines.route_only(kind, ["a", "b"], None))
    assert [item["score"] for item in batch] == pytest.approx([local.score] * 2)
    assert {item["router"] for item in batch} == {kind}
    if kind == "domain_prior":  # it names the training domain it takes the query to be from
        assert routing.info["domain"] == local.extra["domain"] and 0.0 < routing.info["domain_probability"] <= 1.0


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_a_configured_threshold_applies(artifacts: dict[str, Path], kind: str) -> None:
    routers = {k: {"artifact": str(p), "threshold": 1.0 if k == kind else None} for k, p in artifacts.items()}
    config = AppConfig.model_validate(app_args(artifacts, routers={"hybrid": None, "automix": None, **routers}))
    vector = query_vector(loaded(artifacts, kind))
    routing = run(Pipelines(config, {}, embedder_returning(vector), None, None).route(kind, "q", [], SamplingParams()))
    assert routing.info["threshold"] == 1.0


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_large_share_uses_the_artifacts_reference_scores(artifacts: dict[str, Path], kind: str) -> None:
    reference = loaded(artifacts, kind).reference_scores()
    assert reference is not None
    pipelines = Pipelines(AppConfig.model_validate(app_args(artifacts)), {}, None, None, None)
    assert run(pipelines.threshold_for_share(kind, 0.2)) == pytest.approx(threshold_for_large_share(reference, 0.2))


# --- quality targets and traffic-quantile shares ---------------------------------------------------------
def test_a_quality_target_uses_the_artifacts_calibration(artifacts: dict[str, Path]) -> None:
    """The shipped MF carries cross-fitted calibration queries: router-mf:quality=0.95 routes with the
    threshold the library picks from them, and says how it was chosen."""
    expected = loaded(artifacts, "mf").threshold_for_quality(0.95)
    assert expected.met and 0.0 < expected.large_share < 1.0
    vector = query_vector(loaded(artifacts, "mf"))
    pipelines = Pipelines(AppConfig.model_validate(app_args(artifacts)), {}, embedder_returning(vector), None, None)
    resolved = run(pipelines.resolve_threshold(RouterChoice(kind="mf", quality_target=0.95)))
    assert resolved.value == expected.threshold
    assert resolved.info["quality_lower_bound"] == expected.ratio_lower_bound >= 0.95
    assert resolved.info["quality_target_met"] is True
    assert resolved.info["threshold_source"].startswith("quality calibration (cross-fit, 5 folds")
    routing = run(pipelines.route("mf", "q", [], SamplingParams(), resolved.value))
    assert routing.info["threshold"] == expected.threshold


def test_a_quality_target_without_calibration_is_a_400_naming_the_fix(artifacts: dict[str, Path]) -> None:
    pipelines = Pipelines(AppConfig.model_validate(app_args(artifacts)), {}, None, None, None)
    with pytest.raises(ApiError) as caught:
        run(pipelines.resolve_threshold(RouterChoice(kind="knn", quality_target=0.9)))
    assert caught.value.status == 400 and "llmrouter calibrate-quality" in caught.value.message


def test_traffic_shares_take_over_once_the_window_has_enough_scores(artifacts: dict[str, Path]) -> None:
    config = AppConfig.model_validate(app_args(artifacts, share_calibration={
        "source": "traffic", "window": 10, "min_scores": 3}))
    router = loaded(artifacts, "knn")
    vectors = [query_vector(router, seed) for seed in range(12)]
    pipelines = Pipelines(config, {}, None, None, None)
    training = threshold_for_large_share(router.reference_scores(), 0.4)
    scores = []
    for vector in vectors[:2]:
        pipelines.embedder = embedder_returning(vector)
        scores.append(run(pipelines.route("knn", "q", [], SamplingParams())).info["score"])
    assert pipelines.share_source("knn") == "training score quantiles"
    assert run(pipelines.threshold_for_share("knn", 0.4)) == pytest.approx(training)
    for vector in vectors[2:]:
        pipelines.embedder = embedder_returning(vector)
        scores.append(run(pipelines.route_only("knn", ["q"], None))[0]["score"])
    assert pipelines.share_source("knn") == "traffic: the last 10 scores"
    assert run(pipelines.threshold_for_share("knn", 0.4)) == pytest.approx(threshold_for_large_share(
        np.array(scores[-10:]), 0.4))
    pipelines.load_routers(config)  # a hot swap: the old router's scores say nothing about the new one
    assert pipelines.share_source("knn") == "training score quantiles"


def test_traffic_shares_make_defended_routers_score_every_window() -> None:
    """The traffic window needs full defended scores; routing on training quantiles skips the windows a
    decision cannot need."""
    defended = {"blend": ROOT / "artifacts" / "blend_defended", "mf": ROOT / "artifacts" / "mf_defended"}
    lazy = Pipelines(AppConfig.model_validate(app_args(defended)), {}, None, None, None)
    exact = Pipelines(AppConfig.model_validate(app_args(defended, share_calibration={"source": "traffic"})),
                      {}, None, None, None)
    for kind in defended:
        assert lazy.embedding_routers[kind].config.defence.windows == "when_needed"
        assert exact.embedding_routers[kind].config.defence.windows == "always"


def test_share_calibration_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="min_scores 50 must not exceed window 20"):
        AppConfig.model_validate(app_args({"mf": MF_ARTIFACT}, share_calibration={"window": 20, "min_scores": 50}))
    with pytest.raises(ValueError, match="source"):
        AppConfig.model_validate(app_args({"mf": MF_ARTIFACT}, share_calibration={"source": "labels"}))


def test_an_embedding_of_the_wrong_size_is_router_unavailable(artifacts: dict[str, Path]) -> None:
    pipelines = Pipelines(AppConfig.model_validate(app_args(artifacts)), {},
                          embedder_returning(np.zeros(7, dtype=np.float32)), None, None)
    with pytest.raises(RouterUnavailable, match="mf MF model failed: .*does not match"):
        run(pipelines.route("mf", "q", [], SamplingParams()))
    with pytest.raises(RouterUnavailable, match="knn kNN bank failed"):
        run(pipelines.route_only("knn", ["a", "b"], None))


def test_a_router_that_is_not_enabled_is_a_404(artifacts: dict[str, Path]) -> None:
    config = AppConfig.model_validate(app_args({"mf": MF_ARTIFACT}))
    pipelines = Pipelines(config, {}, embedder_returning(np.zeros(384)), None, None)
    with pytest.raises(ApiError) as caught:
        run(pipelines.route("knn", "q", [], SamplingParams()))
    assert caught.value.status == 404


# --- hot swap -----------------------------------------------------------------------------------------------
def test_hot_swap_of_an_embedding_routers_threshold_and_artifact(artifacts: dict[str, Path], tmp_path: Path) -> None:
    base = AppConfig.model_validate(app_args(artifacts))
    pipelines = Pipelines(base, {}, None, None, None)
    swapped = merged_config(base, {"routers": {"mf": {"threshold": 0.9}, "knn": {"artifact": str(artifacts["knn"])}}})
    pipelines.load_routers(swapped)
    assert pipelines.thresholds["mf"] == 0.9 and pipelines.thresholds["knn"] is None
    assert merged_config(base, {}).routers.mf.threshold is None  # dropping the override reverts it
    with pytest.raises(ConfigError, match=r"routers\.knn\.artifact: .* holds a 'sw_ranking' router"):
        merged_config(base, {"routers": {"knn": {"artifact": str(artifacts["sw_ranking"])}}})
    with pytest.raises(ValueError, match="unknown key"):
        check_ingress_user_config({"routers": {"sw_ranking": {"thresold": 0.2}}})
    with pytest.raises(ValueError, match="not enabled"):
        merged_config(AppConfig.model_validate(app_args({"mf": MF_ARTIFACT})), {"routers": {"knn": {"threshold": 0.5}}})


# --- the real FastAPI app, in process -------------------------------------------------------------------------
@pytest.fixture
def ingress(artifacts: dict[str, Path]) -> Iterator[Any]:
    """A RouterIngress (the real class) serving the three routers, with an embedder that returns a vector
    of the right size for whichever router asks."""
    cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
    instance = cls(app_args(artifacts), {"small": answer_model(), "large": answer_model()})
    instance.metrics = fake_metrics()
    dims = {router.embedding_dim() for router in instance.pipelines.embedding_routers.values()}
    assert len(dims) == 2  # the shipped MF: 384; the synthetic banks: 16
    instance.pipelines.embedder = Handle(embed_one=lambda q: value(np.ones(16 if "small" in q else 384)),
                                         embed=lambda qs: value(np.ones((len(qs), 16 if "small" in qs[0] else 384))))
    with answering(instance):
        yield instance


def request(method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=ingress_module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, json=body)

    return asyncio.run(go())


def test_the_http_api_serves_the_embedding_routers(ingress: Any) -> None:
    ids = {m["id"] for m in request("GET", "/v1/models").json()["data"]}
    assert {"router-knn", "router-mf", "router-sw_ranking"} <= ids
    route = request("POST", "/v1/route", {"model": "router-mf:share=0.2", "query": "a long question"})
    assert route.status_code == 200, route.text
    item = route.json()["data"][0]
    assert route.json()["router"] == item["router"] == "mf" and item["large_share"] == 0.2
    assert item["threshold_source"] == "training score quantiles"
    quality = request("POST", "/v1/chat/completions", {"model": "router-mf:quality=0.9", "max_tokens": 4,
                                                       "messages": [{"role": "user", "content": "a question"}]})
    assert quality.status_code == 200, quality.text
    routing = quality.json()["routing"]
    assert routing["quality_target"] == 0.9 and routing["quality_lower_bound"] >= 0.9
    mf = ingress.pipelines.embedding_routers["mf"]
    assert routing["threshold"] == pytest.approx(mf.threshold_for_quality(0.9).threshold)
    routellm = request("POST", "/v1/route", {"model": "router-mf-0.5", "query": "a long question"}).json()["data"][0]
    assert routellm["router"] == "mf" and routellm["routellm_threshold"] == 0.5
    assert routellm["threshold"] == np.nextafter(0.5, 1.0) and routellm["use_large"] == (routellm["score"] <= 0.5)
    uncalibrated = request("POST", "/v1/route", {"model": "router-knn:quality=0.9", "query": "small one"})
    assert uncalibrated.status_code == 400 and uncalibrated.json()["error"]["param"] == "model"
    assert item["use_large"] == (item["score"] < item["threshold"])
    for kind in ("knn", "sw_ranking"):
        chat = request("POST", "/v1/chat/completions", {"model": f"router-{kind}:0.0", "max_tokens": 4,
                                                        "messages": [{"role": "user", "content": "small one"}]})
        assert chat.status_code == 200, chat.text
        routing = chat.json()["routing"]
        assert routing["router"] == kind and routing["fallback"] is False and routing["threshold"] == 0.0
        assert routing["model_key"] == ("large" if routing["use_large"] else "small")
        assert routing["use_large"] == (routing["score"] < 0.0)
    missing = request("POST", "/v1/route", {"model": "router-nope", "query": "q"})
    assert missing.status_code == 404 and "unknown router 'nope'" in missing.json()["error"]["message"]
