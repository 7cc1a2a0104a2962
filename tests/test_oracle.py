"""Oracle pipeline: scoring, blind judging, resumable output, benchmark input, and the Ray job end to end."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from routers.engines import GenerationResult, Generator, SamplingParams
from routers.engines.base import Completion
from routers.errors import ConfigError, DataError
from routers.oracle import (
    BenchmarkItem,
    BlindJudge,
    JudgeRequest,
    OracleOutputs,
    OraclePipeline,
    ResumableJsonlWriter,
    answer_order,
    build_judge_prompt,
    deanonymise,
    extract_choice,
    extract_number,
    is_idk,
    parse_verdicts,
    read_benchmark,
    score_answer,
    summarize,
)
from routers.policy.matrix import Outcome, PolicyLabel

ROOT = Path(__file__).resolve().parents[1]
C, I, K = Outcome.CORRECT, Outcome.INCORRECT, Outcome.IDK


# --- scoring ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("She has 3 + 4 = 7 apples.\n#### 72", "72"),
    ("So the total is 1,250 dollars. The answer is $1,250.", "1250"),
    ("The answer is: 3.50", "3.5"),
    ("First 12, then 30, so 42 in all.", "42"),
    ("Temperature drops to -4.", "-4"),
    ("\\boxed{18} is it, checked 20 times", "18"),
    ("#### 5\nExtra reasoning mentions 99", "5"),
    ("no digits here", None),
    ("", None),
])
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Answer: B", "B"),
    ("The answer is (C).", "C"),
    ("B. Paris is the capital", "B"),
    ("(D) because ...", "D"),
    ("I would pick option A here", "A"),
    ("C", "C"),
    ("A company sells apples", None),   # the article "A" is not an option
    ("I think it is hard", None),       # neither is the pronoun
])
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected


def test_is_idk_phrases_and_committed_answers() -> None:
    for text in ["I don't know.", "I'm not sure about this one", "I cannot answer that", "unable to determine",
                 "There is not enough information to say", "I have no idea"]:
        assert is_idk(text), text
    assert not is_idk("We cannot determine x directly, so we add: 3 + 2 = 5.\n#### 5")
    assert not is_idk("The answer is 12")
    assert not is_idk("")


def test_score_answer() -> None:
    assert score_answer("... #### 72", "72", "exact_answer") == C
    assert score_answer("The answer is 72.0", "72", "gsm8k") == C
    assert score_answer("The answer is 1,000", "1000", "exact_answer") == C
    assert score_answer("#### 71", "72", "exact_answer") == I
    assert score_answer("no number at all", "72", "exact_answer") == I
    assert score_answer("I don't know", "72", "exact_answer") == K
    assert score_answer("Answer: B", "B", "multiple_choice") == C
    assert score_answer("(C)", "b", "mmlu") == I
    assert score_answer("Paris", "Paris", "free_text") is None        # no automatic metric: the judge decides
    assert score_answer("#### 72", None, "exact_answer") is None       # no reference
    assert score_answer("I'm not sure", None, "free_text") == K        # declining needs no reference


# --- blind judge --------------------------------------------------------------------------------------
class ScriptedGenerator(Generator):
    """Returns scripted texts and records its prompts (a test double for the engine interface)."""

    def __init__(self, name: str, reply: callable, prompt_format: str = "chat") -> None:  # type: ignore[valid-type]
        self.model_name = name
        self.prompt_format = prompt_format  # type: ignore[assignment]
        self.reply = reply
        self.prompts: list[str] = []

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        self.prompts.extend(prompts)
        return [GenerationResult(prompt_tokens=1, completions=[Completion(self.reply(p), "stop", 1)]) for p in prompts]

    def stream(self, prompt: str, params: SamplingParams):  # type: ignore[override]
        yield self.reply(prompt)

    def sequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        return [0.0 for _ in continuations]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)


def orders_for(seed: int, queries: list[str]) -> list[tuple[str, str]]:
    return [answer_order(q, seed) for q in queries]


def test_answer_order_is_seeded_stable_and_balanced() -> None:
    queries = [f"question {i}" for i in range(200)]
    assert orders_for(0, queries) == orders_for(0, queries)
    assert orders_for(0, queries) != orders_for(1, queries)
    medium_first = sum(o == ("medium", "large") for o in orders_for(0, queries))
    assert 70 < medium_first < 130


def test_judge_prompt_is_blind() -> None:
    medium = ScriptedGenerator("/models/smollm2-135m-instruct", lambda p: "")
    judge_gen = ScriptedGenerator("/models/judge-model", lambda p: "A: correct\nB: incorrect")
    judge = BlindJudge(judge_gen, seed=3)
    request = JudgeRequest("What is 2+2?", "4", "It is 4", "It is 5")
    prompt, order = judge.prompt_for(request)
    for name in ("smollm", "gemma", "medium", "large", "judge-model"):
        assert name not in prompt.lower()
    assert "Answer A:" in prompt and "Answer B:" in prompt and "Reference answer:\n4" in prompt
    first, second = ("It is 4", "It is 5") if order == ("medium", "large") else ("It is 5", "It is 4")
    assert prompt.index(first) < prompt.index(second)
    assert medium.prompts == []
    no_ref = build_judge_prompt("Q?", None, "a", "b")
    assert "There is no reference answer" in no_ref


def test_judge_deanonymises_both_orders() -> None:
    """The judge says the answer saying 4 is correct: that must land on whichever model wrote it."""
    def grade(prompt: str) -> str:
        a = prompt.split("Answer A:\n")[1].split("\n")[0]
        return f"A: {'correct' if a == 'It is 4' else 'incorrect'}\nB: {'correct' if a != 'It is 4' else 'incorrect'}"

    queries = [f"What is 2+2? (variant {i})" for i in range(12)]
    judge = BlindJudge(ScriptedGenerator("judge", grade), seed=0)
    verdicts = judge.judge([JudgeRequest(q, "4", "It is 4", "It is 5") for q in queries])
    assert {v.order for v in verdicts} == {("medium", "large"), ("large", "medium")}
    assert all((v.medium, v.large) == (C, I) for v in verdicts)
    swapped = judge.judge([JudgeRequest(q, "4", "It is 5", "It is 4") for q in queries])
    assert all((v.medium, v.large) == (I, C) for v in swapped)


@pytest.mark.parametrize(("text", "expected"), [
    ("A: correct\nB: incorrect", {"A": C, "B": I}),
    ("**Answer A**: Incorrect\n**Answer B**: IDK", {"A": I, "B": K}),
    ("- A - wrong\n- B = right", {"A": I, "B": C}),
    ("A: not correct\nB: correct\nA: correct", {"A": I, "B": C}),   # first verdict per letter counts
    ("Answer A is correct.", {"A": C}),
    ("Both look fine to me.", {}),
    ("A: correct|idk\nB: incorrect", {"B": I}),    # an echo of the format line is no verdict
    ("A: correct / incorrect\nB: idk", {"B": K}),
])
def test_parse_verdicts(text: str, expected: dict[str, Outcome]) -> None:
    assert parse_verdicts(text) == expected


def test_unparsed_verdict_is_incorrect_and_reported() -> None:
    verdict = deanonymise({"A": C}, ("large", "medium"), raw="A: correct")
    assert (verdict.medium, verdict.large) == (I, C)
    assert verdict.unparsed == ["medium"]


# --- pipeline with scripted models ----------------------------------------------------------------
def test_pipeline_labels_and_records() -> None:
    answers_medium = {"q1": "#### 4", "q2": "#### 9", "q3": "I don't know", "q4": "Paris"}
    answers_large = {"q1": "#### 4", "q2": "#### 10", "q3": "#### 7", "q4": "Lyon"}
    medium = ScriptedGenerator("/m/medium-model", lambda p: answers_medium[p])
    large = ScriptedGenerator("/m/large-model", lambda p: answers_large[p])
    judge = BlindJudge(ScriptedGenerator("/m/judge-model",
                                         lambda p: "A: correct\nB: incorrect" if "Answer A:\nParis" in p
                                         else "A: incorrect\nB: correct"), seed=0)
    items = [BenchmarkItem("q1", "4", "exact_answer", "gsm8k"), BenchmarkItem("q2", "10", "exact_answer", "gsm8k"),
             BenchmarkItem("q3", "7", "exact_answer", "gsm8k"), BenchmarkItem("q4", "Paris", "free_text", "geo")]
    pipeline = OraclePipeline(medium, large, judge, SamplingParams(max_tokens=8), batch_size=3,
                              medium_name="medium-model", large_name="large-model")
    results = pipeline.run(items)
    assert [(r.medium_outcome, r.large_outcome, r.policy) for r in results] == [
        (C, C, PolicyLabel.STANDARD), (I, C, PolicyLabel.COMPLEX), (K, C, PolicyLabel.COMPLEX),
        (C, I, PolicyLabel.STANDARD)]
    assert [r.judged_by for r in results] == ["auto", "auto", "auto", "judge-model"]
    routing = results[1].routing_records()
    assert [(r["model_name"], r["performance"]) for r in routing] == [("medium-model", 0.0), ("large-model", 1.0)]
    assert set(routing[0]) == {"task_name", "query", "ground_truth", "metric", "model_name", "response", "performance"}
    oracle = results[3].oracle_record()
    assert oracle["policy"] == "Standard_Query" and oracle["judge_unparsed"] == []
    assert "medium" not in "".join(judge.generator.prompts).lower()  # type: ignore[attr-defined]
    summary = summarize([r.oracle_record() for r in results])
    assert summary["policies"] == {"Standard_Query": 2, "Complex_Query": 2, "Ambiguous_Query": 0}
    assert summary["accuracy"] == {"medium": 0.5, "large": 0.75} and summary["judged"] == 1


def test_pipeline_without_judge_refuses_unscorable_items_before_generating() -> None:
    medium = ScriptedGenerator("medium", lambda p: "x")
    large = ScriptedGenerator("large", lambda p: "x")
    pipeline = OraclePipeline(medium, large, None, SamplingParams(), batch_size=2)
    with pytest.raises(ConfigError, match="configure a judge"):
        pipeline.run([BenchmarkItem("q", "Paris", "free_text")])
    assert medium.prompts == [] and large.prompts == []


# --- resumable writer -----------------------------------------------------------------------------
def test_resumable_writer_survives_a_truncated_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "out.jsonl"
    with ResumableJsonlWriter(path) as writer:
        for i in range(3):
            assert writer.write({"query": f"q{i}", "value": i})
        assert not writer.write({"query": "q1", "value": 99})  # never twice
    with path.open("a") as handle:  # a crash in the middle of the 4th record
        handle.write('{"query": "q3", "val')
    with caplog.at_level(logging.WARNING):
        writer = ResumableJsonlWriter(path)
    assert writer.dropped_truncated and "truncated" in caplog.text
    assert len(writer) == 3 and all(writer.done(f"q{i}") for i in range(3)) and not writer.done("q3")
    written = [q for q in ("q0", "q1", "q2", "q3", "q4") if writer.write({"query": q})]
    writer.close()
    assert written == ["q3", "q4"]
    lines = path.read_text().splitlines()
    assert [json.loads(line)["query"] for line in lines] == ["q0", "q1", "q2", "q3", "q4"]


def test_resumable_writer_keeps_a_complete_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"query": "a"}\n{"query": "b"}')
    with ResumableJsonlWriter(path) as writer:
        assert writer.done("b") and not writer.dropped_truncated
        writer.write({"query": "c"})
    assert [json.loads(line)["query"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_resumable_writer_rejects_corruption_before_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"query": "a"}\n{broken\n{"query": "c"}\n')
    with pytest.raises(DataError, match="out.jsonl:2"):
        ResumableJsonlWriter(path)


def test_oracle_outputs_resume_on_the_oracle_marker(tmp_path: Path) -> None:
    medium = ScriptedGenerator("medium", lambda p: "#### 1")
    large = ScriptedGenerator("large", lambda p: "#### 2")
    pipeline = OraclePipeline(medium, large, None, SamplingParams(), batch_size=2)
    items = [BenchmarkItem(f"q{i}", "1", "exact_answer", "t") for i in range(4)]
    with OracleOutputs(tmp_path) as outputs:
        for result in pipeline.run(items[:2]):
            outputs.write(result)
        # a crash after the routing lines of q2 but before its oracle line
        for line in pipeline.run(items[2:3])[0].routing_records():
            outputs.routing.write(line)
    with OracleOutputs(tmp_path) as outputs:
        pending = outputs.pending(items)
        assert [i.query for i in pending] == ["q2", "q3"]
        for result in pipeline.run(pending):
            outputs.write(result)
    routing = [json.loads(line) for line in (tmp_path / "routing_data.jsonl").read_text().splitlines()]
    assert len(routing) == 8 and len({(r["query"], r["model_name"]) for r in routing}) == 8


# --- benchmark input ------------------------------------------------------------------------------
def test_read_benchmark_formats_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join([
        json.dumps({"query": "q1", "ground_truth": 18, "metric": "exact_answer", "task_name": "gsm8k"}),
        json.dumps({"question": "q2", "answer": "3 + 4 = <<3+4=7>>7 apples\n#### 1,007"}),
        json.dumps({"query": "q1", "ground_truth": "18", "model_name": "other"}),   # routing data repeat
        "",
    ]))
    items = read_benchmark(path)
    assert items == [BenchmarkItem("q1", "18", "exact_answer", "gsm8k"),
                     BenchmarkItem("q2", "1007", "exact_answer", "gsm8k")]
    assert len(read_benchmark(path, limit=1)) == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "ok", "ground_truth": "1"}) + "\n" + json.dumps({"ground_truth": "2"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'query'"):
        read_benchmark(bad)
    bad.write_text(json.dumps({"query": "ok"}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        read_benchmark(bad)
    bad.write_text(json.dumps({"query": "ok", "ground_truth": "1"}) + "\n"
                   + json.dumps({"query": "ok", "ground_truth": "2"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'ground_truth'"):
        read_benchmark(bad)


def test_the_configs_gsm8k_benchmark_is_read_from_the_published_routing_data(gsm8k_test_path: Path) -> None:
    """configs/train/oracle.yaml's benchmark: GSM8K's test queries in routing-data form (each query on one line
    per model, with the reference number), read once per query and scored without a judge."""
    import yaml

    from routers.oracle.pipeline import require_auto_scorable
    from routers.paths import resolve_path

    benchmark = yaml.safe_load((ROOT / "configs/train/oracle.yaml").read_text())["benchmark"]
    assert resolve_path(benchmark) == gsm8k_test_path
    items = read_benchmark(gsm8k_test_path, limit=40)
    assert len(items) == 40 and len({item.query for item in items}) == 40
    assert {item.task_name for item in items} == {"gsm8k"} and {item.metric for item in items} == {"exact_answer"}
    require_auto_scorable(items)  # each has a reference number


# --- the Ray job end to end -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_oracle_job_end_to_end_and_resume(tmp_path: Path, routing_data_dir: Path) -> None:
    import ray
    import yaml

    from train_jobs.oracle import OracleJobConfig, run_oracle

    for model in ("models/smollm2-135m-instruct", "models/gemma-3-270m"):
        if not (ROOT / model).exists():
            pytest.skip(f"{model} is not present")
    payload = {
        "benchmark": "${LLMROUTER_DATA}/gsm8k_test.jsonl", "limit": 3,  # as configs/train/oracle.yaml names it
        "medium": {"model": str(ROOT / "models/smollm2-135m-instruct")},
        "large": {"model": str(ROOT / "models/gemma-3-270m")},
        "judge": None, "answer_max_tokens": 4, "output_dir": str(tmp_path / "oracle"),
        "ray": {"num_workers": 1, "cpus_per_worker": 1, "batch_size": 2},
    }
    (tmp_path / "oracle.yaml").write_text(yaml.safe_dump(payload))
    config = OracleJobConfig.model_validate(payload)
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, ignore_reinit_error=True)
    try:
        first = run_oracle(config)
        assert first["run"]["written"] == 3 and first["run"]["shards"] == 2 and first["already_done"] == 0
        assert first["oracle"]["queries"] == 3 and sum(first["oracle"]["policies"].values()) == 3
        oracle_lines = (tmp_path / "oracle/oracle_dataset.jsonl").read_text().splitlines()
        routing_lines = (tmp_path / "oracle/routing_data.jsonl").read_text().splitlines()
        assert len(oracle_lines) == 3 and len(routing_lines) == 6
        assert {json.loads(line)["model_name"] for line in routing_lines} == {"smollm2-135m-instruct", "gemma-3-270m"}

        second = run_oracle(config)
        assert second["already_done"] == 3 and second["run"]["written"] == 0
        assert (tmp_path / "oracle/oracle_dataset.jsonl").read_text().splitlines() == oracle_lines
        assert second["oracle"] == first["oracle"]
    finally:
        ray.shutdown()

    from routers.policy.datasets import read_oracle_records

    assert len(read_oracle_records(tmp_path / "oracle/oracle_dataset.jsonl")) == 3
