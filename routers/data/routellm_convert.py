"""RouteLLM's published evaluation responses -> this project's routing-data JSONL (LLMRouter's form).

RouteLLM (github.com/lm-sys/RouteLLM) publishes, per MMLU subject, a CSV ``prompt, <weak>, <strong>`` of
True/False correctness, and for GSM8K a CSV with both models' responses beside its ``test.jsonl`` (the
questions and reference answers, in the same order). This writes one line per (query, model):
``task_name, query, ground_truth, metric, model_name, performance[, response]``, the form of the files in
``../shared/data``. Those files are a train/test split of these queries with some MMLU subjects held out;
the split was drawn at random and is not reproducible from the public files, so a download converts every
published query (``routellm/mmlu.jsonl``, ``routellm/gsm8k.jsonl``) and the split itself comes with
``llmrouter data get routellm --from DIR``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from routers.data.loaders import iter_jsonl
from routers.data.multimodel import iter_csv_rows
from routers.errors import DataError

WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
MMLU_PREFIX = "mmlu_"
GSM8K_ANSWER_MARK = "####"

# The two models' prices (USD per 1M tokens) and sizes: the project's own file, written byte for byte as
# ../shared/data/llm_candidates.json so its checksum holds.
LLM_CANDIDATES: dict[str, dict[str, Any]] = {
    WEAK: {"size": "46.7B", "input_price": 0.6, "output_price": 0.6, "model": WEAK,
           "note": "prices in USD per 1M tokens, a typical hosted price; size is total parameters"},
    STRONG: {"size": None, "input_price": 10.0, "output_price": 30.0, "model": STRONG,
             "note": "OpenAI list price per 1M tokens; parameter count not published"},
}


def llm_candidates_text() -> str:
    return json.dumps(LLM_CANDIDATES, indent=2)


def csv_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line where the record starts, row by column name) for each record after the header."""
    rows = iter_csv_rows(path)
    _, header = next(rows, (1, []))
    for lineno, cells in rows:
        yield lineno, dict(zip(header, cells, strict=False))


def correctness(path: Path, lineno: int, row: dict[str, str], model: str) -> float:
    value = row.get(model)
    if value not in ("True", "False"):
        raise DataError(str(path), lineno, f"expected True or False, got {value!r}", field=model)
    return 1.0 if value == "True" else 0.0


def mmlu_records(path: Path) -> Iterator[dict[str, Any]]:
    """One subject's CSV (``mmlu_<subject>.csv``) as routing records, task_name ``mmlu/<subject>``."""
    if not path.name.startswith(MMLU_PREFIX):
        raise DataError(str(path), None, f"expected a file named {MMLU_PREFIX}<subject>.csv")
    task = "mmlu/" + path.stem[len(MMLU_PREFIX):]
    for lineno, row in csv_records(path):
        query = row.get("prompt")
        if not query:
            raise DataError(str(path), lineno, "blank", field="prompt")
        for model in (WEAK, STRONG):
            yield {"task_name": task, "query": query, "ground_truth": None, "metric": "multiple_choice_correct",
                   "model_name": model, "performance": correctness(path, lineno, row, model)}


def gsm8k_answers(path: Path) -> list[tuple[str, str]]:
    """RouteLLM's GSM8K ``test.jsonl``: (question, the number after ``####``) in file order."""
    answers = []
    for lineno, obj in iter_jsonl(path):
        if obj is None:
            continue
        question, answer = obj.get("question"), obj.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str) or GSM8K_ANSWER_MARK not in answer:
            raise DataError(str(path), lineno, f"expected 'question' and an 'answer' ending '{GSM8K_ANSWER_MARK} N'")
        answers.append((question, answer.split(GSM8K_ANSWER_MARK)[-1].strip()))
    return answers


def gsm8k_records(responses_path: Path, questions_path: Path) -> Iterator[dict[str, Any]]:
    """``gsm8k_responses.csv`` joined row by row to ``test.jsonl`` (RouteLLM wrote them in the same order)."""
    answers = gsm8k_answers(questions_path)
    count = 0
    for count, (lineno, row) in enumerate(csv_records(responses_path), start=1):
        if count > len(answers):
            raise DataError(str(responses_path), lineno, f"more rows than {questions_path} has questions")
        question, truth = answers[count - 1]
        if row.get("prompt") != question:
            raise DataError(str(responses_path), lineno, f"prompt differs from question {count} of {questions_path}",
                            field="prompt")
        for model in (WEAK, STRONG):
            yield {"task_name": "gsm8k", "query": question, "ground_truth": truth, "metric": "exact_answer",
                   "model_name": model, "performance": correctness(responses_path, lineno, row, model),
                   "response": row.get(f"{model}_response") or None}
    if count != len(answers):
        raise DataError(str(responses_path), None, f"{count} rows but {questions_path} has {len(answers)} questions")


def write_jsonl(records: Iterator[dict[str, Any]], target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with target.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
    return written


def convert_routellm(mmlu_csvs: list[Path], gsm8k_responses: Path, gsm8k_questions: Path, dest: Path) -> list[Path]:
    """Write ``routellm/mmlu.jsonl``, ``routellm/gsm8k.jsonl`` and ``llm_candidates.json`` under ``dest``."""
    mmlu_target, gsm8k_target = dest / "routellm" / "mmlu.jsonl", dest / "routellm" / "gsm8k.jsonl"
    write_jsonl((record for path in sorted(mmlu_csvs) for record in mmlu_records(path)), mmlu_target)
    write_jsonl(gsm8k_records(gsm8k_responses, gsm8k_questions), gsm8k_target)
    candidates = dest / "llm_candidates.json"
    candidates.write_text(llm_candidates_text(), encoding="utf-8")
    return [mmlu_target, gsm8k_target, candidates]
