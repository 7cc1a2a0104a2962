"""End to end, N models: ``configs/serve_multi.yaml`` (three answer models on this CPU, N-model routers trained
on the LLMRouter pool) in a real Serve app, called over HTTP with the ``openai`` client: a chat through the
N-model router, ``/v1/route`` and ``/v1/models``; the causal-LM router scoring every name in its RouterLM
deployment; the policy router over three models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.serve_helpers import ROOT, ask, default_app_args, deploy_config, free_port, start_serve, stop_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
CONFIG = "configs/serve_multi.yaml"
NEEDED = ["models/smollm2-135m-instruct", "models/gemma-3-270m", "models/all-minilm-l6-v2",
          "artifacts/nmodel_mlp_llmrouter/router.json", "artifacts/policy_router/router.json",
          "artifacts/nmodel_causal_llmrouter/router.json"]


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    missing = [p for p in NEEDED if not (ROOT / p).exists()]
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing: {missing}")
    url = start_serve(default_app_args(CONFIG), free_port(), num_cpus=2, declarative=True)
    try:
        yield url
    finally:
        stop_serve()


def test_chat_route_and_models_through_the_n_model_router(served: str, openai_client: Any) -> None:
    args = yaml.safe_load((ROOT / CONFIG).read_text())["applications"][0]["args"]
    served_names = {key: spec["served_name"] for key, spec in args["models"].items()}
    assert len(served_names) >= 3

    ids = {m.id for m in openai_client.models.list().data}
    assert {"router", "router-nmodel"} | set(served_names.values()) <= ids

    # a cost weight that makes every extra cent count: the cheapest model answers
    cheap = ask(openai_client, "router-nmodel:cost=1e9", max_tokens=8)
    routing = cheap.model_extra["routing"]
    assert cheap.choices[0].message.content is not None
    assert routing["router"] == "nmodel" and routing["fallback"] is False
    assert routing["model_key"] == "small" and cheap.model == served_names["small"]
    assert routing["rule"] == "cost=1e+09"
    candidates = {c["model_key"]: c for c in routing["candidates"]}
    assert set(candidates) == {"small", "medium", "large"}
    assert all({"model", "data_model", "quality", "cost"} <= set(c) for c in candidates.values())
    spec = args["models"]["small"]
    usage = cheap.usage
    assert routing["cost"] == pytest.approx((usage.prompt_tokens * spec["input_price"]
                                             + usage.completion_tokens * spec["output_price"]) / 1e6)

    # quality first: the best predicted candidate answers (by the default router, `router`)
    best = ask(openai_client, "router:cost=0", "Prove that the square root of 2 is irrational.", max_tokens=8)
    routing = best.model_extra["routing"]
    top = max(routing["candidates"], key=lambda c: c["quality"])
    assert routing["router"] == "nmodel" and routing["model_key"] == top["model_key"]
    assert best.model == served_names[top["model_key"]]

    # route-only, a batch, under a per-query budget
    queries = ["What is 2 + 2?", "Write a Python function that merges two sorted lists.",
               "Who wrote Pride and Prejudice?"]
    routed = httpx.post(f"{served}/v1/route", json={"model": "router-nmodel:budget=0.00005", "queries": queries},
                        timeout=120)
    assert routed.status_code == 200, routed.text
    body = routed.json()
    assert body["router"] == "nmodel" and [item["query"] for item in body["data"]] == queries
    for item in body["data"]:
        chosen = next(c for c in item["candidates"] if c["model_key"] == item["model_key"])
        assert chosen["cost"] <= 0.00005 and item["rule"] == "budget=5e-05"
        assert item["model"] == served_names[item["model_key"]]

    bad = httpx.post(f"{served}/v1/route", json={"model": "router-nmodel:share=2", "query": "hi"}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"


def test_the_policy_router_sends_each_label_to_the_model_its_map_names(served: str, tmp_path: Any) -> None:
    """configs/policy_map_multi.json names all three app models (Ambiguous -> medium): the routing object's
    model is the map's for the label the Gemma router wrote; a map edited to send every label to ``medium``
    (hot swap, no restart) sends every query there."""
    import json

    queries = ["What is 2 + 2?", "Prove that there are infinitely many primes.", "it",
               "Write a Python function that merges two sorted lists.", "Tell me about that thing."]

    def route() -> list[dict[str, Any]]:
        routed = httpx.post(f"{served}/v1/route", json={"model": "router-policy", "queries": queries}, timeout=300)
        assert routed.status_code == 200, routed.text
        return routed.json()["data"]

    policy_map = json.loads((ROOT / "configs/policy_map_multi.json").read_text())
    for item in route():
        expected = policy_map[item["policy"]]
        assert item["model_key"] == expected and item["use_large"] == (expected == "large"), item
    everything_medium = tmp_path / "medium.json"
    everything_medium.write_text(json.dumps({label: "medium" for label in policy_map}))
    deploy_config(default_app_args(CONFIG), {"PolicyRouter": {"policy_map": str(everything_medium)}})
    assert {(item["model_key"], item["model"]) for item in route()} == {("medium", "gemma-3-270m")}


def test_the_causal_lm_router_scores_every_candidate_name_in_its_deployment(served: str, openai_client: Any) -> None:
    """router-causal_n: its LM (the RouterLM deployment) scores the names, the ingress turns them into each
    mapped candidate's expected quality; the served qualities are the library router's on the same queries."""
    import numpy as np

    from routers.nmodel.causal import MultiModelCausalLMRouter

    args = yaml.safe_load((ROOT / CONFIG).read_text())["applications"][0]["args"]
    spec = args["routers"]["multimodel"]["causal_n"]
    assert "router-causal_n" in {m.id for m in openai_client.models.list().data}

    queries = ["What is 2 + 2?", "Write a Python function that merges two sorted lists.",
               "Who wrote Pride and Prejudice?"]
    routed = httpx.post(f"{served}/v1/route", json={"model": "router-causal_n:cost=0", "queries": queries},
                        timeout=300)
    assert routed.status_code == 200, routed.text
    items = routed.json()["data"]
    library = MultiModelCausalLMRouter.load(ROOT / spec["artifact"])
    expected = library.predict_quality(queries)
    for item, row in zip(items, expected, strict=True):
        by_key = {c["model_key"]: c for c in item["candidates"]}
        assert set(by_key) == {"small", "medium", "large"} and item["rule"] == "cost=0"
        for data_model, key in spec["model_map"].items():
            assert by_key[key]["quality"] == pytest.approx(row[library.models.index(data_model)], abs=1e-4)
        assert item["model_key"] == max(by_key, key=lambda k: (by_key[k]["quality"], -by_key[k]["cost"]))
    assert np.isfinite(expected).all()

    cheap = ask(openai_client, "router-causal_n:cost=1e9", max_tokens=8)
    routing = cheap.model_extra["routing"]
    assert routing["router"] == "causal_n" and routing["model_key"] == "small" and routing["fallback"] is False
    assert cheap.choices[0].message.content is not None


def test_automix_walks_its_three_tiers(served: str, openai_client: Any) -> None:
    """routers.automix.tiers [small, medium, large]: a query stops at the first tier that keeps its answer (the
    shipped POMDP policy decides), or reaches large; the routing object lists the tiers it visited, and a kept
    answer is that tier's. (Chats with a short max_tokens: each tier answers and verifies at that length.)
    tests/test_automix.py forces both ends with a threshold policy."""
    tiers = ["small", "medium", "large"]
    for query in ("What is 2 + 2?", "Name the capital of France.", "Prove that the square root of 2 is irrational."):
        answer = ask(openai_client, "router-automix", query, max_tokens=8)
        routing = answer.model_extra["routing"]
        assert routing["router"] == "automix" and routing["fallback"] is False, routing
        visited = routing["tiers"]
        assert [t["model"] for t in visited] == tiers[:len(visited)] and 1 <= len(visited) <= 2, routing
        stopped = next((t["model"] for t in visited if t["kept"]), "large")
        assert routing["model_key"] == stopped and all(not t["kept"] for t in visited[:-1]), routing
        assert routing["escalated"] == (stopped == "large") and answer.choices[0].message.content is not None
