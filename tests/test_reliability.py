"""Reliability of the ingress on the real app: auth, fuzzing, killed replicas under load, backpressure."""

from __future__ import annotations

import concurrent.futures as futures
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serve_helpers import ROOT, default_app_args, free_port, start_serve, stop_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
NEEDED = ["models/smollm2-135m-instruct", "models/gemma-3-270m", "models/all-minilm-l6-v2", "artifacts/hybrid_llm/router.json"]


def reliability_args() -> dict[str, Any]:
    """The default app with only the Hybrid router and baselines, tiny generations, auth and tight queues."""
    args = default_app_args()
    args["routers"] = {"hybrid": args["routers"]["hybrid"], "automix": None}
    args["limits"] = {"max_tokens": 4, "default_max_tokens": 2, "max_n": 2, "max_prompt_chars": 2000}
    args["auth"] = {"api_keys": [KEY], "api_keys_env": None}
    args["timeouts"] = {"router_s": 20, "answer_s": 60}
    args["ingress"] = {"deployment": {"max_ongoing_requests": 8, "max_queued_requests": 8,
                                      "ray_actor_options": {"num_cpus": 0.25}}}
    return args


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    missing = [p for p in NEEDED if not (ROOT / p).exists()]
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing: {missing}")
    url = start_serve(reliability_args(), free_port())
    try:
        yield url
    finally:
        stop_serve()


def post_chat(url: str, model: str, headers: dict[str, str] | None = AUTH, timeout: float = 120) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Name a primary color."}], "max_tokens": 2}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def test_api_keys_are_required_and_checked(base_url: str) -> None:
    missing = post_chat(base_url, "router-smallest", headers=None)
    wrong = post_chat(base_url, "router-smallest", headers={"Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert KEY not in wrong.text
    assert post_chat(base_url, "router-smallest").status_code == 200
    assert httpx.get(f"{base_url}/healthz").status_code == 200


def test_fuzzing_the_openapi_schema_finds_no_server_errors(base_url: str) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(headers=AUTH, timeout=120)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:200]}")

        check()
    assert not failures, failures[:5]


def kill_replica(deployment: str) -> str:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if name.startswith("SERVE_REPLICA::") and f"#{deployment}#" in name:
            ray.kill(ray.get_actor(name, namespace=actor["namespace"]), no_restart=True)
            return name
    raise AssertionError(f"no replica of {deployment} found")


def load_while(url: str, model: str, action: Any, n: int = 24, workers: int = 6) -> Counter:
    """Send ``n`` requests from ``workers`` threads; run ``action`` once the load is flowing."""
    outcomes: Counter = Counter()
    with futures.ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(post_chat, url, model) for _ in range(n)]
        time.sleep(1.0)
        action()
        for future in pending:
            try:
                response = future.result(timeout=180)
            except Exception as exc:  # a hang or a dropped connection would land here
                outcomes[f"exception:{type(exc).__name__}"] += 1
                continue
            if response.status_code == 200:
                routing = response.json()["routing"]
                outcomes["200-fallback" if routing.get("fallback") else
                         "200-retried" if routing.get("retried_on") else "200"] += 1
            else:
                assert response.json()["error"]["message"], response.text
                outcomes[str(response.status_code)] += 1
    return outcomes


def test_killing_the_small_model_replica_under_load_loses_nothing(base_url: str) -> None:
    outcomes = load_while(base_url, "router-smallest", lambda: kill_replica("AnswerModel-small"))
    print("small replica killed:", dict(outcomes))
    assert sum(outcomes.values()) == 24
    assert not any(k.startswith("exception") for k in outcomes), outcomes
    assert set(outcomes) <= {"200", "200-retried", "503"}
    assert outcomes["200"] + outcomes["200-retried"] >= 12
    assert wait_until_ok(base_url, "router-smallest")


def test_killing_the_embedder_falls_back_and_recovers(base_url: str) -> None:
    outcomes = load_while(base_url, "router-hybrid", lambda: kill_replica("Embedder"))
    print("embedder killed:", dict(outcomes))
    assert sum(outcomes.values()) == 24
    assert not any(k.startswith("exception") for k in outcomes), outcomes
    assert set(outcomes) <= {"200", "200-fallback", "200-retried", "503"}
    assert wait_until_ok(base_url, "router-hybrid", require_routed=True)


def wait_until_ok(url: str, model: str, require_routed: bool = False, within_s: float = 120) -> bool:
    deadline = time.time() + within_s
    while time.time() < deadline:
        response = post_chat(url, model)
        if response.status_code == 200 and not (require_routed and response.json()["routing"]["fallback"]):
            return True
        time.sleep(2)
    return False


def test_backpressure_sheds_load_with_503_not_a_hang(base_url: str) -> None:
    with futures.ThreadPoolExecutor(48) as pool:
        results = list(pool.map(lambda _: post_chat(base_url, "router-largest", timeout=180), range(48)))
    codes = Counter(r.status_code for r in results)
    print("48 concurrent requests against 8 ongoing + 8 queued:", dict(codes))
    assert set(codes) <= {200, 503}
    assert codes[200] >= 8 and codes[503] >= 1
