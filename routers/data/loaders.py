"""Readers for routing data (JSONL, optionally gzipped) and the candidate-LLM file.

A bad line stops the load with ``DataError`` naming the file, the line number and the field. Nothing is
dropped silently: duplicate (query, model) lines are counted in a :class:`LoadReport` that callers can
print (``--verbose`` in the CLI).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ValidationError

from routers.data.location import missing_data_hint
from routers.data.schema import CompactRecord, LLMCandidate, ModelOutcome, QueryExample, RoutingRecord
from routers.errors import DataError

DuplicatePolicy = Literal["first", "error"]


@dataclass
class LoadReport:
    """What a load did with every line: kept, duplicate, conflicting duplicate."""

    path: str
    lines: int = 0
    records: int = 0
    queries: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    blank_lines: int = 0
    conflicts: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.path}: {self.lines} lines, {self.records} records, {self.queries} queries, "
            f"{self.duplicates} duplicate (query, model) lines skipped "
            f"({self.conflicting_duplicates} with a different performance), {self.blank_lines} blank"
        )
        if self.conflicts:
            text += "\n  first conflicts: " + "; ".join(self.conflicts[:5])
        return text


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _describe_validation_error(error: ValidationError) -> tuple[str | None, str]:
    first = error.errors()[0]
    field_name = ".".join(str(part) for part in first.get("loc", ())) or None
    return field_name, first.get("msg", str(error))


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Yield (line number, parsed object) for each line; blank lines yield None. Bad JSON raises DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "file does not exist" + missing_data_hint(path))
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                yield lineno, None
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(str(path), lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise DataError(str(path), lineno, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def parse_record_line(path: str, lineno: int, obj: dict[str, Any]) -> list[RoutingRecord]:
    """One JSON object -> routing records, in either accepted form."""
    try:
        if "llm_name_list" in obj or "perf_list" in obj:
            return CompactRecord.model_validate(obj).to_records()
        return [RoutingRecord.model_validate(obj)]
    except ValidationError as exc:
        field_name, message = _describe_validation_error(exc)
        raise DataError(path, lineno, message, field=field_name) from exc


def _query_key(record: RoutingRecord) -> tuple[str | None, str]:
    return (record.task_name, record.query)


def _outcome(record: RoutingRecord) -> ModelOutcome:
    return ModelOutcome(
        performance=record.performance,
        response=record.response,
        token_num=record.token_num,
        cost=record.cost,
        verifier_votes=tuple(record.verifier_votes) if record.verifier_votes else None,
        p_ver=record.p_ver,
        sampled_answers=tuple(record.sampled_answers) if record.sampled_answers else None,
    )


def read_routing_examples(
    path: str | Path, on_duplicate: DuplicatePolicy = "first"
) -> tuple[list[QueryExample], LoadReport]:
    """Read one routing-data file into per-query examples, in first-seen order."""
    report = LoadReport(path=str(path))
    grouped: dict[tuple[str | None, str], dict[str, Any]] = {}
    for lineno, obj in iter_jsonl(path):
        report.lines += 1
        if obj is None:
            report.blank_lines += 1
            continue
        for record in parse_record_line(str(path), lineno, obj):
            key = _query_key(record)
            entry = grouped.setdefault(
                key,
                {
                    "query": record.query,
                    "task_name": record.task_name,
                    "ground_truth": record.ground_truth,
                    "metric": record.metric,
                    "outcomes": {},
                },
            )
            if entry["ground_truth"] is None and record.ground_truth is not None:
                entry["ground_truth"] = record.ground_truth
            outcomes: dict[str, ModelOutcome] = entry["outcomes"]
            if record.model_name in outcomes:
                if on_duplicate == "error":
                    raise DataError(
                        str(path), lineno, f"duplicate record for model {record.model_name!r} on this query"
                    )
                report.duplicates += 1
                if outcomes[record.model_name].performance != record.performance:
                    report.conflicting_duplicates += 1
                    report.conflicts.append(f"line {lineno} ({record.model_name})")
                continue
            outcomes[record.model_name] = _outcome(record)
            report.records += 1
    examples = [QueryExample(**entry) for entry in grouped.values()]
    report.queries = len(examples)
    return examples, report


def load_llm_data(path: str | Path) -> dict[str, LLMCandidate]:
    """Read the candidate-LLM JSON file: ``{name: {size, input_price, output_price, model, ...}}``."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "file does not exist" + missing_data_hint(path))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(str(path), exc.lineno, f"not valid JSON ({exc.msg})") from exc
    if not isinstance(raw, dict) or not raw:
        raise DataError(str(path), None, "expected a non-empty JSON object mapping model name -> info")
    candidates: dict[str, LLMCandidate] = {}
    for name, info in raw.items():
        if not isinstance(info, dict):
            raise DataError(str(path), None, "expected an object", field=name)
        try:
            candidates[name] = LLMCandidate.model_validate({**info, "name": name})
        except ValidationError as exc:
            field_name, message = _describe_validation_error(exc)
            raise DataError(str(path), None, message, field=f"{name}.{field_name}") from exc
    return candidates


def read_queries(path: str | Path) -> list[dict[str, Any]]:
    """Read a file of queries to route: JSONL objects with at least ``query``, or a JSON list of them."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(str(path), exc.lineno, f"not valid JSON ({exc.msg})") from exc
        if not isinstance(items, list):
            raise DataError(str(path), None, "expected a JSON list of query objects")
        numbered = list(enumerate(items, start=1))
    else:
        numbered = [(lineno, obj) for lineno, obj in iter_jsonl(path) if obj is not None]
    queries: list[dict[str, Any]] = []
    for lineno, obj in numbered:
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), str) or not obj["query"].strip():
            raise DataError(str(path), lineno, "missing or empty string", field="query")
        queries.append(obj)
    return queries
