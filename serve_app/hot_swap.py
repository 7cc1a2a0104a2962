"""Hot swap of router artifacts and thresholds: what the Ingress ``user_config`` may hold, and the config it
makes. The ``user_config`` is ``{routers: {hybrid: {artifact, threshold}, automix: {artifact, threshold},
causal: {threshold}, multimodel: {<name>: {artifact, model_map, rule, completion_tokens}}}}`` (every
embedding router, ``knn`` / ``mf`` / ``sw_ranking``, takes what ``hybrid`` takes; an N-model router is
swapped by the name it is served under, and must already be served), merged onto the config the app was
started with, so dropping a key reverts it (deploy
``user_config: {}`` to drop them all: Serve does not call ``reconfigure`` when ``user_config`` is removed).
Router-model artifacts and the policy map belong to the ``user_config`` of the ``CausalLMRouter`` /
``PolicyRouter`` deployments; the ingress rejects them rather than ignore them."""

from __future__ import annotations

from typing import Any

from routers.registry import RouterEntry, served_entries
from serve_app.config import ROUTER_DEPLOYMENTS, AppConfig, MultiModelRouterSpec


def ingress_keys(entry: RouterEntry) -> set[str]:
    """What the ingress can swap for a router: the artifact of one it loads itself (embedding routers,
    AutoMix; a router in its own deployment swaps its artifact there), and a threshold if it takes one."""
    keys = set() if entry.placement == "deployment" else {"artifact"}
    return keys | ({"threshold"} if entry.takes_threshold else set())


INGRESS_ROUTER_KEYS = {kind: ingress_keys(entry)
                       for kind, entry in served_entries("embedding", "ingress", "deployment").items()}
#: what an N-model router (``routers.multimodel.<name>``) can swap: all of its spec
MULTIMODEL_KEYS = set(MultiModelRouterSpec.model_fields)


def check_multimodel_overrides(specs: Any) -> None:
    """``routers.multimodel``: a mapping of served name -> overrides of that router's spec."""
    if not isinstance(specs, dict):
        raise TypeError("Ingress user_config.routers.multimodel must be a mapping of N-model router name -> overrides")
    for name, spec in specs.items():
        if not isinstance(spec, dict):
            raise TypeError(f"Ingress user_config.routers.multimodel.{name} must be a mapping")
        unknown = sorted(set(spec) - MULTIMODEL_KEYS)
        if unknown:
            raise ValueError(f"Ingress user_config.routers.multimodel.{name}: unknown key(s) {unknown}; "
                             f"allowed: {sorted(MULTIMODEL_KEYS)}")


def check_ingress_user_config(user_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``routers`` overrides, after rejecting anything the ingress cannot apply (never ignore it)."""
    if not isinstance(user_config, dict):
        raise TypeError(f"Ingress user_config must be a mapping, got {type(user_config).__name__}")
    unknown = sorted(set(user_config) - {"routers"})
    if unknown:
        raise ValueError(f"Ingress user_config: unknown key(s) {unknown}; it takes only 'routers'")
    routers = user_config.get("routers") or {}
    if not isinstance(routers, dict):
        raise TypeError("Ingress user_config.routers must be a mapping of router kind -> overrides")
    for kind, spec in routers.items():
        if kind == "multimodel":
            check_multimodel_overrides(spec)
            continue
        if kind not in INGRESS_ROUTER_KEYS:
            raise ValueError(f"Ingress user_config.routers.{kind}: unknown router; "
                             f"known: {sorted([*INGRESS_ROUTER_KEYS, 'multimodel'])}")
        if not isinstance(spec, dict):
            raise TypeError(f"Ingress user_config.routers.{kind} must be a mapping")
        rejected = sorted(set(spec) - INGRESS_ROUTER_KEYS[kind])
        no_threshold = served_entries()[kind].no_threshold
        if no_threshold and "threshold" in rejected:
            raise ValueError(f"Ingress user_config.routers.{kind}.threshold: the {kind} router takes no threshold "
                             f"(it {no_threshold})")
        if rejected and kind in ROUTER_DEPLOYMENTS:
            raise ValueError(f"Ingress user_config.routers.{kind}: {rejected} cannot be applied by the ingress; set "
                             f"them in the user_config of the {ROUTER_DEPLOYMENTS[kind]} deployment")
        if rejected:
            raise ValueError(f"Ingress user_config.routers.{kind}: unknown key(s) {rejected}; "
                             f"allowed: {sorted(INGRESS_ROUTER_KEYS[kind])}")
    return routers


def merged_config(base: AppConfig, user_config: dict[str, Any]) -> AppConfig:
    """``base`` (the config the app started with) with the user_config overrides on top, paths resolved."""
    merged = base.model_dump()
    for kind, spec in check_ingress_user_config(user_config).items():
        if kind == "multimodel":
            merge_multimodel(merged["routers"]["multimodel"], spec)
            continue
        if merged["routers"].get(kind) is None:
            raise ValueError(f"Ingress user_config.routers.{kind}: router not enabled in this app")
        merged["routers"][kind].update(spec)
    return AppConfig.model_validate(merged).resolved()


def merge_multimodel(served: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]) -> None:
    """Each override onto the N-model router it names, which the app must already serve (a new name would be
    a new ``router-<name>`` the app was not started with; add it to the config instead)."""
    for name, spec in overrides.items():
        if name not in served:
            raise ValueError(f"Ingress user_config.routers.multimodel.{name}: not served by this app "
                             f"(serving: {sorted(served)}); add it to the config the app starts with")
        served[name].update(spec)
