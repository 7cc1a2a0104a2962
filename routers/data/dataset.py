"""The in-memory routing dataset every router trains and is evaluated on."""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routers.data.loaders import DuplicatePolicy, LoadReport, read_routing_examples
from routers.data.schema import LLMCandidate, QueryExample
from routers.errors import ConfigError, DataError

# Used to price a call when the data has no token counts: about 4 characters per token for English.
CHARS_PER_TOKEN = 4.0


class IncompleteDataWarning(UserWarning):
    """Some queries lack an outcome for a model a router needs; they are left out of fit / evaluation."""


def estimate_tokens(text: str | None) -> int:
    return 0 if not text else max(1, round(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class ModelPair:
    """The cheap and the strong model a two-model router chooses between."""

    small: str
    large: str

    def name_for(self, use_large: bool) -> str:
        return self.large if use_large else self.small


def order_by_cost(candidates: dict[str, LLMCandidate]) -> list[str]:
    """Candidates from cheapest to most expensive.

    By parameter count when every candidate has a size; otherwise by price (input + output per 1M
    tokens), because a published price is the cost users pay and some sizes are not published.
    """
    names = list(candidates)
    sizes = [candidates[n].parameters for n in names]
    if all(size is not None for size in sizes):
        return [n for _, n in sorted(zip(sizes, names))]
    return sorted(names, key=lambda n: (candidates[n].input_price + candidates[n].output_price, n))


def resolve_pair(
    candidates: dict[str, LLMCandidate] | None,
    available: Sequence[str],
    small: str | None = None,
    large: str | None = None,
) -> ModelPair:
    """Pick (small, large): named explicitly, else cheapest and dearest of ``llm_data``, else by data order."""
    if candidates:
        ordered = [n for n in order_by_cost(candidates) if n in available] or order_by_cost(candidates)
    else:
        ordered = list(available)
    if len(ordered) < 2 and not (small and large):
        raise ConfigError(f"need two candidate models to route between, found {ordered}")
    pair = ModelPair(small=small or ordered[0], large=large or ordered[-1])
    if pair.small == pair.large:
        raise ConfigError(f"small and large model are the same: {pair.small!r}")
    return pair


class RoutingDataset:
    """Per-query outcomes of several models, with the helpers routers and metrics need."""

    def __init__(
        self,
        examples: Sequence[QueryExample],
        llm_data: dict[str, LLMCandidate] | None = None,
        reports: Sequence[LoadReport] = (),
    ) -> None:
        self.examples: list[QueryExample] = list(examples)
        self.llm_data = llm_data or {}
        self.reports = list(reports)

    @classmethod
    def from_files(
        cls,
        paths: str | Path | Iterable[str | Path],
        llm_data: dict[str, LLMCandidate] | None = None,
        on_duplicate: DuplicatePolicy = "first",
    ) -> RoutingDataset:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        examples: list[QueryExample] = []
        reports: list[LoadReport] = []
        for path in paths:
            loaded, report = read_routing_examples(path, on_duplicate=on_duplicate)
            examples.extend(loaded)
            reports.append(report)
        return cls(examples, llm_data, reports)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> QueryExample:
        return self.examples[index]

    @property
    def queries(self) -> list[str]:
        return [ex.query for ex in self.examples]

    @property
    def models(self) -> list[str]:
        """Every model that appears, in first-seen order."""
        seen: dict[str, None] = {}
        for ex in self.examples:
            for name in ex.outcomes:
                seen.setdefault(name, None)
        return list(seen)

    def load_summary(self) -> str:
        return "\n".join(report.summary() for report in self.reports)

    def pair(self, small: str | None = None, large: str | None = None) -> ModelPair:
        return resolve_pair(self.llm_data, self.models, small, large)

    def missing_counts(self, models: Sequence[str]) -> dict[str, int]:
        """For each of ``models``, how many queries have no outcome for it."""
        return {m: sum(m not in ex.outcomes for ex in self.examples) for m in models}

    def incomplete_count(self, models: Sequence[str]) -> int:
        """Queries lacking an outcome for at least one of ``models``."""
        return sum(not all(m in ex.outcomes for m in models) for ex in self.examples)

    def coverage_summary(self, models: Sequence[str]) -> str:
        """One line for ``--verbose``: how many queries a router on ``models`` can use, and why not the rest."""
        skipped = self.incomplete_count(models)
        text = f"{len(self) - skipped} of {len(self)} queries have outcomes for all of {list(models)}"
        if skipped:
            missing = ", ".join(f"{m}: {n}" for m, n in self.missing_counts(models).items() if n)
            text += f"; {skipped} left out (missing outcomes per model: {missing})"
        return text

    def complete_for(self, models: Sequence[str], warn: bool = True) -> RoutingDataset:
        """Only the queries every one of ``models`` answered (a router needs both sides to learn).

        Left-out queries are never dropped silently: with ``warn`` an ``IncompleteDataWarning`` gives
        their count (``coverage_summary`` gives it per model for ``--verbose``).
        """
        kept = [ex for ex in self.examples if all(m in ex.outcomes for m in models)]
        skipped = len(self.examples) - len(kept)
        if skipped and warn:
            warnings.warn(self.coverage_summary(models), IncompleteDataWarning, stacklevel=2)
        return RoutingDataset(kept, self.llm_data, self.reports)

    def require_models(self, models: Sequence[str]) -> None:
        missing = [m for m in models if m not in self.models]
        if missing:
            raise DataError(
                "routing data", None, f"no records for model(s) {missing}; the data has {self.models}"
            )

    def performance_matrix(self, models: Sequence[str]) -> np.ndarray:
        """(n_queries, n_models) performance; NaN where a model has no record for a query."""
        return np.array(
            [[ex.outcomes[m].performance if m in ex.outcomes else np.nan for m in models] for ex in self.examples],
            dtype=np.float64,
        )

    def call_costs(self, model: str) -> np.ndarray:
        """Per-query USD cost of calling ``model``: the record's cost, else price x tokens.

        Token counts come from ``token_num`` where the data has it; otherwise from the query and
        response lengths (about 4 characters a token), which is an estimate and is documented as such.
        """
        candidate = self.llm_data.get(model)
        costs = np.zeros(len(self.examples))
        for i, ex in enumerate(self.examples):
            outcome = ex.outcomes.get(model)
            if outcome is not None and outcome.cost is not None:
                costs[i] = outcome.cost
                continue
            if candidate is None:
                costs[i] = np.nan
                continue
            input_tokens = estimate_tokens(ex.query)
            response = outcome.response if outcome is not None else None
            if outcome is not None and outcome.token_num is not None:
                output_tokens = outcome.token_num
            elif response:
                output_tokens = estimate_tokens(response)
            else:
                # No response text: assume an answer as long as the question, the usual MMLU-style ratio.
                output_tokens = input_tokens
            costs[i] = candidate.call_cost(input_tokens, output_tokens)
        return costs

    def split(self, test_fraction: float, seed: int = 0) -> tuple[RoutingDataset, RoutingDataset]:
        """Random split by query (for choosing hyperparameters without touching the test file)."""
        if not 0.0 < test_fraction < 1.0:
            raise ValueError("test_fraction must be in (0, 1)")
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        cut = round(len(order) * (1.0 - test_fraction))
        first = [self.examples[i] for i in sorted(order[:cut])]
        second = [self.examples[i] for i in sorted(order[cut:])]
        return RoutingDataset(first, self.llm_data), RoutingDataset(second, self.llm_data)

    def subset(self, indices: Iterable[int]) -> RoutingDataset:
        return RoutingDataset([self.examples[i] for i in indices], self.llm_data)

    def head(self, n: int) -> RoutingDataset:
        return RoutingDataset(self.examples[:n], self.llm_data, self.reports)
