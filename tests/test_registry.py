"""The one router vocabulary: every served name, alias, placement and threshold rule comes from the registry."""

from __future__ import annotations

import pytest

from routers.base import Router
from routers.embedding import EmbeddingRouter
from routers.errors import ConfigError
from routers.registry import canonical_name, routellm_names, router_class, router_entry, served_entries, served_entry
from serve_app.api import NO_THRESHOLD, ROUTELLM_ROUTERS, parse_model_field
from serve_app.config import BASELINE_KINDS, EMBEDDING_ROUTER_KINDS, ROUTER_DEPLOYMENTS, ROUTER_KINDS, RoutersSpec
from serve_app.deployments import router_models
from serve_app.hot_swap import INGRESS_ROUTER_KEYS


def test_every_served_router_with_an_artifact_has_a_config_block_and_baselines_need_none() -> None:
    assert set(RoutersSpec.model_fields) == set(ROUTER_KINDS)
    assert set(BASELINE_KINDS) == {"smallest", "largest", "random"}
    assert not set(BASELINE_KINDS) & set(ROUTER_KINDS)


def test_placements_match_the_library_classes() -> None:
    for kind, entry in served_entries().items():
        cls = router_class(entry.name)
        assert issubclass(cls, Router) and canonical_name(kind) == entry.name, kind
        assert issubclass(cls, EmbeddingRouter) == (entry.placement == "embedding"), kind
    assert set(EMBEDDING_ROUTER_KINDS) == {k for k, e in served_entries().items() if e.placement == "embedding"}


def test_each_deployment_router_has_its_deployment_class() -> None:
    classes = {cls.deployment_name: cls for cls in (router_models.CausalLMRouterDeployment.func_or_class,
                                                    router_models.PolicyRouterDeployment.func_or_class,
                                                    router_models.BertRouterDeployment.func_or_class)}
    assert set(ROUTER_DEPLOYMENTS.values()) == set(classes)
    for kind, deployment in ROUTER_DEPLOYMENTS.items():
        assert classes[deployment].router_name == served_entry(kind).name


def test_threshold_rules_and_hot_swap_keys_derive_from_the_entries() -> None:
    assert set(NO_THRESHOLD) == {"smallest", "largest", "policy"}
    assert INGRESS_ROUTER_KEYS["policy"] == set() and INGRESS_ROUTER_KEYS["causal"] == {"threshold"}
    assert INGRESS_ROUTER_KEYS["hybrid"] == INGRESS_ROUTER_KEYS["automix"] == {"artifact", "threshold"}
    assert set(INGRESS_ROUTER_KEYS) == set(ROUTER_KINDS)


def test_routellm_names_map_onto_served_routers() -> None:
    assert ROUTELLM_ROUTERS == routellm_names() == {"mf": "mf", "sw_ranking": "sw_ranking", "bert": "bert",
                                                    "causal_llm": "causal", "random": "random"}
    choice = parse_model_field("router-causal_llm-0.3", ["causal"], {})
    assert choice.kind == "causal" and choice.routellm_threshold == 0.3


def test_unknown_names_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="known routers"):
        router_entry("nope")
    with pytest.raises(ConfigError, match="no router is served as 'oracle'"):
        served_entry("oracle")  # evaluation only: it needs the labels
