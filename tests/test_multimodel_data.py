"""N-model routing data: the published LLMRouter and RouterBench pools, today's JSONL as the two-model case,
bad rows named by line, and ``llmrouter data get`` (from a local copy, downloads simulated, offline).

The published data is read where it lies (``LLMROUTER_DATA``, else ``../shared/data`` beside the checkout);
tests that need it skip when it is absent. Small synthetic files are written into ``tmp_path``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from routers import cli
from routers.data import LLMCandidate, ModelOutcome, QueryExample, RoutingDataset
from routers.data import fetch as fetch_module
from routers.data.fetch import (
    DATASETS,
    ROUTELLM,
    ROUTELLM_GSM8K_QUESTIONS,
    ROUTELLM_GSM8K_RESPONSES,
    ROUTELLM_MMLU_DIR,
    DataFetchError,
    PublishedDataset,
    PublishedFile,
    get,
)
from routers.data.location import DATA_ENV, data_dir, find_data_dir
from routers.data.multimodel import (
    MultiModelDataset,
    estimated_call_cost,
    load_llmrouter,
    load_routerbench,
    read_llmrouter_scores,
    read_routerbench_csv,
    read_routing_jsonl,
)
from routers.data.routellm_convert import convert_routellm, llm_candidates_text
from routers.errors import ConfigError, DataError

LLMROUTER_MODELS = {
    "qwen2.5-7b-instruct", "llama3-chatqa-1.5-8b", "llama-3.1-nemotron-51b-instruct", "llama3-chatqa-1.5-70b",
    "mistral-7b-instruct-v0.3", "gemma-2-9b-it", "codegemma-7b", "llama-3.1-8b-instruct",
    "llama-3.3-nemotron-super-49b-v1",
}
ROUTERBENCH_MODELS = [
    "WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2", "gpt-3.5-turbo-1106",
    "gpt-4-1106-preview", "meta/code-llama-instruct-34b-chat", "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat",
    "mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat",
]


# --- the published data, where it lies ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def published() -> Path:
    found = find_data_dir()
    if found is None or not (found / "multimodel").is_dir():
        pytest.skip(f"published routing data not found: set {DATA_ENV} to a directory filled by "
                    "`llmrouter data get NAME` (CI: ../shared/data)")
    return found


@pytest.fixture(scope="module")
def llmrouter_train(published: Path) -> MultiModelDataset:
    return load_llmrouter(published, "train")


@pytest.fixture(scope="module")
def llmrouter_test(published: Path) -> MultiModelDataset:
    return load_llmrouter(published, "test")


@pytest.fixture(scope="module")
def routerbench_train(published: Path) -> MultiModelDataset:
    return load_routerbench(published, "train")


@pytest.fixture(scope="module")
def routerbench_test(published: Path) -> MultiModelDataset:
    return load_routerbench(published, "test")


def test_llmrouter_pool_shapes_models_and_tasks(llmrouter_train: MultiModelDataset,
                                                llmrouter_test: MultiModelDataset) -> None:
    assert llmrouter_train.quality.shape == llmrouter_train.cost.shape == (5608, 9)
    assert llmrouter_test.quality.shape == (500, 9)
    assert set(llmrouter_train.models) == LLMROUTER_MODELS
    assert llmrouter_test.models == llmrouter_train.models  # one column order for both splits
    assert len(set(llmrouter_train.task_names)) == 14 and None not in llmrouter_train.task_names
    report = llmrouter_train.reports[0]
    assert (report.rows, report.kept, report.without_task_name, report.ambiguous_task_name) == (5608, 5608, 0, 6)
    assert ((llmrouter_train.quality >= 0) & (llmrouter_train.quality <= 1)).all()


def test_llmrouter_test_less_its_train_questions_gives_the_published_figures(
        llmrouter_train: MultiModelDataset, llmrouter_test: MultiModelDataset) -> None:
    test, dropped = llmrouter_test.without_queries_in(llmrouter_train)
    assert (dropped, len(test)) == (119, 381)
    means = dict(zip(test.models, test.quality.mean(axis=0)))
    assert max(means, key=means.__getitem__) == "llama-3.1-nemotron-51b-instruct"
    assert means["llama-3.1-nemotron-51b-instruct"] == pytest.approx(0.597, abs=5e-4)
    assert test.quality.max(axis=1).mean() == pytest.approx(0.750, abs=5e-4)  # the oracle, per SOURCE.md


def test_llmrouter_cost_is_price_times_tokens(llmrouter_train: MultiModelDataset) -> None:
    assert not llmrouter_train.call_cost_known.any()  # the data has no cost of its own
    for j, model in enumerate(llmrouter_train.models):
        candidate = llmrouter_train.candidates[model]
        for i in (0, 1000, 5607):
            query = llmrouter_train.queries[i]
            tokens = max(1, round(len(query) / 4))
            # no response in the data: the answer is taken as long as the question
            expected = tokens * (candidate.input_price + candidate.output_price) / 1e6
            assert llmrouter_train.cost[i, j] == pytest.approx(expected)
            assert llmrouter_train.cost[i, j] == estimated_call_cost(candidate, query)
    cheap, dear = llmrouter_train.model_index("gemma-2-9b-it"), llmrouter_train.model_index("llama3-chatqa-1.5-70b")
    assert llmrouter_train.cost[:, dear] == pytest.approx(9 * llmrouter_train.cost[:, cheap])  # $0.90 vs $0.10


def test_routerbench_pool_shapes_models_and_skipped_blank_rows(routerbench_train: MultiModelDataset,
                                                               routerbench_test: MultiModelDataset) -> None:
    assert list(routerbench_train.models) == ROUTERBENCH_MODELS == list(routerbench_test.models)
    assert routerbench_train.quality.shape == (1019 + 299, 11) and routerbench_test.quality.shape == (437 + 128, 11)
    reports = routerbench_train.reports + routerbench_test.reports
    skipped = {Path(r.path).name: (r.rows, r.skipped_blank) for r in reports}
    assert skipped == {"arc_challenge_train.csv": (1039, 20), "mbpp_train.csv": (299, 0),
                       "arc_challenge_test.csv": (445, 8), "mbpp_test.csv": (128, 0)}
    assert set(np.unique(routerbench_train.quality)) == {0.0, 1.0}
    assert routerbench_train.call_cost_known.all()
    assert set(routerbench_test.task_names) == {"arc-challenge", "mbpp"}
    assert routerbench_test.responses is not None and all(r is not None for r in routerbench_test.responses[0])


def test_routerbench_costs_are_each_calls_own(published: Path, routerbench_test: MultiModelDataset) -> None:
    path = published / "multimodel" / "routerbench" / "mbpp_test.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in (rows[0], rows[-1]):
        i = routerbench_test.ids.index(row["sample_id"])
        for j, model in enumerate(routerbench_test.models):
            assert routerbench_test.cost[i, j] == float(row[f"{model}|total_cost"])
            assert routerbench_test.quality[i, j] == float(row[model])
    gpt4 = routerbench_test.model_index("gpt-4-1106-preview")
    arc = [i for i, task in enumerate(routerbench_test.task_names) if task == "arc-challenge"]
    assert routerbench_test.cost[arc, gpt4].mean() == pytest.approx(0.0050, abs=1e-4)  # SOURCE.md: $0.0050


# --- the dataset type ----------------------------------------------------------------------------------------
def tiny_dataset() -> MultiModelDataset:
    return MultiModelDataset(
        models=("a", "b", "c"), queries=("q1", "q2"), task_names=("t", None), ids=("1", "2"),
        quality=np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), cost=np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]),
        call_cost_known=np.ones((2, 3), dtype=bool),
    )


def test_dataset_views_and_read_only_arrays() -> None:
    data = tiny_dataset()
    pair = data.select_models(["c", "a"])
    assert pair.models == ("c", "a") and pair.quality.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert data.subset([1]).queries == ("q2",) and data.subset([1]).cost.shape == (1, 3)
    with pytest.raises(ValueError):
        data.quality[0, 0] = 0.5
    with pytest.raises(DataError, match="no model 'z'"):
        data.select_models(["z"])


def test_dataset_rejects_wrong_shapes_and_non_finite_values() -> None:
    with pytest.raises(ValueError, match=r"quality has shape \(2, 2\)"):
        MultiModelDataset(models=("a", "b", "c"), queries=("q1", "q2"), task_names=(None, None), ids=("1", "2"),
                          quality=np.zeros((2, 2)), cost=np.zeros((2, 3)), call_cost_known=np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="finite"):
        MultiModelDataset(models=("a",), queries=("q",), task_names=(None,), ids=("1",),
                          quality=np.array([[np.nan]]), cost=np.zeros((1, 1)), call_cost_known=np.zeros((1, 1), bool))


def test_two_model_routing_dataset_is_the_special_case() -> None:
    candidates = {"small": LLMCandidate(name="small", input_price=1.0, output_price=2.0),
                  "large": LLMCandidate(name="large", input_price=10.0, output_price=30.0)}
    examples = [
        QueryExample(query="What is two plus two?", task_name="math",
                     outcomes={"small": ModelOutcome(performance=1.0, response="four"),
                               "large": ModelOutcome(performance=1.0, cost=0.25)}),
        QueryExample(query="Name a prime.", outcomes={"small": ModelOutcome(performance=0.0, token_num=7),
                                                      "large": ModelOutcome(performance=1.0)}),
        QueryExample(query="only small answered", outcomes={"small": ModelOutcome(performance=1.0)}),
    ]
    two = RoutingDataset(examples, candidates)
    data = MultiModelDataset.from_routing_dataset(two)
    assert data.models == ("small", "large")  # cheapest first
    assert data.queries == ("What is two plus two?", "Name a prime.") and data.reports[0].incomplete == 1
    complete = two.complete_for(["small", "large"], warn=False)
    for j, model in enumerate(data.models):
        assert data.cost[:, j].tolist() == complete.call_costs(model).tolist()
        assert data.quality[:, j].tolist() == complete.performance_matrix([model])[:, 0].tolist()
    assert data.cost[0, 1] == 0.25 and data.call_cost_known.tolist() == [[False, True], [False, False]]
    assert data.task_names == ("math", None) and data.responses == (("four", None), (None, None))


def test_routing_jsonl_reads_today_s_files(tmp_path: Path) -> None:
    rows = [{"task_name": "t", "query": "q1", "model_name": m, "performance": p, "cost": c}
            for m, p, c in (("m1", 1.0, 0.001), ("m2", 0.0, 0.002), ("m3", 1.0, 0.01))]
    path = tmp_path / "three.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = read_routing_jsonl(path)
    assert data.models == ("m1", "m2", "m3") and data.cost.tolist() == [[0.001, 0.002, 0.01]]
    assert data.call_cost_known.all()


# --- bad rows, named by line -------------------------------------------------------------------------------
def write_scores(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return path


def line_of_entry(path: Path, question: str) -> int:
    # The element's opening brace is the line before its "question" key in the pretty-printed list.
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, text in enumerate(lines, start=1) if f'"question": "{question}"' in text) - 1


def test_llmrouter_bad_score_is_named_by_line_and_field(tmp_path: Path) -> None:
    path = write_scores(tmp_path / "train.json", [
        {"question": "q1", "scores": {"a": 1.0, "b": 0.0}},
        {"question": "q2", "scores": {"a": 1.0, "b": "high"}},
    ])
    with pytest.raises(DataError) as caught:
        read_llmrouter_scores(path)
    assert caught.value.line == line_of_entry(path, "q2") == 9
    assert caught.value.field == "scores.b" and f"{path}:9" in str(caught.value)


def test_llmrouter_entry_missing_a_model_is_an_error(tmp_path: Path) -> None:
    path = write_scores(tmp_path / "test.json", [
        {"question": "q1", "scores": {"a": 1.0, "b": 0.0}},
        {"question": "q2", "scores": {"a": 1.0}},
    ])
    with pytest.raises(DataError, match=r"missing \['b'\]") as caught:
        read_llmrouter_scores(path)
    assert caught.value.line == 9 and caught.value.field == "scores"


def test_llmrouter_invalid_json_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text('[\n  {"question": "q1", "scores": {"a": 1.0}},\n  {"question": "q2", "scores": {"a": }}\n]\n')
    with pytest.raises(DataError, match="not valid JSON") as caught:
        read_llmrouter_scores(path)
    assert caught.value.line == 3


def test_llmrouter_join_counts_unknown_and_ambiguous_questions(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "train.json", [
        {"question": q, "scores": {"a": 1.0, "b": 0.5}} for q in ("known", "twice", "unknown")])
    queries = tmp_path / "default_query_train.jsonl"
    queries.write_text("\n".join(json.dumps({"query": q, "task_name": t}) for q, t in
                                 (("known", "mmlu"), ("twice", "mmlu"), ("twice", "openbook_qa"))) + "\n")
    llm = tmp_path / "default_llm.json"
    llm.write_text(json.dumps({"a": {"input_price": 0.1, "output_price": 0.1},
                               "b": {"input_price": 0.9, "output_price": 0.9}}))
    data = read_llmrouter_scores(scores, queries, llm)
    assert data.task_names == ("mmlu", "mmlu", None)
    report = data.reports[0]
    assert (report.without_task_name, report.ambiguous_task_name) == (1, 1)
    assert "1 questions not in the query file" in report.summary()
    # "known": 5 characters, 1 token in and (no response) 1 token out
    assert data.cost[0].tolist() == pytest.approx([2 * 0.1e-6, 2 * 0.9e-6])


ROUTERBENCH_HEADER = ["", "sample_id", "prompt", "eval_name", "m1", "m2", "m1|model_response", "m2|model_response",
                      "m1|total_cost", "m2|total_cost", "oracle_model_to_route_to"]


def write_routerbench(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ROUTERBENCH_HEADER)
        writer.writerows(rows)
    return path


def bench_row(sample: str, m1: str = "1.0", m2: str = "0.0", cost2: str = "0.002", prompt: str = "['Q?']",
              response1: str = "['A']") -> list[str]:
    return ["0", sample, prompt, "arc-challenge", m1, m2, response1, "['B']", "0.001", cost2, "['m1']"]


def test_routerbench_blank_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write_routerbench(tmp_path / "arc_challenge_test.csv", [
        # a response cell over two lines (a record, not a line, per row): later rows start one line down
        bench_row("s1", prompt="['line one\\nline two']", response1="A\nbecause"),
        bench_row("s2", m2=""),
        bench_row("s3"),
    ])
    data = read_routerbench_csv(path)
    assert data.ids == ("s1", "s3") and data.models == ("m1", "m2")
    assert data.queries[0] == "line one\nline two" and data.responses == (("A\nbecause", "B"), ("A", "B"))
    assert data.reports[0].skipped_blank_lines == [4] and "1 skipped for blank model cells (lines 4)" in \
        data.reports[0].summary()
    assert data.cost.tolist() == [[0.001, 0.002], [0.001, 0.002]]


def test_routerbench_bad_cost_is_named_by_line_and_field(tmp_path: Path) -> None:
    path = write_routerbench(tmp_path / "mbpp_test.csv", [bench_row("s1"), bench_row("s2", cost2="free")])
    with pytest.raises(DataError) as caught:
        read_routerbench_csv(path)
    assert (caught.value.line, caught.value.field) == (3, "m2|total_cost")
    assert f"{path}:3: field 'm2|total_cost'" in str(caught.value)


def test_routerbench_bad_correctness_and_short_rows_are_errors(tmp_path: Path) -> None:
    path = write_routerbench(tmp_path / "a.csv", [bench_row("s1", m1="yes")])
    with pytest.raises(DataError, match="expected a number") as caught:
        read_routerbench_csv(path)
    assert (caught.value.line, caught.value.field) == (2, "m1")
    short = write_routerbench(tmp_path / "b.csv", [bench_row("s1")[:5]])
    with pytest.raises(DataError, match="5 cells, the header has 11"):
        read_routerbench_csv(short)


# --- RouteLLM's published responses -> JSONL ------------------------------------------------------------------
def write_routellm_sources(directory: Path, gsm8k_truth: str = "True") -> tuple[list[Path], Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    mmlu = directory / "mmlu_anatomy.csv"
    mmlu.write_text('prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview\n'
                    '"Which bone?\nA. a\nB. b\nAnswer:",False,True\n', encoding="utf-8")
    questions = directory / "test.jsonl"
    questions.write_text(json.dumps({"question": "2+2?", "answer": "2+2=4\n#### 4"}) + "\n", encoding="utf-8")
    responses = directory / "gsm8k_responses.csv"
    responses.write_text("prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview,"
                         "mistralai/Mixtral-8x7B-Instruct-v0.1_response,gpt-4-1106-preview_response\n"
                         f'2+2?,{gsm8k_truth},True,"It is 4\n#### 4",#### 4\n', encoding="utf-8")
    return [mmlu], responses, questions


def test_routellm_responses_convert_to_jsonl(tmp_path: Path) -> None:
    mmlu, responses, questions = write_routellm_sources(tmp_path / "src")
    convert_routellm(mmlu, responses, questions, tmp_path / "out")
    examples = RoutingDataset.from_files([tmp_path / "out" / "routellm" / "mmlu.jsonl",
                                          tmp_path / "out" / "routellm" / "gsm8k.jsonl"])
    assert [(ex.task_name, ex.performance("mistralai/Mixtral-8x7B-Instruct-v0.1"), ex.ground_truth)
            for ex in examples] == [("mmlu/anatomy", 0.0, None), ("gsm8k", 1.0, "4")]
    assert examples[1].outcomes["gpt-4-1106-preview"].response == "#### 4"
    assert hashlib.sha256(llm_candidates_text().encode()).hexdigest() == next(
        f.sha256 for f in ROUTELLM.files if f.path == "llm_candidates.json")


def test_routellm_bad_cell_is_named_by_line(tmp_path: Path) -> None:
    mmlu, responses, questions = write_routellm_sources(tmp_path / "src", gsm8k_truth="maybe")
    with pytest.raises(DataError) as caught:
        convert_routellm(mmlu, responses, questions, tmp_path / "out")
    assert (caught.value.line, caught.value.field) == (2, "mistralai/Mixtral-8x7B-Instruct-v0.1")


# --- llmrouter data get --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["routerbench", "llmrouter", "routellm"])
def test_data_get_from_a_local_copy(name: str, published: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "data"
    assert cli.main(["data", "get", name, "--from", str(published), "--dest", str(dest), "--quiet"]) == 0
    for expected in DATASETS[name].files:
        copied = dest / expected.path
        assert hashlib.sha256(copied.read_bytes()).hexdigest() == expected.sha256
    out = capsys.readouterr().out
    assert f"{name}: ready in {dest}" in out
    if name == "routerbench":
        assert "20 skipped for blank model cells" in out and load_routerbench(dest, "test").quality.shape == (565, 11)


def test_data_get_refuses_a_file_whose_checksum_differs(tmp_path: Path) -> None:
    source = tmp_path / "copy"
    source.mkdir()
    for expected in DATASETS["routerbench"].files:  # flat, by name: the layout of files fetched by hand
        (source / expected.name).write_text("sample_id,prompt\n", encoding="utf-8")
    with pytest.raises(DataFetchError, match="sha256 .* is not the published"):
        get("routerbench", tmp_path / "data", source)
    assert not (tmp_path / "data" / DATASETS["routerbench"].files[0].path).exists()


def test_data_get_from_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DataFetchError, match="llmrouter needs multimodel/llmrouter/train.json"):
        get("llmrouter", tmp_path / "data", tmp_path)


def test_offline_data_get_lists_the_urls_to_fetch_by_hand(monkeypatch, tmp_path: Path, capsys) -> None:
    def no_network(url: str, timeout: float) -> None:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(fetch_module, "open_url", no_network)
    for name, spec in DATASETS.items():
        assert cli.main(["data", "get", name, "--dest", str(tmp_path / "data"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"cannot download {name}" in err and f"--from DIR --dest {tmp_path / 'data'}" in err
        assert all(url in err for url in spec.urls()) and len(spec.urls()) >= 4


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def test_download_checks_the_checksum_before_moving_the_file_in(monkeypatch, tmp_path: Path) -> None:
    body = b"[]"
    good = PublishedFile("pool/good.json", hashlib.sha256(body).hexdigest(), len(body), "https://example.org/good.json")
    bad = PublishedFile("pool/bad.json", "0" * 64, len(body), "https://example.org/bad.json")
    monkeypatch.setattr(fetch_module, "open_url", lambda url, timeout: FakeResponse(body))
    found = fetch_module.download_all(PublishedDataset("pool", "test pool", (good,)), tmp_path, tmp_path)
    assert found == {"pool/good.json": tmp_path / "pool" / "good.json"} and found["pool/good.json"].read_bytes() == body
    with pytest.raises(DataFetchError, match="https://example.org/bad.json"):
        fetch_module.download_all(PublishedDataset("pool", "test pool", (bad,)), tmp_path, tmp_path)
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == ["good.json"]  # no half or bad file left


def mini_routellm(sources_dir: Path) -> PublishedDataset:
    """ROUTELLM with three synthetic source files in place of RouteLLM's 59 (same repository paths)."""
    mmlu, responses, questions = write_routellm_sources(sources_dir)
    paths = {mmlu[0]: f"{ROUTELLM_MMLU_DIR}/mmlu_anatomy.csv", responses: ROUTELLM_GSM8K_RESPONSES,
             questions: ROUTELLM_GSM8K_QUESTIONS}
    sources = tuple(PublishedFile(repo_path, hashlib.sha256(local.read_bytes()).hexdigest(), local.stat().st_size,
                                  f"https://example.org/{repo_path}") for local, repo_path in paths.items())
    return PublishedDataset("routellm", "test pool", ROUTELLM.files, sources, ROUTELLM.convert)


def test_routellm_download_converts_the_published_responses(monkeypatch, tmp_path: Path) -> None:
    spec = mini_routellm(tmp_path / "published")
    bodies = {f.url: (tmp_path / "published" / f.name).read_bytes() for f in spec.sources}
    monkeypatch.setitem(DATASETS, "routellm", spec)
    monkeypatch.setattr(fetch_module, "open_url", lambda url, timeout: FakeResponse(bodies[url]))
    summaries = get("routellm", tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data" / "routellm").iterdir()) == ["gsm8k.jsonl", "mmlu.jsonl"]
    assert len(summaries) == 2 and all("2 records, 1 queries" in line for line in summaries)  # read back


def test_routellm_from_a_copy_of_the_published_responses(tmp_path: Path) -> None:
    spec = mini_routellm(tmp_path / "by_hand")  # flat: the files as fetched by hand from the listed URLs
    fetch_module.copy_from(spec, tmp_path / "by_hand", tmp_path / "data")
    data = read_routing_jsonl(tmp_path / "data" / "routellm" / "gsm8k.jsonl", tmp_path / "data" / "llm_candidates.json")
    assert data.models == ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
    assert data.quality.tolist() == [[1.0, 1.0]] and not data.call_cost_known.any()


def test_data_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert find_data_dir() == tmp_path and data_dir() == tmp_path
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="llmrouter data get"):
        data_dir()
