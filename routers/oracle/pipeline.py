"""The oracle pipeline: benchmark items -> both models' answers -> outcomes -> the 9-cell policy label.

For each item the medium and the large model answer (batched, the question as one user message in each
model's own prompt format); each answer is scored automatically when the metric allows it
(:mod:`routers.oracle.scoring`), else by the :class:`~routers.oracle.judge.BlindJudge`; the pair of
outcomes gives the policy through ``policy_for``.

Outputs (both JSONL, appended one fsync'd line at a time by :class:`ResumableJsonlWriter`):

* routing data in LLMRouter's form, one line per (query, model), ``performance`` 1.0 iff correct;
* the oracle dataset, one line per query, read by ``routers.policy.datasets.read_oracle_records``.

The oracle line is written after both routing lines, so it marks the query as done: a rerun skips the
queries in the oracle file and a crash between the lines only redoes that one query.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from routers.data.loaders import iter_jsonl
from routers.engines import Generator, SamplingParams
from routers.errors import ConfigError, DataError
from routers.oracle.judge import BlindJudge, JudgeRequest
from routers.oracle.scoring import can_auto_score, extract_number, score_answer
from routers.policy.matrix import Outcome, PolicyLabel, policy_for

logger = logging.getLogger(__name__)

ROUTING_FILE = "routing_data.jsonl"
ORACLE_FILE = "oracle_dataset.jsonl"


# --- benchmark input ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkItem:
    query: str
    ground_truth: str | None = None
    metric: str | None = None
    task_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "ground_truth": self.ground_truth, "metric": self.metric,
                "task_name": self.task_name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkItem:
        return cls(query=data["query"], ground_truth=data.get("ground_truth"), metric=data.get("metric"),
                   task_name=data.get("task_name"))


def _optional_text(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(str(path), lineno, f"expected text, got {type(value).__name__}", field=key)
    return str(value)


def benchmark_item_from(obj: dict[str, Any], path: Path, lineno: int) -> BenchmarkItem:
    """One benchmark line: LLMRouter keys (query, ground_truth, metric, task_name) or GSM8K's raw
    (question, answer), where the answer's ``#### N`` is the reference and the metric is a number match."""
    gsm8k_raw = "query" not in obj and "question" in obj
    query = obj.get("question") if gsm8k_raw else obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise DataError(str(path), lineno, "missing or empty string", field="question" if gsm8k_raw else "query")
    if gsm8k_raw:
        solution = _optional_text(obj, "answer", path, lineno)
        reference = extract_number(solution.split("####")[-1]) if solution else None
        if solution is not None and reference is None:
            raise DataError(str(path), lineno, "GSM8K answer has no final number", field="answer")
        return BenchmarkItem(query=query, ground_truth=reference, metric=obj.get("metric") or "exact_answer",
                             task_name=obj.get("task_name") or "gsm8k")
    return BenchmarkItem(query=query, ground_truth=_optional_text(obj, "ground_truth", path, lineno),
                         metric=_optional_text(obj, "metric", path, lineno),
                         task_name=_optional_text(obj, "task_name", path, lineno))


def read_benchmark(path: str | Path, limit: int | None = None) -> list[BenchmarkItem]:
    """Benchmark items in file order (JSONL, optionally gzipped), one per distinct query.

    Routing-data files list each query once per model; repeats of a query are merged, and a repeat
    with a different reference is an error (the oracle could not know which one is right).
    """
    path = Path(path)
    items: dict[str, BenchmarkItem] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        if obj is None:
            continue
        item = benchmark_item_from(obj, path, lineno)
        seen = items.get(item.query)
        if seen is None:
            items[item.query], first_line[item.query] = item, lineno
        elif seen.ground_truth != item.ground_truth:
            raise DataError(str(path), lineno, f"same query as line {first_line[item.query]} with another "
                            f"reference ({item.ground_truth!r} vs {seen.ground_truth!r})", field="ground_truth")
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DataError(str(path), None, "no benchmark items")
    return list(items.values())


def require_auto_scorable(items: Sequence[BenchmarkItem]) -> None:
    """Raise ``ConfigError`` unless every item has a known metric and a reference (no judge needed)."""
    unscorable = [i for i in items if not can_auto_score(i.ground_truth, i.metric)]
    if unscorable:
        metrics = sorted({str(i.metric) for i in unscorable})
        raise ConfigError(f"{len(unscorable)} items cannot be scored automatically (metrics {metrics}, or no "
                          f"reference), e.g. {unscorable[0].query[:80]!r}; configure a judge model")


# --- resumable output -----------------------------------------------------------------------------
Key = str | tuple[Any, ...]


class ResumableJsonlWriter:
    """Append-only JSONL whose records survive crashes and are never written twice.

    On open the existing lines are read and their keys (``key_field``, or a tuple of fields) remembered.
    A last line cut short by a crash (no newline and not valid JSON) is dropped with a warning and cut
    off the file; a bad line before the last one is corruption, not a crash, and raises ``DataError``.
    Each ``write`` appends one line, flushes and fsyncs, so what was written is on disk.
    """

    def __init__(self, path: str | Path, key_field: str | Sequence[str] = "query") -> None:
        self.path = Path(path)
        self.key_fields: tuple[str, ...] = (key_field,) if isinstance(key_field, str) else tuple(key_field)
        self.records: list[dict[str, Any]] = []
        self._keys: set[Key] = set()
        self.dropped_truncated = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load_existing()
        self._handle = self.path.open("a", encoding="utf-8")

    def key_of(self, record: dict[str, Any]) -> Key:
        if len(self.key_fields) == 1:
            return record[self.key_fields[0]]
        return tuple(record[f] for f in self.key_fields)

    def _load_existing(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        good_bytes = len(data) - len(tail)
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                self._remember(self._parse(line, lineno))
        if tail.strip():
            try:
                record = self._parse(tail, len(lines) + 1)
            except DataError:
                logger.warning("%s: dropping a truncated last line (%d bytes) left by an interrupted run",
                               self.path, len(tail))
                self.dropped_truncated = True
                os.truncate(self.path, good_bytes)
            else:  # complete record, only its newline is missing
                with self.path.open("ab") as handle:
                    handle.write(b"\n")
                self._remember(record)

    def _parse(self, line: bytes, lineno: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(str(self.path), lineno, f"not valid JSON ({exc})") from exc
        if not isinstance(record, dict) or any(f not in record for f in self.key_fields):
            raise DataError(str(self.path), lineno, f"expected an object with {list(self.key_fields)}")
        return record

    def _remember(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._keys.add(self.key_of(record))

    def done(self, key: Key) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def write(self, record: dict[str, Any]) -> bool:
        """Append ``record`` unless its key is already there; returns whether it was written."""
        key = self.key_of(record)
        if key in self._keys:
            return False
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._remember(record)
        return True

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- results --------------------------------------------------------------------------------------
@dataclass
class OracleResult:
    """One query's oracle verdict; ``judged_by`` is "auto" or the judge model's name."""

    item: BenchmarkItem
    medium_model: str
    large_model: str
    medium_response: str
    large_response: str
    medium_outcome: Outcome
    large_outcome: Outcome
    judged_by: str
    judge_raw: str | None = None
    judge_unparsed: list[str] = field(default_factory=list)

    @property
    def policy(self) -> PolicyLabel:
        return policy_for(self.medium_outcome, self.large_outcome)

    def routing_records(self) -> list[dict[str, Any]]:
        """LLMRouter routing-data lines, medium then large."""
        base = {"task_name": self.item.task_name, "query": self.item.query,
                "ground_truth": self.item.ground_truth, "metric": self.item.metric}
        return [
            {**base, "model_name": name, "response": response, "performance": float(outcome == Outcome.CORRECT)}
            for name, response, outcome in (
                (self.medium_model, self.medium_response, self.medium_outcome),
                (self.large_model, self.large_response, self.large_outcome),
            )
        ]

    def oracle_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "query": self.item.query, "task_name": self.item.task_name,
            "medium_outcome": self.medium_outcome.value, "large_outcome": self.large_outcome.value,
            "policy": self.policy.value, "medium_model": self.medium_model, "large_model": self.large_model,
            "judged_by": self.judged_by,
        }
        if self.judge_raw is not None:
            record["judge_raw"] = self.judge_raw
            record["judge_unparsed"] = list(self.judge_unparsed)
        return record


def display_name(model: str) -> str:
    """A local model directory is named by its folder; a hub id is kept as it is."""
    path = Path(model)
    return path.name if path.is_absolute() or path.exists() else model


class OraclePipeline:
    """Answers, outcomes and policy labels for benchmark items, ``batch_size`` items per generate call."""

    def __init__(self, medium: Generator, large: Generator, judge: BlindJudge | None,
                 answer_params: SamplingParams, batch_size: int = 8,
                 medium_name: str | None = None, large_name: str | None = None) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        self.medium = medium
        self.large = large
        self.judge = judge
        self.answer_params = answer_params
        self.batch_size = batch_size
        self.medium_name = medium_name or display_name(medium.model_name)
        self.large_name = large_name or display_name(large.model_name)
        if self.medium_name == self.large_name:
            raise ConfigError(f"medium and large models are both named {self.medium_name!r}")

    def check_scorable(self, items: Sequence[BenchmarkItem]) -> None:
        """Without a judge every item must be auto-scorable; checked before any generation."""
        if self.judge is None:
            require_auto_scorable(items)

    def answers(self, generator: Generator, items: Sequence[BenchmarkItem]) -> list[str]:
        prompts = [generator.chat_prompt([{"role": "user", "content": item.query}]) for item in items]
        return [result.text.strip() for result in generator.generate(prompts, self.answer_params)]

    def run_batch(self, items: Sequence[BenchmarkItem]) -> list[OracleResult]:
        medium_answers = self.answers(self.medium, items)
        large_answers = self.answers(self.large, items)
        auto = [(score_answer(m, i.ground_truth, i.metric), score_answer(lg, i.ground_truth, i.metric))
                for i, m, lg in zip(items, medium_answers, large_answers)]
        to_judge = [k for k, (mo, lo) in enumerate(auto) if mo is None or lo is None]
        if to_judge and self.judge is None:
            raise ConfigError("some answers cannot be scored automatically and no judge is configured")
        verdicts = dict(zip(to_judge, self.judge.judge(
            [JudgeRequest(items[k].query, items[k].ground_truth, medium_answers[k], large_answers[k])
             for k in to_judge]) if self.judge else []))
        results = []
        for k, item in enumerate(items):
            medium_outcome, large_outcome = auto[k]
            verdict = verdicts.get(k)
            if verdict is not None:
                # An automatic IDK stands; the judge fills in only what could not be scored.
                medium_outcome = medium_outcome or verdict.medium
                large_outcome = large_outcome or verdict.large
            results.append(OracleResult(
                item=item, medium_model=self.medium_name, large_model=self.large_name,
                medium_response=medium_answers[k], large_response=large_answers[k],
                medium_outcome=medium_outcome, large_outcome=large_outcome,  # type: ignore[arg-type]
                judged_by="auto" if verdict is None else display_name(self.judge.model_name),  # type: ignore[union-attr]
                judge_raw=None if verdict is None else verdict.raw,
                judge_unparsed=[] if verdict is None else list(verdict.unparsed),
            ))
        return results

    def iter_results(self, items: Sequence[BenchmarkItem]) -> Iterator[list[OracleResult]]:
        """Results batch by batch, so a caller can write each batch before the next one starts."""
        self.check_scorable(items)
        for start in range(0, len(items), self.batch_size):
            yield self.run_batch(items[start:start + self.batch_size])

    def run(self, items: Sequence[BenchmarkItem]) -> list[OracleResult]:
        return [result for batch in self.iter_results(items) for result in batch]


class OracleOutputs:
    """The two output files of an oracle run in ``output_dir``, resumable together."""

    def __init__(self, output_dir: str | Path) -> None:
        directory = Path(output_dir)
        self.routing = ResumableJsonlWriter(directory / ROUTING_FILE, key_field=("query", "model_name"))
        self.oracle = ResumableJsonlWriter(directory / ORACLE_FILE, key_field="query")

    def pending(self, items: Iterable[BenchmarkItem]) -> list[BenchmarkItem]:
        return [item for item in items if not self.oracle.done(item.query)]

    def write(self, result: OracleResult) -> bool:
        """Routing lines first, the oracle line last (it is the query's "done" marker)."""
        for record in result.routing_records():
            self.routing.write(record)
        return self.oracle.write(result.oracle_record())

    def close(self) -> None:
        self.routing.close()
        self.oracle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarize(oracle_records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per matrix cell and per policy, each model's accuracy and IDK rate, judge usage."""
    n = len(oracle_records)
    cells = Counter(f"{r['medium_outcome']}/{r['large_outcome']}" for r in oracle_records)
    policies = Counter(r["policy"] for r in oracle_records)

    def rate(role: str, outcome: Outcome) -> float | None:
        return sum(r[f"{role}_outcome"] == outcome.value for r in oracle_records) / n if n else None

    return {
        "queries": n,
        "cells": {f"{m.value}/{lg.value}": cells.get(f"{m.value}/{lg.value}", 0) for m in Outcome for lg in Outcome},
        "policies": {p.value: policies.get(p.value, 0) for p in PolicyLabel},
        "accuracy": {"medium": rate("medium", Outcome.CORRECT), "large": rate("large", Outcome.CORRECT)},
        "idk_rate": {"medium": rate("medium", Outcome.IDK), "large": rate("large", Outcome.IDK)},
        "judged": sum(r.get("judged_by", "auto") != "auto" for r in oracle_records),
        "judge_unparsed": sum(len(r.get("judge_unparsed") or []) for r in oracle_records),
    }
