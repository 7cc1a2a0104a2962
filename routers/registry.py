"""One registry of routers: the names users type in configs, the CLI and the HTTP API.

Each ``RouterEntry`` carries everything any other place needs to know about a router by name: its
library class, its aliases, the name it is served under (``router-<serve_name>``), whether it takes a
threshold, and where the Serve app runs it (scored in the ingress from the query embedding, in a
deployment of its own with its model, or in the ingress over the answer models). The Serve config, the
``model``-field grammar, hot swap and the pipelines all derive their router lists from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Literal

from routers.errors import ConfigError

if TYPE_CHECKING:
    from routers.base import Router
    from routers.nmodel.base import MultiModelRouter

#: where the Serve app decides: ``embedding`` (Embedder deployment, then the library router scores the
#: vector in the ingress), ``deployment`` (a deployment of its own hosts the router and its model),
#: ``ingress`` (the ingress runs it over the answer models: AutoMix), ``baseline`` (no artifact, always on),
#: ``evaluation`` (not served: needs labels), ``multimodel`` (N-model routers, ``routers.nmodel``: the library
#: and the CLI; not served yet)
Placement = Literal["embedding", "deployment", "ingress", "baseline", "evaluation", "multimodel"]


@dataclass(frozen=True)
class RouterEntry:
    name: str
    #: "module:Class", imported lazily so `llmrouter evaluate --router random` never loads torch models
    target: str
    placement: Placement
    aliases: tuple[str, ...] = ()
    #: the name in ``router-<serve_name>`` and in the serve config's ``routers`` block
    serve_name: str | None = None
    #: why ``router-X:T`` / ``:share=`` / ``:quality=`` do not apply (None: they do)
    no_threshold: str | None = None
    #: the Serve deployment hosting it (``placement == "deployment"``)
    deployment: str | None = None
    #: what scores the query, as error messages name it ("hybrid MLP failed: ...")
    scorer: str = "router"
    #: how to retrain its artifact for another embedder (embedding routers)
    retrain: str = ""
    #: the name RouteLLM's clients send for it (``router-<routellm_name>-<threshold>``)
    routellm_name: str | None = None

    @property
    def takes_threshold(self) -> bool:
        return self.no_threshold is None


def _retrain_with_cli(router: str) -> str:
    return f"llmrouter train --router {router} --config configs/routers/{router}.yaml (with engines.embedder set to it)"


#: why an N-model router takes no threshold
BY_SELECTION_RULE = "chooses among N models by a selection rule (cost=, quality=, budget=, share=)"

_ENTRIES: tuple[RouterEntry, ...] = (
    RouterEntry("hybrid_llm", "routers.hybrid.router:HybridLLMRouter", "embedding", ("hybrid",), "hybrid",
                scorer="MLP",
                retrain="python -m train_jobs.hybrid --config <a train config whose router config names it>"),
    RouterEntry("knn", "routers.knn.router:KNNRouter", "embedding", serve_name="knn", scorer="kNN bank",
                retrain=_retrain_with_cli("knn")),
    RouterEntry("mf", "routers.mf.router:MatrixFactorizationRouter", "embedding", ("matrix_factorization",),
                "mf", scorer="MF model", retrain=_retrain_with_cli("mf"), routellm_name="mf"),
    RouterEntry("sw_ranking", "routers.sw_ranking.router:SWRankingRouter", "embedding", ("similarity_weighted",),
                "sw_ranking", scorer="SW-ranking bank", retrain=_retrain_with_cli("sw_ranking"),
                routellm_name="sw_ranking"),
    RouterEntry("blend", "routers.blend.router:BlendRouter", "embedding", serve_name="blend", scorer="blend heads",
                retrain=_retrain_with_cli("blend")),
    RouterEntry("domain_prior", "routers.domain_prior.router:DomainPriorRouter", "embedding", ("domain",),
                "domain_prior", scorer="domain prior", retrain=_retrain_with_cli("domain_prior")),
    RouterEntry("automix", "routers.automix.router:AutomixRouter", "ingress", serve_name="automix",
                scorer="AutoMix decision"),
    RouterEntry("causallm_router", "routers.causal_lm.router:CausalLMRouter", "deployment", ("causal", "causal_lm"),
                "causal", deployment="CausalLMRouter", routellm_name="causal_llm"),
    RouterEntry("policy_router", "routers.policy.router:PolicyRouter", "deployment", ("policy",), "policy",
                no_threshold="decides by policy label and policy map, not by a score", deployment="PolicyRouter"),
    RouterEntry("bert", "routers.bert.router:BertRouter", "deployment", ("bert_classifier",), "bert",
                deployment="BertRouter", routellm_name="bert"),
    RouterEntry("smallest_llm", "routers.baselines:SmallestLLMRouter", "baseline", ("smallest",), "smallest",
                no_threshold="always answers with the small model"),
    RouterEntry("largest_llm", "routers.baselines:LargestLLMRouter", "baseline", ("largest",), "largest",
                no_threshold="always answers with the large model"),
    RouterEntry("random", "routers.baselines:RandomRouter", "baseline", serve_name="random", routellm_name="random"),
    RouterEntry("oracle", "routers.baselines:OracleRouter", "evaluation"),
    # N-model routers (``routers.nmodel``): they predict every candidate's quality; ``routers.selection`` picks
    RouterEntry("nmodel_mlp", "routers.nmodel.routers:MultiModelMLPRouter", "multimodel", ("mlp_n",),
                no_threshold=BY_SELECTION_RULE,
                scorer="multi-output MLP"),
    RouterEntry("nmodel_mf", "routers.nmodel.routers:MultiModelMFRouter", "multimodel", ("mf_n",),
                no_threshold=BY_SELECTION_RULE,
                scorer="matrix factorisation"),
    RouterEntry("nmodel_knn", "routers.nmodel.routers:MultiModelKNNRouter", "multimodel", ("knn_n",),
                no_threshold=BY_SELECTION_RULE,
                scorer="kNN bank"),
    RouterEntry("nmodel_blend", "routers.nmodel.routers:MultiModelBlendRouter", "multimodel", ("blend_n",),
                no_threshold=BY_SELECTION_RULE,
                scorer="MLP + kNN blend"),
    RouterEntry("nmodel_causal", "routers.nmodel.causal:MultiModelCausalLMRouter", "multimodel", ("causal_n",),
                no_threshold=BY_SELECTION_RULE,
                scorer="causal-LM name scorer"),
    RouterEntry("nmodel_desc", "routers.nmodel.description:DescriptionRouter", "multimodel", ("desc_n",),
                no_threshold=BY_SELECTION_RULE,
                scorer="query x model-description MLP"),
    RouterEntry("nmodel_single", "routers.nmodel.routers:PriorRouter", "multimodel", ("single_n",),
                no_threshold="the same model for every query, chosen by the rule from training quality"),
    RouterEntry("nmodel_random", "routers.nmodel.routers:MultiModelRandomRouter", "multimodel", ("random_n",),
                no_threshold="random predicted qualities"),
    RouterEntry("nmodel_oracle", "routers.nmodel.routers:MultiModelOracleRouter", "multimodel", ("oracle_n",),
                no_threshold="reads the labels: evaluation only"),
)
_BY_NAME = {entry.name: entry for entry in _ENTRIES}
ALIASES: dict[str, str] = {alias: entry.name for entry in _ENTRIES for alias in entry.aliases}


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in _BY_NAME:
        known = sorted(set(_BY_NAME) | set(ALIASES))
        raise ConfigError(f"unknown router {name!r}; known routers: {', '.join(known)}")
    return key


def router_entry(name: str) -> RouterEntry:
    return _BY_NAME[canonical_name(name)]


def router_class(name: str) -> type[Router]:
    entry = router_entry(name)
    if entry.placement == "multimodel":
        raise ConfigError(f"router {name!r} chooses among N models: it evaluates on N-model data "
                          "(`llmrouter evaluate --pool llmrouter|routerbench`), see routers.nmodel")
    module_name, class_name = entry.target.split(":")
    return getattr(import_module(module_name), class_name)


def is_multimodel(name: str) -> bool:
    """Whether ``name`` is an N-model router (``routers.nmodel``), not a two-model one."""
    return router_entry(name).placement == "multimodel"


def multimodel_router_class(name: str) -> type[MultiModelRouter]:
    """The N-model router class registered as ``name``; a clear error for a two-model router."""
    entry = router_entry(name)
    if entry.placement != "multimodel":
        known = sorted(e.name for e in _ENTRIES if e.placement == "multimodel")
        raise ConfigError(f"router {name!r} chooses between two models; N-model routers: {', '.join(known)}")
    module_name, class_name = entry.target.split(":")
    return getattr(import_module(module_name), class_name)


def router_names() -> list[str]:
    """The two-model routers (``Router`` subclasses); ``multimodel_router_names`` lists the N-model ones."""
    return [entry.name for entry in _ENTRIES if entry.placement != "multimodel"]


def multimodel_router_names() -> list[str]:
    return [entry.name for entry in _ENTRIES if entry.placement == "multimodel"]


def served_entries(*placements: Placement) -> dict[str, RouterEntry]:
    """Served routers by serve name, in registry order; only the given placements when any are named."""
    return {entry.serve_name: entry for entry in _ENTRIES
            if entry.serve_name is not None and (not placements or entry.placement in placements)}


_SERVED = served_entries()


def served_entry(serve_name: str) -> RouterEntry:
    """The entry served as ``serve_name`` (the ingress asks on every request: a lookup, not a scan)."""
    entry = _SERVED.get(serve_name)
    if entry is None:
        raise ConfigError(f"no router is served as {serve_name!r}; served: {sorted(_SERVED)}")
    return entry


def routellm_names() -> dict[str, str]:
    """RouteLLM's router names -> our serve names."""
    return {entry.routellm_name: entry.serve_name for entry in _ENTRIES
            if entry.routellm_name is not None and entry.serve_name is not None}
