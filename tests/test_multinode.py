"""Losing a worker node mid-traffic: the app on a 3-node local Ray cluster keeps answering, cleanly.

``ray.cluster_utils.Cluster`` runs a head (1 CPU: Serve controller, the HTTP proxy, the ingress and the
large model, pinned there by a ``head`` custom resource) and two workers (2 CPUs each, one
``llm_worker`` resource each) holding one replica of the small model apiece (``max_replicas_per_node:
1``). The routers are the baselines only (no embedder, no router models) to keep the cluster light.

Three client threads send ``router-smallest`` chat requests back to back while one worker is killed
(``remove_node(allow_graceful=False)``: its raylet and replica die as a crashed pod would). Every request
must end in a 200 or a clean HTTP error within the client timeout (no hang), and requests after the
cluster notices the loss must mostly succeed on the surviving replica. The counts are printed
(``pytest -s``) so the figure can be reported.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from serve_helpers import ROOT, default_app_args, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODEL_DIRS = ("models/smollm2-135m-instruct", "models/gemma-3-270m")
CLIENT_TIMEOUT_S = 60.0
SENDERS = 3                   # concurrent clients, so requests are in flight on the replica that dies
BEFORE_REMOVAL_S = 8.0
AFTER_REMOVAL_S = 45.0
RECOVERED_AFTER_S = 20.0      # requests sent this long after the removal count as "after recovery"


@dataclass
class Outcome:
    sent_at: float            # seconds relative to the node removal (negative: before it)
    status: int | None        # None: no HTTP response (connection error or client timeout)
    detail: str
    elapsed_s: float


@dataclass
class Traffic:
    """Back-to-back requests from background threads (each runs :meth:`run`) until ``stop`` is set."""

    url: str
    removed_at: float = float("inf")
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def send_one(self, client: httpx.Client, i: int) -> Outcome:
        body = {"model": "router-smallest", "max_tokens": 4,
                "messages": [{"role": "user", "content": f"Say hello number {i}."}]}
        started = time.monotonic()
        sent_at = started - self.removed_at if self.removed_at != float("inf") else -1e9
        try:
            response = client.post(f"{self.url}/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return Outcome(sent_at, None, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        if response.status_code == 200:
            routing = response.json()["routing"]
            detail = f"answered by {routing['model_key']}" + (" (retried)" if "retried_on" in routing else "")
        else:
            detail = clean_error(response)
        return Outcome(sent_at, response.status_code, detail, time.monotonic() - started)

    def run(self) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
            i = 0
            while not self.stop.is_set():
                self.outcomes.append(self.send_one(client, i))   # list.append is atomic under the GIL
                i += 1


def clean_error(response: httpx.Response) -> str:
    """The error's type and message when the body is the API's JSON error; flags anything else."""
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error.get('type')}: {str(error.get('message'))[:160]}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} NOT-JSON: {response.text[:160]!r}"


def app_args() -> dict[str, Any]:
    args = default_app_args()
    args["embedder"] = None
    args["routers"] = {"hybrid": None, "automix": None}
    args["default_router"] = "smallest"
    args["models"] = {key: args["models"][key] for key in ("small", "large")}
    small, large = args["models"]["small"]["deployment"], args["models"]["large"]["deployment"]
    small.update(num_replicas=2, max_replicas_per_node=1,
                 ray_actor_options={"num_cpus": 0.25, "resources": {"llm_worker": 1}})
    # the ingress and the large model stay on the head, so the removed worker takes a small replica only
    on_head = {"num_cpus": 0.25, "resources": {"head": 0.01}}
    large["ray_actor_options"] = on_head
    args["ingress"] = {"deployment": {"num_replicas": 1, "max_ongoing_requests": 64,
                                      "max_queued_requests": 256, "ray_actor_options": on_head}}
    # an answer call stuck on a dead replica must turn into an error well inside the client timeout
    args["timeouts"] = {"router_s": 10, "answer_s": 30}
    return args


def replica_nodes(deployment: str) -> list[str]:
    """Node ids of the live replicas of ``deployment`` (from the GCS actor table: no dashboard needed)."""
    from ray._private.state import actors

    return [a["Address"]["NodeID"] for a in actors().values()
            if a["State"] == "ALIVE" and f"#{deployment}#" in (a.get("Name") or "")]


def summarize(outcomes: list[Outcome]) -> Counter[str]:
    """Outcome kinds and counts: "200 answered by small", "503 server_error: ...", "no response: ..."."""
    return Counter(("no response: " if o.status is None else "" if o.status != 200 else "200 ")
                   + o.detail[:90] for o in outcomes)


def test_requests_survive_losing_a_worker_node() -> None:
    missing = [d for d in MODEL_DIRS if not (ROOT / d / "config.json").exists()]
    if missing:
        pytest.skip(f"real models not set up ({', '.join(missing)}); run `bash scripts/setup.sh`")
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve_app.app import build_app

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    try:
        workers = [cluster.add_node(num_cpus=2, resources={"llm_worker": 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(app_args()), name="llmrouter", route_prefix="/")
        url = f"http://127.0.0.1:{port}"

        small_nodes = replica_nodes("AnswerModel-small")
        worker_ids = {w.node_id for w in workers}
        assert sorted(small_nodes) == sorted(worker_ids), "one small replica on each worker"

        traffic = Traffic(url)
        senders = [threading.Thread(target=traffic.run, daemon=True) for _ in range(SENDERS)]
        for sender in senders:
            sender.start()
        time.sleep(BEFORE_REMOVAL_S)
        traffic.removed_at = time.monotonic()
        cluster.remove_node(workers[0], allow_graceful=False)
        time.sleep(AFTER_REMOVAL_S)
        traffic.stop.set()
        for sender in senders:
            sender.join(timeout=CLIENT_TIMEOUT_S + 5)
            assert not sender.is_alive(), "a client is stuck past its own timeout"
        assert workers[0].node_id not in replica_nodes("AnswerModel-small"), "the dead node's replica is gone"

        outcomes = traffic.outcomes
        before = [o for o in outcomes if o.sent_at < 0]
        during = [o for o in outcomes if 0 <= o.sent_at < RECOVERED_AFTER_S]
        after = [o for o in outcomes if o.sent_at >= RECOVERED_AFTER_S]
        failed = [o for o in outcomes if o.status != 200]
        print(f"\nnode removal: {len(failed)} failed / {len(outcomes)} requests "
              f"(before {len(before)}, first {RECOVERED_AFTER_S:.0f}s after {len(during)}, "
              f"later {len(after)}); "
              f"slowest {max(o.elapsed_s for o in outcomes):.1f}s")
        for phase, items in (("before", before), ("during", during), ("after", after)):
            print(f"  {phase}: {dict(summarize(items))}")
        for o in failed:
            print(f"  failed at t={o.sent_at:+.1f}s after {o.elapsed_s:.1f}s: {o.detail}")

        settled_before = [o for o in before if o.sent_at + o.elapsed_s < 0]
        assert settled_before and all(o.status == 200 for o in settled_before), "all good before the removal"
        no_response = [o for o in outcomes if o.status is None]
        assert not no_response, f"requests without an HTTP response (hang, dropped connection): {no_response}"
        unclean = [o for o in failed if "NOT-JSON" in o.detail]
        assert not unclean, f"errors without the API's JSON error body: {unclean}"
        assert len(after) >= 3, "too few requests after recovery to judge"
        recovered = sum(o.status == 200 for o in after) / len(after)
        assert recovered >= 0.8, f"only {recovered:.0%} of the requests after recovery succeeded"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
