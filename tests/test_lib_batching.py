"""route_batch does real batching (one engine call per step) and gives route_single's result per query.

A deterministic stub engine records every call, so the tests can count generate calls and compare results
exactly; the engines' own batching is tested on tiny real models in test_engines.py.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from routers.automix.router import AutomixRouter
from routers.causal_lm.router import CausalLMRouter
from routers.data import RoutingDataset
from routers.engines import Completion, GenerationResult, Generator, SamplingParams
from routers.evaluation import evaluate_router
from tests.conftest import LARGE_NAME, SMALL_NAME, synthetic_dataset, two_candidates
from tests.synthetic_data import VOTES_LLM_DATA, votes_dataset


def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


class StubGenerator(Generator):
    """Replies are a pure function of (prompt, sample index), so batching cannot change them."""

    prompt_format = "chat"

    def __init__(self, reply: Callable[[str, int], str], model_name: str = "stub") -> None:
        self.reply = reply
        self.model_name = model_name
        self.generate_calls: list[tuple[list[str], SamplingParams]] = []
        self.batch_score_calls: list[list[str]] = []
        self._lock = threading.Lock()

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return "<user>" + messages[-1]["content"]

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        with self._lock:
            self.generate_calls.append((list(prompts), params))
        return [
            GenerationResult(
                prompt_tokens=len(p.split()),
                completions=[Completion(self.reply(p, j), "stop", 1) for j in range(params.n)],
            )
            for p in prompts
        ]

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        yield self.reply(prompt, 0)

    def sequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        return [-(stable_hash(prompt + c) % 97) / 10.0 for c in continuations]

    def batch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        self.batch_score_calls.append(list(prompts))
        return [self.sequence_logprobs(p, continuations) for p in prompts]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


QUERIES = [f"What is {i} times {i + 3}?" for i in range(12)]


# --- AutoMix ---------------------------------------------------------------------------------------
def automix_reply(prompt: str, sample: int) -> str:
    if "Proposed answer" in prompt:  # a verification prompt: 0-4 "Yes" verdicts depending on the query
        confirmed = stable_hash(prompt) % 5
        return "Yes" if sample < confirmed else ("maybe" if sample == confirmed else "No")
    return f"#### {stable_hash(prompt) % 100}"


@pytest.fixture
def automix() -> AutomixRouter:
    router = AutomixRouter({"method": "POMDP", "num_samples": 4, "cost_weight": 0.005}, VOTES_LLM_DATA)
    router.fit(votes_dataset(200, seed=1))
    small, large = StubGenerator(automix_reply, "small"), StubGenerator(lambda p, j: "large answer", "large")
    return router.bind_engines(generators={"small": small, "large": large})


def test_automix_route_batch_makes_one_generate_call_per_step(automix: AutomixRouter) -> None:
    small = automix.generators["small"]
    large = automix.generators["large"]
    results = automix.route_batch(batch=[{"query": q} for q in QUERIES], task_name="general")
    assert len(small.generate_calls) == 2  # type: ignore[attr-defined]
    (answer_prompts, answer_params), (verify_prompts, verify_params) = small.generate_calls  # type: ignore[attr-defined]
    assert len(answer_prompts) == len(verify_prompts) == len(QUERIES)
    assert answer_params.n == 1 and verify_params.n == 4 and verify_params.temperature > 0
    assert all("Proposed answer" in p for p in verify_prompts)
    escalated = [r for r in results if r["route_to_llm"]]
    assert escalated and len(escalated) < len(results), "the stub verdicts should give both decisions"
    assert len(large.generate_calls) == 1 and len(large.generate_calls[0][0]) == len(escalated)  # type: ignore[attr-defined]
    assert all(r["response"] == "large answer" for r in escalated)
    assert all(r["response"] == r["small_response"] for r in results if not r["route_to_llm"])
    assert {r["task_name"] for r in results} == {"general"}


def test_automix_route_batch_equals_route_single(automix: AutomixRouter) -> None:
    batched = automix.route_batch(QUERIES)
    singles = [automix.route_single(q) for q in QUERIES]
    assert batched == singles
    for result in singles:
        assert result["verification_score"] == result["verdicts"]["yes"] / 4
        assert set(result) >= {"model_name", "verification_score", "route_to_llm", "cost", "reason", "response"}


def test_automix_route_only_leaves_escalated_answers_empty(automix: AutomixRouter) -> None:
    del automix.generators["large"]
    results = automix.route_batch(QUERIES)
    assert all(r["response"] is None for r in results if r["route_to_llm"])


def test_automix_sampling_with_workers_matches_one_worker() -> None:
    data = votes_dataset(40, seed=3, with_votes=False)
    sampled = []
    for workers in (1, 3):
        router = AutomixRouter({"num_samples": 4, "sampling_batch_size": 6, "max_workers": workers,
                                "verbose": False}, VOTES_LLM_DATA)
        stub = StubGenerator(automix_reply)
        router.bind_engines(generators={"small": stub})
        router.fit(data)
        assert len(stub.generate_calls) == 7  # ceil(40 / 6) chunks, each one call with n samples
        sampled.append((router.training_summary["sampled_verdicts"], router.reference_scores()))
    assert sampled[0][0] == sampled[1][0]
    np.testing.assert_array_equal(sampled[0][1], sampled[1][1])


# --- causal-LM router --------------------------------------------------------------------------------
def causal_reply(prompt: str, sample: int) -> str:
    return [SMALL_NAME, f" {LARGE_NAME}\nQuery:", "no idea"][stable_hash(prompt) % 3]


@pytest.fixture
def causal() -> tuple[CausalLMRouter, StubGenerator]:
    router = CausalLMRouter({}, two_candidates())
    router.resolve_pair()
    router.fitted = True  # the stub stands in for a trained router model
    stub = StubGenerator(causal_reply)
    router.bind_engines(generators={"router": stub})
    return router, stub


def test_causal_route_batch_is_one_generate_call_and_one_scoring_pass(
        causal: tuple[CausalLMRouter, StubGenerator]) -> None:
    router, stub = causal
    results = router.route_batch(batch=QUERIES, task_name="general")
    assert len(stub.generate_calls) == 1 and len(stub.generate_calls[0][0]) == len(QUERIES)
    assert stub.batch_score_calls == [[router.router_prompt(q) for q in QUERIES]]
    methods = {r["parse_method"] for r in results}
    assert {"exact", "fallback"} <= methods, "the stub should produce parsed and unparseable names"
    for result in results:
        assert result["model_name"] == result["parsed_model"]
        assert result["parse_failed"] == (result["parse_method"] == "fallback")
        assert result["task_name"] == "general" and 0.0 <= result["router_score"] <= 1.0


def test_causal_route_batch_equals_route_single(causal: tuple[CausalLMRouter, StubGenerator]) -> None:
    router, _ = causal
    assert router.route_batch(QUERIES) == [router.route_single(q) for q in QUERIES]
    router.with_threshold(0.5)  # an explicit threshold: the score decides, batched or not
    batched = router.route_batch(QUERIES)
    assert batched == [router.route_single(q) for q in QUERIES]
    assert all(r["decided_by"] == "threshold" and r["use_large"] == (r["router_score"] < 0.5) for r in batched)


def test_causal_evaluation_reports_the_generated_decisions(causal: tuple[CausalLMRouter, StubGenerator]) -> None:
    router, _ = causal
    rng = np.random.default_rng(0)
    data: RoutingDataset = synthetic_dataset(rng.random(30) < 0.5, rng.random(30) < 0.8,
                                             queries=[f"question {i}?" for i in range(30)])
    report, curve = evaluate_router(router, data)
    expected = np.mean([r["use_large"] for r in router.route_batch(data.queries)])
    assert report.threshold is None and report.large_share == pytest.approx(expected)
    assert len(curve.large_share) > 2  # the sweep still comes from the scores
    router.with_threshold(0.5)
    scored, _ = evaluate_router(router, data)
    assert scored.threshold == 0.5
    assert scored.large_share == pytest.approx(float(np.mean(router.dataset_scores(data) < 0.5)))
    assert scored.apgr == pytest.approx(report.apgr)


def test_base_route_batch_loops_route_single_for_other_routers(make_routing_dataset: Any) -> None:
    from routers.baselines import SmallestLLMRouter

    router = SmallestLLMRouter({}, two_candidates())
    router.resolve_pair()
    results = router.route_batch(batch=["a?", {"query": "b?", "task_name": "t"}], task_name="general")
    assert [r["model_name"] for r in results] == [SMALL_NAME, SMALL_NAME]
    assert [r["task_name"] for r in results] == ["general", "t"]
    assert results[0] == {**router.route_single("a?"), "task_name": "general"}


# --- Policy router -----------------------------------------------------------------------------------
def policy_reply(prompt: str, sample: int) -> str:
    return ["Standard_Query", "Complex_Query", "Ambiguous_Query", "no idea"][stable_hash(prompt) % 4]


def test_policy_route_batch_is_one_generate_call_and_equals_route_single() -> None:
    from routers.policy.router import PolicyRouter

    router = PolicyRouter({}, two_candidates())
    router.resolve_pair()
    router.fitted = True  # the stub stands in for a trained policy model
    stub = StubGenerator(policy_reply)
    router.bind_engines(generators={"router": stub})
    batched = router.route_batch(batch=QUERIES, task_name="general")
    assert len(stub.generate_calls) == 1 and len(stub.generate_calls[0][0]) == len(QUERIES)
    singles = [router.route_single(q) for q in QUERIES]
    assert [{k: v for k, v in r.items() if k != "task_name"} for r in batched] == singles
    policies = {r["policy"] for r in batched}
    assert len(policies) >= 2, "the stub should produce several policies"
    for result in batched:
        assert result["task_name"] == "general"
        assert result["use_large"] == (result["policy"] == "Complex_Query")
