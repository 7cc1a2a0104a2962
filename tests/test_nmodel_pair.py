"""Two models through the N-model contract (``routers.nmodel.pair``): the shipped two-model artifacts decide
exactly as they do on their own for every threshold rule (a threshold, default, share=, quality=, RouteLLM's
names), and cost= / budget= are the N-model rules on (s, 1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from routers.base import read_artifact_manifest
from routers.engines import EmbedderConfig, Engines, build_embedder
from routers.errors import ConfigError
from routers.nmodel.pair import PairRouter, ThresholdRule, parse_pair_rule, routellm_threshold
from routers.registry import router_class
from routers.selection import CostRule, ShareRule, select
from tests.shipped_routing import Memo, sample_test_split

ROOT = Path(__file__).resolve().parents[1]
MINILM = ROOT / "models" / "all-minilm-l6-v2"
#: the artifacts the shipped app serves, and two undefended ones
SHIPPED = ["hybrid_llm_defended", "blend_defended", "mf_defended", "domain_prior_defended", "hybrid_llm", "mf"]
#: the rules that name a threshold, as the HTTP API's ``model`` field spells them after ``router-X:``
THRESHOLD_RULES = [None, "default", "0.35", "0.6", "share=0.3", "share=0.05", "quality=0.95", "quality=0.9"]


# --- fast ------------------------------------------------------------------------------------------------
def test_a_bare_number_is_a_threshold_and_the_rest_are_selection_rules() -> None:
    assert parse_pair_rule("0.4") == ThresholdRule(value=0.4)
    assert parse_pair_rule("cost=2") == CostRule(weight=2.0)
    assert parse_pair_rule("share=0.3") == ShareRule(share=0.3)
    assert parse_pair_rule(None).kind == "default"
    with pytest.raises(ConfigError, match="finite"):
        parse_pair_rule("nan")
    with pytest.raises(ConfigError, match="cost=L"):
        parse_pair_rule("threshold")


def test_routellm_names_map_as_the_api_maps_them() -> None:
    from serve_app.api import routellm_choice

    for theta in (0.0, 0.11593, 0.5, 1.0):
        choice = routellm_choice("mf", str(theta), ["mf"], f"router-mf-{theta}")
        assert choice.threshold == routellm_threshold("mf", theta)
        # RouteLLM: strong iff 1 - s >= theta; ours: large iff s < threshold
        s = 1.0 - theta
        assert s < routellm_threshold("mf", theta)
    assert routellm_threshold("random", 0.3) == pytest.approx(0.7)


def test_a_router_without_a_score_is_refused() -> None:
    with pytest.raises(ConfigError, match="no score to read as quality"):
        PairRouter(router_class("smallest_llm")())


# --- the shipped artifacts (real MiniLM) -------------------------------------------------------------------
needs_minilm = pytest.mark.skipif(not (MINILM / "model.safetensors").exists(),
                                  reason="models/all-minilm-l6-v2 missing: run bash scripts/setup.sh")


@pytest.fixture(scope="module")
def engines() -> Engines:
    return Engines(embedder=Memo(build_embedder(EmbedderConfig(model=str(MINILM), backend="onnx", num_threads=2))))


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return sample_test_split(160, seed=1)


def load(name: str):
    directory = ROOT / "artifacts" / name
    return router_class(read_artifact_manifest(directory)["router"]).load(directory)


def own_threshold(router, rule: str | None) -> float:
    """The threshold today's two-model path uses for ``router-X:<rule>`` (serve_app/pipelines.py)."""
    from routers.evaluation.calibrate import threshold_for_large_share

    if rule is None or rule == "default":
        return router.threshold
    if rule.startswith("share="):
        return threshold_for_large_share(router.reference_scores(), float(rule[6:]))
    if rule.startswith("quality="):
        return router.quality_calibration.threshold(float(rule[8:])).threshold
    return float(rule)


@pytest.mark.slow
@needs_minilm
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_artifacts_decide_identically_through_the_n_model_contract(
        name: str, engines: Engines, queries: list[str]) -> None:
    router = load(name)
    pair = PairRouter(router)
    rules = [*THRESHOLD_RULES]
    expected_rules = {rule: own_threshold(router, rule) for rule in rules}
    if name.startswith("mf"):  # RouteLLM's router-mf-0.11593: the pair takes the mapped threshold as a rule
        theta = 0.11593
        rules.append(repr(routellm_threshold("mf", theta)))
        expected_rules[rules[-1]] = routellm_threshold("mf", theta)
    large_shares = set()
    for rule in rules:
        own = asyncio.run(router.aroute_many(queries, engines, expected_rules[rule]))
        through = asyncio.run(pair.aroute_many(queries, engines, rule))
        assert [d.model_name for d in through] == [d.model_name for d in own], (name, rule)
        assert [d.use_large for d in through] == [d.use_large for d in own], (name, rule)
        assert [c.model for c in through[0].candidates] == list(pair.models)
        assert all(d.candidates[1].quality == 1.0 and d.candidates[0].quality == d.score for d in through)
        large_shares.add(round(float(np.mean([d.use_large for d in own])), 3))
    assert len(large_shares) >= 3, f"{name}: the rules should span several operating points, got {large_shares}"


@pytest.mark.slow
@needs_minilm
def test_cost_and_budget_are_the_n_model_rules_on_s_and_1(engines: Engines, queries: list[str]) -> None:
    router = load("hybrid_llm")  # undefended: every decision's score is the exact score
    pair = PairRouter(router)
    scores = np.array([d.score for d in asyncio.run(router.aroute_many(queries, engines, 0.5))])
    costs = pair.estimate_costs(queries)
    quality = np.column_stack([scores, np.ones_like(scores)])
    gap = float(np.mean(costs[:, 1] - costs[:, 0]))
    for weight in (0.1 / gap, 0.5 / gap, 0.9 / gap):
        chosen = select(quality, costs, CostRule(weight=weight))
        through = asyncio.run(pair.aroute_many(queries, engines, f"cost={weight!r}"))
        assert [int(d.use_large) for d in through] == chosen.tolist()
        assert 0 < chosen.sum() < len(chosen)
    budget = float(np.median(costs[:, 1]))
    through = asyncio.run(pair.aroute_many(queries, engines, f"budget={budget!r}"))
    assert [d.use_large for d in through] == (costs[:, 1] <= budget).tolist()
