"""Schemas of routing data and candidate LLMs.

Two on-disk forms of routing data are accepted, both as JSONL:

* LLMRouter's form, one line per (query, model)::

    {"task_name": "gsm8k", "query": "...", "ground_truth": "800", "metric": "exact_answer",
     "model_name": "gpt-4-1106-preview", "response": "...", "performance": 1.0, "token_num": 312}

  with optional ``embedding_id``, ``cost`` and, for AutoMix, the small model's self-verification
  (``verifier_votes``: the N sampled verdicts as 0/1, or ``p_ver``: their mean) and
  ``sampled_answers`` (for the SelfConsistency method).

* The compact form, one line per query: ``{"query": "...", "llm_name_list": [...], "perf_list": [...]}``.

Both are read into the same in-memory view, :class:`QueryExample`, one per query.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


class RoutingRecord(BaseModel):
    """One line of LLMRouter's routing data: how one model did on one query."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)

    query: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    performance: float
    task_name: str | None = None
    ground_truth: str | None = None
    metric: str | None = None
    response: str | None = None
    token_num: int | None = Field(default=None, ge=0)
    embedding_id: int | None = None
    cost: float | None = Field(default=None, ge=0)
    verifier_votes: list[float] | None = None
    p_ver: float | None = Field(default=None, ge=0.0, le=1.0)
    sampled_answers: list[str] | None = None

    @field_validator("ground_truth", mode="before")
    @classmethod
    def _ground_truth_as_text(cls, value: Any) -> Any:
        # Numeric answers (GSM8K) arrive as numbers in some exports; compare them as text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("performance")
    @classmethod
    def _performance_finite(cls, value: float) -> float:
        return _finite(value, "performance")

    @field_validator("verifier_votes")
    @classmethod
    def _votes_in_unit_interval(cls, votes: list[float] | None) -> list[float] | None:
        if votes is not None:
            if not votes:
                raise ValueError("verifier_votes must not be empty")
            if any(not (0.0 <= v <= 1.0) for v in votes):
                raise ValueError("each verifier vote must lie in [0, 1]")
        return votes


class CompactRecord(BaseModel):
    """One line of the compact form: every candidate's performance on one query."""

    model_config = ConfigDict(extra="allow")

    query: str = Field(min_length=1)
    llm_name_list: list[str] = Field(min_length=1)
    perf_list: list[float] = Field(min_length=1)
    task_name: str | None = None
    ground_truth: str | None = None

    @field_validator("llm_name_list")
    @classmethod
    def _distinct_names(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("names a model twice")
        return names

    @field_validator("perf_list")
    @classmethod
    def _one_value_per_name(cls, values: list[float], info: ValidationInfo) -> list[float]:
        # A field validator (not a model validator) so the error names the field at fault: perf_list.
        names = info.data.get("llm_name_list")
        if names is not None and len(names) != len(values):
            raise ValueError(
                f"perf_list has {len(values)} values but llm_name_list has {len(names)} names; "
                "give one performance per model"
            )
        for value in values:
            _finite(value, "perf_list")
        return values

    def to_records(self) -> list[RoutingRecord]:
        return [
            RoutingRecord(
                query=self.query,
                model_name=name,
                performance=perf,
                task_name=self.task_name,
                ground_truth=self.ground_truth,
            )
            for name, perf in zip(self.llm_name_list, self.perf_list)
        ]


class ModelOutcome(BaseModel):
    """How one model did on one query, as the routers consume it."""

    model_config = ConfigDict(frozen=True)

    performance: float
    response: str | None = None
    token_num: int | None = None
    cost: float | None = None
    verifier_votes: tuple[float, ...] | None = None
    p_ver: float | None = None
    sampled_answers: tuple[str, ...] | None = None

    @property
    def verification_score(self) -> float | None:
        """Mean of the sampled verdicts (AutoMix's p_ver), from whichever field the data carries."""
        if self.p_ver is not None:
            return self.p_ver
        if self.verifier_votes:
            return float(sum(self.verifier_votes) / len(self.verifier_votes))
        return None


class QueryExample(BaseModel):
    """One query with the outcome of every model that answered it."""

    model_config = ConfigDict(frozen=True)

    query: str
    task_name: str | None = None
    ground_truth: str | None = None
    metric: str | None = None
    outcomes: dict[str, ModelOutcome]

    def performance(self, model: str) -> float:
        return self.outcomes[model].performance


_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_model_size(size: str | float | None) -> float | None:
    """'46.7B' -> 4.67e10 parameters; None stays None (GPT-4's size is not published)."""
    if size is None:
        return None
    if isinstance(size, (int, float)):
        return float(size)
    match = _SIZE_RE.match(size)
    if not match:
        raise ValueError(f"cannot read model size {size!r}; use a number or e.g. '7B', '135M'")
    return float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


class LLMCandidate(BaseModel):
    """One candidate LLM from the ``llm_data`` file (name -> size, prices, model id, engine settings)."""

    model_config = ConfigDict(extra="allow")

    name: str
    size: str | float | None = None
    input_price: float = Field(default=0.0, ge=0.0, description="USD per 1M input tokens")
    output_price: float = Field(default=0.0, ge=0.0, description="USD per 1M output tokens")
    model: str | None = Field(default=None, description="HF model id or local path of the weights")
    engine: dict[str, Any] | None = Field(default=None, description="engine settings for serving it")

    @field_validator("size")
    @classmethod
    def _size_readable(cls, value: str | float | None) -> str | float | None:
        parse_model_size(value)
        return value

    @property
    def parameters(self) -> float | None:
        return parse_model_size(self.size)

    def call_cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD cost of one call."""
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6
