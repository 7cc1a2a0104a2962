"""Training labels of the causal-LM router: which candidate was best on each query, as text to learn.

Definition: the *best LLM* of a query is the candidate with the highest performance on it; among
candidates that tie (both right, or both wrong) the cheapest wins, because paying more for the same
quality is never better. The router model learns to complete ``ROUTER_PROMPT`` with that name.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routers.data import LLMCandidate, QueryExample, RoutingDataset, order_by_cost

ROUTER_PROMPT = "Query: {query}\n\nBest LLM: "


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: the model reads ``prompt`` and is trained to write ``completion``."""

    prompt: str
    completion: str


def router_prompt(query: str) -> str:
    """The raw routing prompt (no chat template): ``Query: {query}\\n\\nBest LLM: ``."""
    return ROUTER_PROMPT.format(query=query)


def training_text(query: str, name: str, eos_token: str) -> str:
    """Full training sequence: prompt + best model's name + end-of-sequence."""
    return router_prompt(query) + name + eos_token


def candidates_by_cost(candidates: Sequence[str], llm_data: Mapping[str, LLMCandidate] | None) -> list[str]:
    """``candidates`` cheapest first; without prices for all of them, their given order is kept."""
    if llm_data and all(name in llm_data for name in candidates):
        ranked = order_by_cost({name: llm_data[name] for name in candidates})
        return list(ranked)
    return list(candidates)


def best_llm(example: QueryExample, candidates_cheapest_first: Sequence[str]) -> str:
    """Highest-performance candidate; the first (cheapest) of the tied best ones."""
    answered = [name for name in candidates_cheapest_first if name in example.outcomes]
    if not answered:
        raise ValueError(f"no outcome for any of {list(candidates_cheapest_first)} on query {example.query[:60]!r}")
    best_score = max(example.performance(name) for name in answered)
    return next(name for name in answered if example.performance(name) == best_score)


def best_llm_labels(data: RoutingDataset, candidates: Sequence[str]) -> list[str]:
    """Best LLM of every query of ``data`` (queries must have outcomes for the candidates)."""
    ordered = candidates_by_cost(candidates, data.llm_data)
    return [best_llm(example, ordered) for example in data.examples]


def balanced_indices(labels: Sequence[str], max_examples: int | None, seed: int = 0) -> list[int]:
    """Indices of a label-balanced-ish subset of at most ``max_examples``.

    Each label gets an equal share; a label with fewer examples than its share gives its leftover room
    to the others, so the subset is as balanced as the data allows and as large as asked.
    """
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    for indices in by_label.values():
        rng.shuffle(indices)
    budget = len(labels) if max_examples is None else min(max_examples, len(labels))
    chosen: list[int] = []
    groups = sorted(by_label.values(), key=len)
    for position, indices in enumerate(groups):
        share = (budget - len(chosen)) // (len(groups) - position)
        chosen.extend(indices[:share])
    chosen.sort()
    return chosen


def sft_examples(data: RoutingDataset, candidates: Sequence[str]) -> list[SFTExample]:
    """(routing prompt, best LLM name) of every query; the trainer appends the tokenizer's EOS."""
    labels = best_llm_labels(data, candidates)
    return [SFTExample(router_prompt(ex.query), label) for ex, label in zip(data.examples, labels)]
