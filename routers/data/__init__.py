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
from routers.data.location import DATA_ENV, data_dir, find_data_dir
from routers.data.multimodel import (
    MultiModelDataset,
    PublishedLoadReport,
    estimated_call_cost,
    load_llmrouter,
    load_routerbench,
    read_llmrouter_scores,
    read_multimodel,
    read_routerbench_csv,
    read_routing_jsonl,
)
from routers.data.schema import (
    CompactRecord,
    LLMCandidate,
    ModelOutcome,
    QueryExample,
    RoutingRecord,
    parse_model_size,
)

__all__ = [
    "DATA_ENV",
    "CompactRecord",
    "IncompleteDataWarning",
    "LLMCandidate",
    "LoadReport",
    "ModelOutcome",
    "ModelPair",
    "MultiModelDataset",
    "PublishedLoadReport",
    "QueryExample",
    "RoutingDataset",
    "RoutingRecord",
    "data_dir",
    "estimate_tokens",
    "estimated_call_cost",
    "find_data_dir",
    "iter_jsonl",
    "load_llm_data",
    "load_llmrouter",
    "load_routerbench",
    "order_by_cost",
    "parse_model_size",
    "read_llmrouter_scores",
    "read_multimodel",
    "read_queries",
    "read_routerbench_csv",
    "read_routing_examples",
    "read_routing_jsonl",
    "resolve_pair",
]
