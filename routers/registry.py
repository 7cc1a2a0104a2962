"""One registry of routers: the names users type in configs, the CLI and the HTTP API."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from routers.errors import ConfigError

if TYPE_CHECKING:
    from routers.base import Router

# name -> "module:Class"; imported lazily so `llmrouter evaluate --router random` never loads torch models.
_ROUTERS: dict[str, str] = {
    "hybrid_llm": "routers.hybrid.router:HybridLLMRouter",
    "automix": "routers.automix.router:AutomixRouter",
    "causallm_router": "routers.causal_lm.router:CausalLMRouter",
    "policy_router": "routers.policy.router:PolicyRouter",
    "knn": "routers.knn.router:KNNRouter",
    "mf": "routers.mf.router:MatrixFactorizationRouter",
    "bert": "routers.bert.router:BertRouter",
    "sw_ranking": "routers.sw_ranking.router:SWRankingRouter",
    "blend": "routers.blend.router:BlendRouter",
    "smallest_llm": "routers.baselines:SmallestLLMRouter",
    "largest_llm": "routers.baselines:LargestLLMRouter",
    "random": "routers.baselines:RandomRouter",
    "oracle": "routers.baselines:OracleRouter",
}

ALIASES: dict[str, str] = {
    "hybrid": "hybrid_llm",
    "causal": "causallm_router",
    "causal_lm": "causallm_router",
    "policy": "policy_router",
    "matrix_factorization": "mf",
    "bert_classifier": "bert",
    "similarity_weighted": "sw_ranking",
    "smallest": "smallest_llm",
    "largest": "largest_llm",
}


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in _ROUTERS:
        known = sorted(set(_ROUTERS) | set(ALIASES))
        raise ConfigError(f"unknown router {name!r}; known routers: {', '.join(known)}")
    return key


def router_class(name: str) -> type[Router]:
    module_name, class_name = _ROUTERS[canonical_name(name)].split(":")
    return getattr(import_module(module_name), class_name)


def router_names() -> list[str]:
    return list(_ROUTERS)
