"""Routing data: schemas, loaders and the per-query dataset view."""

from routers.data.dataset import (
    IncompleteDataWarning,
    ModelPair,
    RoutingDataset,
    estimate_tokens,
    order_by_cost,
    resolve_pair,
)
from routers.data.loaders import LoadReport, iter_jsonl, load_llm_data, read_queries, read_routing_examples
from routers.data.schema import (
    CompactRecord,
    LLMCandidate,
    ModelOutcome,
    QueryExample,
    RoutingRecord,
    parse_model_size,
)

__all__ = [
    "CompactRecord",
    "IncompleteDataWarning",
    "LLMCandidate",
    "LoadReport",
    "ModelOutcome",
    "ModelPair",
    "QueryExample",
    "RoutingDataset",
    "RoutingRecord",
    "estimate_tokens",
    "iter_jsonl",
    "load_llm_data",
    "order_by_cost",
    "parse_model_size",
    "read_queries",
    "read_routing_examples",
    "resolve_pair",
]
