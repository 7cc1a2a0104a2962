"""Routing-data loading: both on-disk forms, gzip, clear errors, load reports, llm_data, the dataset view."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from routers.data import (
    LLMCandidate,
    RoutingDataset,
    load_llm_data,
    order_by_cost,
    parse_model_size,
    read_queries,
    read_routing_examples,
    resolve_pair,
)
from routers.errors import ConfigError, DataError


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def record(query: str, model: str, performance: float, **extra: object) -> dict:
    return {"task_name": "t", "query": query, "model_name": model, "performance": performance, **extra}


LLMROUTER_ROWS = [
    record("q1", "small", 1.0, response="4", token_num=3, ground_truth=4),
    record("q1", "large", 1.0, response="four", token_num=5),
    record("q2", "small", 0.0, verifier_votes=[1, 0, 0, 1]),
    record("q2", "large", 1.0),
]


# --- LLMRouter JSONL, compact form, gzip -------------------------------------------------------
def test_llmrouter_jsonl_groups_records_per_query(tmp_path: Path) -> None:
    examples, report = read_routing_examples(write_jsonl(tmp_path / "d.jsonl", LLMROUTER_ROWS))
    assert [ex.query for ex in examples] == ["q1", "q2"]
    assert examples[0].performance("small") == 1.0 and examples[1].performance("small") == 0.0
    assert examples[0].ground_truth == "4"  # numeric answers are kept as text
    assert examples[0].outcomes["large"].token_num == 5
    assert examples[1].outcomes["small"].verification_score == pytest.approx(0.5)
    assert (report.lines, report.records, report.queries, report.duplicates) == (4, 4, 2, 0)


def test_compact_form_gives_the_same_examples(tmp_path: Path) -> None:
    compact = [
        {"task_name": "t", "query": "q1", "llm_name_list": ["small", "large"], "perf_list": [1.0, 1.0]},
        {"task_name": "t", "query": "q2", "llm_name_list": ["small", "large"], "perf_list": [0.0, 1.0]},
    ]
    examples, report = read_routing_examples(write_jsonl(tmp_path / "c.jsonl", compact))
    assert [(ex.query, ex.performance("small"), ex.performance("large")) for ex in examples] == [
        ("q1", 1.0, 1.0),
        ("q2", 0.0, 1.0),
    ]
    assert report.records == 4 and report.lines == 2


def test_gzip_file_loads_like_plain(tmp_path: Path) -> None:
    plain, _ = read_routing_examples(write_jsonl(tmp_path / "d.jsonl", LLMROUTER_ROWS))
    gz, _ = read_routing_examples(write_jsonl(tmp_path / "d.jsonl.gz", LLMROUTER_ROWS))
    assert plain == gz


def test_published_data_loads(mmlu_test_path: Path, gsm8k_test_path: Path, llm_data_path: Path) -> None:
    data = RoutingDataset.from_files([mmlu_test_path, gsm8k_test_path], load_llm_data(llm_data_path))
    assert len(data) > 2000
    assert set(data.models) == {"mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"}
    pair = data.pair()
    assert pair.small == "mistralai/Mixtral-8x7B-Instruct-v0.1" and pair.large == "gpt-4-1106-preview"
    matrix = data.performance_matrix([pair.small, pair.large])
    assert np.nanmean(matrix[:, 1]) > np.nanmean(matrix[:, 0])  # GPT-4 is the stronger model


# --- bad lines fail with file, line and field ---------------------------------------------------
@pytest.mark.parametrize(
    ("bad_line", "field", "words"),
    [
        ('{"query": "q", "model_name": "m", "performance": ', None, "not valid JSON"),
        (json.dumps({"query": "q", "model_name": "m"}), "performance", "Field required"),
        (json.dumps({"query": "q", "model_name": "m", "performance": "high"}), "performance", "number"),
        ('{"query": "q", "model_name": "m", "performance": NaN}', "performance", "finite"),
        (json.dumps({"query": "", "model_name": "m", "performance": 1}), "query", "at least 1"),
        (json.dumps({"query": "q", "model_name": "m", "performance": 1, "token_num": -3}), "token_num", "greater"),
        (json.dumps({"query": "q", "llm_name_list": ["a", "b"], "perf_list": [1.0]}), "perf_list",
         "perf_list has 1 values but llm_name_list has 2 names"),
        (json.dumps({"query": "q", "llm_name_list": ["a", "a"], "perf_list": [1.0, 0.0]}), "llm_name_list", "twice"),
        (json.dumps({"query": "q", "llm_name_list": ["a"], "perf_list": ["x"]}), "perf_list.0", "number"),
        ("[1, 2, 3]", None, "expected a JSON object"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path: Path, bad_line: str, field: str | None, words: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record("ok", "m", 1.0)) + "\n\n" + bad_line + "\n")
    with pytest.raises(DataError) as info:
        read_routing_examples(path)
    error = info.value
    assert error.path == str(path) and error.line == 3
    assert f"{path}:3" in str(error)
    assert words.lower() in str(error).lower()
    if field is not None:
        assert error.field == field and f"'{field}'" in str(error)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_routing_examples(tmp_path / "nope.jsonl")


# --- duplicates and blank lines are reported ---------------------------------------------------
def test_duplicates_and_blanks_are_counted_in_the_summary(tmp_path: Path) -> None:
    rows = [*LLMROUTER_ROWS, record("q1", "small", 1.0), record("q2", "small", 1.0), ""]
    examples, report = read_routing_examples(write_jsonl(tmp_path / "d.jsonl", rows))
    assert examples[1].performance("small") == 0.0  # the first record wins
    assert report.duplicates == 2 and report.conflicting_duplicates == 1 and report.blank_lines == 1
    summary = report.summary()
    assert "2 duplicate" in summary and "1 with a different performance" in summary and "1 blank" in summary
    assert "line 6 (small)" in summary
    data = RoutingDataset.from_files(tmp_path / "d.jsonl")
    assert "2 duplicate" in data.load_summary()


def test_duplicate_policy_error_stops_the_load(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [*LLMROUTER_ROWS, record("q1", "small", 1.0)])
    with pytest.raises(DataError, match=r"d\.jsonl:5: duplicate record for model 'small'"):
        read_routing_examples(path, on_duplicate="error")


# --- llm_data ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("7B", 7e9), ("46.7B", 4.67e10), ("135M", 1.35e8), ("1.5t", 1.5e12), ("300", 300.0), (8, 8.0), (None, None)],
)
def test_parse_model_size(text: str | int | None, value: float | None) -> None:
    assert parse_model_size(text) == (None if value is None else pytest.approx(value))


def test_parse_model_size_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="cannot read model size"):
        parse_model_size("big")


def test_published_llm_data(llm_data_path: Path) -> None:
    candidates = load_llm_data(llm_data_path)
    mixtral = candidates["mistralai/Mixtral-8x7B-Instruct-v0.1"]
    assert mixtral.parameters == pytest.approx(4.67e10)
    assert candidates["gpt-4-1106-preview"].parameters is None
    # GPT-4 has no published size, so ordering falls back to price: Mixtral is the cheap one.
    assert order_by_cost(candidates) == ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    assert mixtral.call_cost(1_000_000, 0) == pytest.approx(0.6)


def test_order_by_size_when_every_size_is_known() -> None:
    candidates = {
        "big-but-cheap": LLMCandidate(name="big-but-cheap", size="70B", input_price=0.1),
        "small-but-dear": LLMCandidate(name="small-but-dear", size="7B", input_price=5.0),
    }
    assert order_by_cost(candidates) == ["small-but-dear", "big-but-cheap"]


def test_bad_llm_data_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "llm.json"
    path.write_text(json.dumps({"m": {"size": "huge"}}))
    with pytest.raises(DataError, match=r"field 'm\.size'"):
        load_llm_data(path)
    path.write_text(json.dumps({"m": {"input_price": -1}}))
    with pytest.raises(DataError, match=r"m\.input_price"):
        load_llm_data(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_llm_data(path)


# --- the dataset view ------------------------------------------------------------------------------
def test_pair_split_and_performance_matrix(make_routing_dataset) -> None:
    data = make_routing_dataset([1, 0, 0, 1, 0], [1, 1, 0, 1, 1])
    pair = data.pair()
    assert (pair.small, pair.large) == ("small-llm", "large-llm")
    assert pair.name_for(True) == "large-llm"
    matrix = data.performance_matrix(["small-llm", "large-llm", "absent"])
    assert matrix.shape == (5, 3)
    assert matrix[:, 0].tolist() == [1, 0, 0, 1, 0] and np.isnan(matrix[:, 2]).all()
    train, test = data.split(0.4, seed=3)
    assert len(train) == 3 and len(test) == 2
    assert sorted(train.queries + test.queries) == sorted(data.queries)
    again, _ = data.split(0.4, seed=3)
    assert again.queries == train.queries  # seeded
    with pytest.raises(ValueError):
        data.split(1.0)


def test_pair_explicit_and_errors(make_routing_dataset) -> None:
    data = make_routing_dataset([1, 0], [1, 1], priced=False)
    assert data.pair(small="large-llm", large="small-llm").small == "large-llm"
    with pytest.raises(ConfigError, match="same"):
        resolve_pair(None, ["a", "b"], small="a", large="a")
    with pytest.raises(ConfigError, match="two candidate"):
        resolve_pair(None, ["only"])


def test_call_costs_from_token_counts(make_routing_dataset) -> None:
    data = make_routing_dataset([1], [0], queries=["x" * 40])  # 10 input tokens, token_num 10
    assert data.call_costs("small-llm")[0] == pytest.approx(20 * 1.0 / 1e6)
    assert data.call_costs("large-llm")[0] == pytest.approx(20 * 10.0 / 1e6)


def test_read_queries(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"query": "a"}, "", {"query": "b", "id": 2}])
    assert [q["query"] for q in read_queries(path)] == ["a", "b"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "a"}, {"text": "b"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'query'"):
        read_queries(bad)


# --- incomplete queries are counted, never dropped silently ---------------------------------------
def test_complete_for_warns_with_the_count_and_summarises_per_model(tmp_path: Path) -> None:
    from routers.data import IncompleteDataWarning

    rows = [*LLMROUTER_ROWS, record("q3", "small", 1.0), record("q4", "large", 0.0), record("q5", "small", 0.0)]
    data = RoutingDataset.from_files(write_jsonl(tmp_path / "d.jsonl", rows))
    with pytest.warns(IncompleteDataWarning, match=r"2 of 5 queries have outcomes .* 3 left out"):
        complete = data.complete_for(["small", "large"])
    assert complete.queries == ["q1", "q2"]
    assert data.incomplete_count(["small", "large"]) == 3
    assert data.missing_counts(["small", "large"]) == {"small": 1, "large": 2}
    assert "missing outcomes per model: small: 1, large: 2" in data.coverage_summary(["small", "large"])
    assert complete.coverage_summary(["small", "large"]) == "2 of 2 queries have outcomes for all of ['small', 'large']"


def test_complete_data_gives_no_warning(tmp_path: Path) -> None:
    import warnings

    data = RoutingDataset.from_files(write_jsonl(tmp_path / "d.jsonl", LLMROUTER_ROWS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(data.complete_for(["small", "large"])) == 2
