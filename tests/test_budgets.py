"""Per-key budgets and rate limits: the ledger's arithmetic as plain Python (windows, buckets, reservations,
the overrun bound), the ingress with a fake ledger over HTTP (429s with Retry-After, the small-model mode,
route-only rate limits, key ids that are never the secret), and one Ray test: the detached ledger actor is
shared by two ingress instances and outlives them."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from routers.errors import ConfigError
from serve_app import guard as guard_module
from serve_app import ingress as ingress_module
from serve_app.budgets import KeyLedger
from serve_app.config import AppConfig, AuthSettings
from serve_app.guard import GuardSettings, key_id_of, load_named_keys
from tests.fake_handles import Handle, Stream, answer_model, answering, fake_metrics, remote_error, value

SECRET_A = "sk-team-a-0123456789abcdef"
SECRET_B = "sk-unnamed-fedcba9876543210"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ledger(now: float = 1000.0) -> tuple[KeyLedger, Clock]:
    clock = Clock(now)
    return KeyLedger(clock=clock), clock


# --- the ledger, plain Python ------------------------------------------------------------------------------
def test_rate_bucket_refills_at_requests_per_minute() -> None:
    book, clock = ledger()
    policy = {"requests_per_minute": 60, "burst": 2}
    assert [book.admit("a", policy, 0.0, spends=False)["allowed"] for _ in range(3)] == [True, True, False]
    refused = book.admit("a", policy, 0.0, spends=False)
    assert refused["reason"] == "rate" and refused["retry_after_s"] == pytest.approx(1.0)
    clock.now += 0.5
    assert book.admit("a", policy, 0.0, spends=False)["retry_after_s"] == pytest.approx(0.5)
    clock.now += 0.5
    assert book.admit("a", policy, 0.0, spends=False)["allowed"]
    assert book.admit("b", policy, 0.0, spends=False)["allowed"]  # each key its own bucket
    # default burst: one minute's requests
    assert sum(book.admit("c", {"requests_per_minute": 5}, 0.0)["allowed"] for _ in range(8)) == 5


def test_budget_windows_are_fixed_and_aligned_and_say_when_they_free_up() -> None:
    book, clock = ledger(now=1030.0)
    policy = {"usd_per_window": 1.0, "window_s": 100.0}
    first = book.admit("a", policy, 0.4)
    book.settle("a", first["ticket"], 0.5)
    second = book.admit("a", policy, 0.4)  # 0.5 spent + 0.4 held <= 1.0
    assert second["allowed"]
    # 0.5 spent + 0.4 held + 0.4 > 1: the budget is held by a request in flight: retry soon
    held = book.admit("a", policy, 0.4)
    assert not held["allowed"] and held["reason"] == "budget" and held["retry_after_s"] == 1.0
    book.settle("a", second["ticket"], 0.45)
    spent = book.admit("a", policy, 0.4)  # 0.95 spent: nothing frees up before the window ends at 1100
    assert spent["reason"] == "budget" and spent["retry_after_s"] == pytest.approx(70.0)
    clock.now = 1100.0
    assert book.admit("a", policy, 0.4)["allowed"]
    assert book.snapshot("a")["spent_usd"] == 0.0 and book.snapshot("a")["reserved_usd"] == pytest.approx(0.4)


def test_reservations_bound_concurrent_admissions() -> None:
    book, _ = ledger()
    policy = {"usd_per_window": 1.0}
    verdicts = [book.admit("a", policy, 0.25) for _ in range(10)]  # ten in flight at once, none settled
    admitted = [v for v in verdicts if v["allowed"]]
    assert len(admitted) == 4
    for v in admitted:
        book.settle("a", v["ticket"], 0.2)
    assert book.snapshot("a") == {**book.snapshot("a"), "spent_usd": pytest.approx(0.8), "reserved_usd": 0.0}
    # without a reservation every request in flight passes a nearly spent budget
    open_book, _ = ledger()
    assert sum(open_book.admit("a", policy, 0.0)["allowed"] for _ in range(10)) == 10


@pytest.mark.parametrize("excess", [1.0, 2.0])
def test_overrun_is_at_most_what_requests_in_flight_cost_beyond_their_reservation(excess: float) -> None:
    """Random interleavings of admissions and settlements: spend past the budget is bounded by the sum over
    requests in flight of (cost - reservation), zero when every cost is within its reservation."""
    rng = random.Random(7)
    for _ in range(50):
        book, clock = ledger()
        budget = 1.0
        policy = {"usd_per_window": budget, "window_s": 1e9}
        in_flight: list[tuple[str, float, float]] = []  # ticket, reservation, cost
        bound = 0.0
        for _ in range(200):
            clock.now += 0.01
            if in_flight and rng.random() < 0.5:
                ticket, held, cost = in_flight.pop(rng.randrange(len(in_flight)))
                book.settle("k", ticket, cost)
            else:
                held = rng.uniform(0.01, 0.2)
                verdict = book.admit("k", policy, held)
                if verdict["allowed"]:
                    cost = rng.uniform(0.0, held * excess)
                    in_flight.append((verdict["ticket"], held, cost))
                    bound = max(bound, sum(max(0.0, c - r) for _, r, c in in_flight))
        for ticket, _, cost in in_flight:
            book.settle("k", ticket, cost)
        overrun = book.snapshot("k")["spent_usd"] - budget
        if excess == 1.0:
            assert overrun <= 1e-9
        else:
            assert overrun <= bound + 1e-9


def test_small_mode_admits_without_holding_budget_and_still_counts_the_spend() -> None:
    book, _ = ledger()
    policy = {"usd_per_window": 1.0, "when_exhausted": "small"}
    book.settle("a", book.admit("a", policy, 0.9)["ticket"], 0.9)
    verdict = book.admit("a", policy, 0.2)
    assert verdict["allowed"] and verdict["mode"] == "small" and verdict["reservation"] == 0.0
    book.settle("a", verdict["ticket"], 0.01)
    assert book.snapshot("a")["spent_usd"] == pytest.approx(0.91)


def test_a_reservation_never_settled_expires() -> None:
    book, clock = ledger()
    policy = {"usd_per_window": 1.0}
    assert book.admit("a", policy, 1.0, ttl_s=60.0)["allowed"]  # its replica dies: never settled
    assert not book.admit("a", policy, 0.5, ttl_s=60.0)["allowed"]
    clock.now += 61
    assert book.admit("a", policy, 0.5)["allowed"]


def test_a_reservation_is_capped_at_the_budget() -> None:
    book, _ = ledger()
    policy = {"usd_per_window": 1.0}
    big = book.admit("a", policy, 5.0)  # bigger than the budget: admitted only into an idle, unspent window
    assert big["allowed"] and big["reservation"] == 1.0
    assert not book.admit("a", policy, 5.0)["allowed"]


# --- config and key ids ----------------------------------------------------------------------------------
def base_args(**extra: Any) -> dict[str, Any]:
    return {"models": {"small": {"engine": {"model": "org/small"}, "input_price": 1.0, "output_price": 1.0},
                       "large": {"engine": {"model": "org/large"}, "input_price": 10.0, "output_price": 30.0}},
            "routers": {"hybrid": None, "automix": None}, "default_router": "largest", **extra}


def test_budgets_are_off_by_default_and_name_known_keys() -> None:
    assert AppConfig.model_validate(base_args()).budgets is None
    auth = {"keys": {"team-a": {"key": SECRET_A}}, "api_keys_env": None}
    ok = {"keys": {"team-a": {"usd_per_window": 5}, "key-0123abcd": {"requests_per_minute": 10}}}
    assert AppConfig.model_validate(base_args(auth=auth, budgets=ok)).budgets is not None
    with pytest.raises(ValidationError, match="budgets.keys.team-b"):
        AppConfig.model_validate(base_args(auth=auth, budgets={"keys": {"team-b": {"usd_per_window": 5}}}))
    with pytest.raises(ValidationError, match="exactly one of key, key_env"):
        AuthSettings.model_validate({"keys": {"team-a": {"key": "x", "key_env": "Y"}}})
    with pytest.raises(ValidationError, match="when_exhausted"):
        AppConfig.model_validate(base_args(budgets={"default": {"when_exhausted": "later"}}))


def test_named_keys_load_beside_the_legacy_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_A_KEY", SECRET_A)
    monkeypatch.setenv("LEGACY_KEYS", f"{SECRET_B},{SECRET_A}")
    auth = AuthSettings(api_keys_env="LEGACY_KEYS", keys={"team-a": {"key_env": "TEAM_A_KEY"}})
    keys, ids = load_named_keys(auth)
    assert dict(zip(keys, ids, strict=True)) == {SECRET_B.encode(): key_id_of(SECRET_B.encode()),
                                                 SECRET_A.encode(): "team-a"}
    assert key_id_of(SECRET_B.encode()).startswith("key-") and SECRET_B not in key_id_of(SECRET_B.encode())
    with pytest.raises(ConfigError, match="TEAM_B_KEY"):
        load_named_keys(AuthSettings(keys={"team-b": {"key_env": "TEAM_B_KEY"}}))
    with pytest.raises(ConfigError, match="same key"):
        load_named_keys(AuthSettings(api_keys_env=None, keys={"a": {"key": "s"}, "b": {"key": "s"}}))


def test_the_guard_names_the_key_without_changing_who_gets_in() -> None:
    settings = GuardSettings(api_keys=[SECRET_A.encode(), SECRET_B.encode()], key_ids=["team-a"])
    assert settings.identify(f"Bearer {SECRET_A}") == (True, "team-a")
    assert settings.identify(f"Bearer {SECRET_B}") == (True, key_id_of(SECRET_B.encode()))
    assert settings.identify("Bearer nope") == (False, None) and not settings.authorized("Bearer nope")
    assert GuardSettings().identify(None) == (True, "anonymous")


# --- the ingress with a fake ledger ----------------------------------------------------------------------
def fake_ledger(book: KeyLedger, fail: BaseException | None = None) -> Handle:
    """The ledger actor's handle: ``admit`` awaitable (or failing), ``settle`` fire and forget."""
    return Handle(admit=lambda *a: value(fail if fail is not None else book.admit(*a)),
                  settle=lambda *a: book.settle(*a))


def make_ingress(budgets: dict[str, Any], answer: Handle | None = None) -> Any:
    auth = {"keys": {"team-a": {"key": SECRET_A}}, "api_keys": [SECRET_B], "api_keys_env": None}
    cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
    instance = cls(base_args(auth=auth, budgets=budgets, timeouts={"answer_s": 0.5}),
                   {"small": answer or answer_model(stream=Stream(["bl", "ue"])), "large": answer or answer_model()})
    instance.metrics = instance.budgets.metrics = fake_metrics()
    guard_module.GUARD.metrics = instance.metrics
    return instance


@pytest.fixture(autouse=True)
def open_guard_after() -> Iterator[None]:
    """The ingresses here set the module's guard (API keys); later tests expect it open again."""
    yield
    guard_module.configure_guard([], 1_000_000, None)  # type: ignore[arg-type]


@pytest.fixture
def book() -> KeyLedger:
    return KeyLedger()


@pytest.fixture
def served(book: KeyLedger) -> Iterator[Any]:
    """An ingress whose ``team-a`` may spend $0.001 a day (a request reserves $0.00034: two fit at once) and
    whose other keys may make 2 requests a minute."""
    budgets = {"keys": {"team-a": {"usd_per_window": 0.001}}, "default": {"requests_per_minute": 2}}
    instance = make_ingress(budgets)
    instance.budgets.ledger = fake_ledger(book)
    with answering(instance):
        yield instance


def post(path: str, body: dict[str, Any], secret: str = SECRET_A) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=ingress_module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, json=body, headers={"Authorization": f"Bearer {secret}"})

    return asyncio.run(go())


def chat(secret: str = SECRET_A, model: str = "router-largest", **extra: Any) -> httpx.Response:
    return post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Name a color."}],
                                         "max_tokens": 4, **extra}, secret)


def test_a_spent_budget_is_a_429_with_retry_after(served: Any, book: KeyLedger) -> None:
    costs = []
    while (response := chat()).status_code == 200:
        costs.append(response.json()["routing"]["cost"])
    assert len(costs) >= 2 and sum(costs) <= 0.001
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "insufficient_quota" and error["code"] == "budget_exhausted"
    assert "team-a" in error["message"] and SECRET_A not in response.text
    assert 0 < int(response.headers["Retry-After"]) <= 86400
    assert book.snapshot("team-a")["spent_usd"] == pytest.approx(sum(costs))
    assert book.snapshot("team-a")["reserved_usd"] == 0.0
    metrics = served.metrics
    assert metrics.key_refusals.total(key="team-a", reason="budget") == 1
    assert metrics.key_cost.total(key="team-a") == pytest.approx(sum(costs))
    assert metrics.key_requests.total(key="team-a", decision="large") == len(costs)
    assert metrics.requests.total(status="429") == 1
    # route-only spends nothing: a spent budget does not stop it
    assert post("/v1/route", {"model": "router-largest", "query": "hi"}).status_code == 200


def test_the_rate_limit_counts_route_only_calls_too(served: Any) -> None:
    route = {"model": "router-largest", "query": "hi"}
    assert post("/v1/route", route, SECRET_B).status_code == 200
    assert chat(SECRET_B).status_code == 200
    refused = post("/v1/route", route, SECRET_B)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert refused.headers["Retry-After"] == "30"  # 2 a minute: one more in 30 s
    key_id = key_id_of(SECRET_B.encode())
    assert key_id in error["message"] and SECRET_B not in refused.text
    assert served.metrics.key_refusals.total(key=key_id, reason="rate") == 1
    tags = {value for metric in vars(served.metrics).values() for key in metric.totals for _, value in key}
    assert key_id in tags and not any(SECRET_B in str(t) or SECRET_A in str(t) for t in tags)


def test_a_spent_budget_in_small_mode_answers_with_the_small_model(book: KeyLedger) -> None:
    instance = make_ingress({"keys": {"team-a": {"usd_per_window": 0.0001, "when_exhausted": "small"}}})
    instance.budgets.ledger = fake_ledger(book)
    with answering(instance):
        first = chat()
        assert first.status_code == 200 and "budget" not in first.json()["routing"]  # fits: routed as usual
        assert first.json()["routing"]["model_key"] == "large"
        answered = chat()
        assert answered.status_code == 200, answered.text
        routing = answered.json()["routing"]
        assert routing["budget"] == "exhausted -> small model" and routing["model_key"] == "small"
        assert routing["use_large"] is False and routing["fallback"] is False and routing["router"] == "largest"
        streamed = chat(stream=True)
        head = json.loads(streamed.text.splitlines()[0].removeprefix("data: "))
        assert head["routing"]["budget"] == "exhausted -> small model" and head["model"] == "small"
    assert instance.metrics.key_downgrades.total(key="team-a") == 2
    assert instance.metrics.decisions.total(router="largest", decision="budget") == 2
    assert book.snapshot("team-a")["reserved_usd"] == 0.0


def test_a_failed_answer_releases_its_reservation(book: KeyLedger) -> None:
    dead = Handle(generate=lambda m, p: value(remote_error(RuntimeError("CUDA error: device-side assert"))))
    instance = make_ingress({"keys": {"team-a": {"usd_per_window": 1.0}}}, answer=dead)
    instance.budgets.ledger = fake_ledger(book)
    with answering(instance):
        assert chat().status_code >= 500
    assert book.snapshot("team-a") == {**book.snapshot("team-a"), "reserved_usd": 0.0, "spent_usd": 0.0}


@pytest.mark.parametrize("on_error", ["allow", "refuse"])
def test_an_unreachable_ledger_fails_open_or_closed_as_configured(book: KeyLedger, on_error: str) -> None:
    instance = make_ingress({"default": {"usd_per_window": 1.0}, "on_ledger_error": on_error})
    instance.budgets.ledger = fake_ledger(book, fail=TimeoutError())
    with answering(instance):
        response = chat()
    assert response.status_code == (200 if on_error == "allow" else 503), response.text
    assert instance.metrics.ledger_errors.total(on_error=on_error) == 1
    if on_error == "refuse":
        assert response.json()["error"]["code"] == "ledger_unavailable" and response.headers["Retry-After"]


def test_without_budgets_no_ledger_is_called_and_keys_are_still_counted() -> None:
    cls = ingress_module.RouterIngress.func_or_class.__mro__[1]
    auth = {"keys": {"team-a": {"key": SECRET_A}}, "api_keys_env": None}
    instance = cls(base_args(auth=auth), {"small": answer_model(), "large": answer_model()})
    instance.metrics = fake_metrics()
    assert instance.budgets is None
    with answering(instance):
        assert chat().status_code == 200
        assert chat(secret="wrong").status_code == 401
    assert instance.metrics.key_requests.total(key="team-a", decision="large") == 1


# --- the ledger actor on Ray -----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_detached_ledger_is_shared_by_ingress_replicas_and_outlives_them(tmp_path: Path) -> None:
    import ray

    ray.init(num_cpus=1, log_to_driver=False, include_dashboard=False, namespace="budget-test")
    try:
        budgets = {"keys": {"team-a": {"usd_per_window": 0.0004}}, "ledger_name": "test-ledger",
                   "ledger_timeout_s": 30.0}
        first, second = make_ingress(budgets), make_ingress(budgets)
        with answering(first):
            assert chat().status_code == 200  # $0.00005 spent; a request holds $0.00034: one more fits
        with answering(second):
            assert chat().status_code == 200
            refused = chat()
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exhausted"
        actor = ray.get_actor("test-ledger", namespace="llmrouter")
        spent = ray.get(actor.snapshot.remote("team-a"))["spent_usd"]
        assert spent == pytest.approx(0.0001)
        del first, second  # the replicas go; a new one finds the same ledger
        third = make_ingress(budgets)
        assert ray.get(third.budgets.ledger.snapshot.remote("team-a"))["spent_usd"] == pytest.approx(spent)
        with answering(third):
            assert chat().status_code == 429
        ray.kill(actor)
    finally:
        ray.shutdown()
