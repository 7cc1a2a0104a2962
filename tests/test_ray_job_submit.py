"""The README's "Training on Ray" commands, run as written: a local head with Ray's token auth, then
``ray job submit --working-dir .`` of the Hybrid job and of a Ray Train job, and their artifacts routed.

The head is started the way the README says (``LLMROUTER_HOME`` and ``RAY_AUTH_MODE=token`` exported,
``ray start --head``), with its own ports so it cannot meet another cluster on the machine. The jobs'
configs live under that ``LLMROUTER_HOME``, not in the checkout: they are found there (the uploaded
working directory lacks them), and so are the models, which Ray's upload leaves out (``models/`` is
git-ignored). The outputs must land under ``LLMROUTER_HOME``, not in Ray's temporary copy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.job_helpers import MINILM, ROOT, SMOLLM, data_file, save_tiny_router_lm, tiny_routing_files, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

RAY = Path(sys.executable).parent / "ray"
NO_AGENT = "No available agent to submit job"
AGENT_WAIT_S = 120
HEAD_ATTEMPTS = 3


@dataclass
class Head:
    home: Path
    dashboard: str

    def submit(self, *entrypoint: str,
               runtime_env: dict[str, object] | None = None) -> subprocess.CompletedProcess[str]:
        """``ray job submit --working-dir . [--runtime-env-json ...] -- <entrypoint>`` from the checkout."""
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": self.dashboard}
        env.pop("LLMROUTER_HOME", None)  # the client's environment does not reach the job
        command = [str(RAY), "job", "submit", "--working-dir", "."]
        if runtime_env is not None:
            command += ["--runtime-env-json", json.dumps(runtime_env)]
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            done = subprocess.run([*command, "--", *entrypoint], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=900, check=False)
            # The head answers health checks before its job agent registers (slow on a loaded machine); Ray
            # says so and asks to try again, which is what a user does too.
            if NO_AGENT not in done.stdout + done.stderr or time.monotonic() > deadline:
                return done
            time.sleep(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def head_came_up(url: str, process: subprocess.Popen[bytes]) -> bool:
    """The dashboard answers, and the head is still running a few seconds later.

    ``ray start --block`` stops the whole head when any of its processes exits; one that loses the race
    for its port (picked free, taken by another process before it binds) exits just after the dashboard is
    up, so a healthy dashboard alone does not mean the head will stay."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/api/gcs_healthz", timeout=2).status_code == 200:
                time.sleep(5)
                return process.poll() is None
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def stop_head(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops every process it started
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    missing = [str(p) for p in (MINILM, SMOLLM) if not p.exists()]
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing {missing}")
    home = tmp_path_factory.mktemp("llmrouter_home")
    (home / "models").mkdir()
    (home / "models" / MINILM.name).symlink_to(MINILM)
    env = {**os.environ, "LLMROUTER_HOME": str(home), "RAY_AUTH_MODE": "token",
           # an activated .venv: the job's `python` is the project's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = home / "ray_start.log"
    for _attempt in range(HEAD_ATTEMPTS):
        # Its own temp dir: `ray start` records the head in <temp-dir>/ray_current_cluster, and a plain
        # ray.init() in a later test would try to join a head recorded in the default /tmp/ray.
        temp_dir = Path(tempfile.mkdtemp(prefix="ray-job-test-", dir="/tmp"))
        dashboard_port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(RAY), "start", "--head", "--block", f"--port={free_port()}", f"--dashboard-port={dashboard_port}",
                 f"--ray-client-server-port={free_port()}", "--num-cpus=2", "--disable-usage-stats",
                 f"--temp-dir={temp_dir}"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{dashboard_port}"
        if head_came_up(url, process):
            break
        stop_head(process)  # a port taken under it: try again with fresh ports
        shutil.rmtree(temp_dir, ignore_errors=True)
    else:
        pytest.fail(f"the Ray head did not stay up in {HEAD_ATTEMPTS} attempts:\n{log.read_text()[-3000:]}")
    try:
        yield Head(home=home, dashboard=url)
    finally:
        stop_head(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_job_api_refuses_requests_without_the_token(head: Head) -> None:
    assert httpx.get(f"{head.dashboard}/api/jobs/", timeout=10).status_code == 401
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    authorised = httpx.get(f"{head.dashboard}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert authorised.status_code == 200


def test_submitted_hybrid_job_writes_its_artifact_under_llmrouter_home_and_it_routes(head: Head) -> None:
    from routers.engines import EmbedderConfig, build_embedder
    from routers.hybrid.router import HybridLLMRouter

    home = head.home
    tiny_routing_files(home / "data", "mmlu_train.jsonl", 120, 40)
    shutil.copy(data_file("llm_candidates.json"), home / "data" / "llm_candidates.json")
    write_yaml(home / "configs/routers/ci_hybrid.yaml", {
        "router": "hybrid_llm",
        "data_path": {"routing_data_train": "data/train.jsonl", "routing_data_test": "data/test.jsonl",
                      "llm_data": "data/llm_candidates.json"},
        "model_path": {"save_model_path": "artifacts/hybrid_llm"},
        "hparam": {"hidden_layer_sizes": [16], "max_iter": 100},
        "engines": {"embedder": {"model": f"models/{MINILM.name}"}},
    })
    write_yaml(home / "configs/train/ci_hybrid.yaml", {
        "router_config": "configs/routers/ci_hybrid.yaml", "output_dir": "runs/hybrid",
        "ray": {"num_workers": 2, "batch_size": 32}})

    done = head.submit("python", "-m", "train_jobs.hybrid", "--config", "configs/train/ci_hybrid.yaml", "--quiet")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "succeeded" in done.stdout + done.stderr

    metrics = json.loads((home / "runs/hybrid/metrics.json").read_text())
    assert metrics["saved_to"] == str(home / "artifacts/hybrid_llm")
    assert metrics["n_train"] == 120 and metrics["embedding"]["embedded"] > 0  # Ray Data actors embedded them
    assert (home / "runs/hybrid/embedding_cache").is_dir()
    router = HybridLLMRouter.load(home / "artifacts/hybrid_llm")
    router.bind_engines(embedder=build_embedder(EmbedderConfig(model=str(MINILM))))
    decision = router.route_single("Which planet in the solar system has the most moons?")
    assert decision["model_name"] in router.llm_data


def test_submitted_ray_train_job_checkpoints_under_llmrouter_home_and_its_artifact_routes(
        head: Head, monkeypatch: pytest.MonkeyPatch) -> None:
    from routers.causal_lm.router import CausalLMRouter
    from routers.engines import build_generator

    home = head.home
    save_tiny_router_lm(home / "models/tiny-router-lm")
    tiny_routing_files(home / "data/causal", "mmlu_train.jsonl", 32, 8)
    shutil.copy(data_file("llm_candidates.json"), home / "data/causal/llm_candidates.json")
    write_yaml(home / "configs/routers/ci_causal.yaml", {
        "router": "causallm_router",
        "data_path": {"routing_data_train": "data/causal/train.jsonl", "routing_data_test": "data/causal/test.jsonl",
                      "llm_data": "data/causal/llm_candidates.json"},
        "model_path": {"save_model_path": "artifacts/causallm_router"},
        "hparam": {"base_model": "models/tiny-router-lm", "learning_rate": 0.01, "batch_size": 4, "max_length": 48,
                   "max_steps": 4, "num_epochs": 4, "lora_r": 4, "lora_alpha": 8, "max_new_tokens": 8,
                   "balance_labels": False, "lr_schedule": "constant"},
    })
    write_yaml(home / "configs/train/ci_causal.yaml", {
        "router_config": "configs/routers/ci_causal.yaml", "output_dir": "runs/causal_lm", "checkpoint_every": 2,
        "eval_queries": 4, "ray": {"num_workers": 2}})

    done = head.submit("python", "-m", "train_jobs.causal_lm", "--config", "configs/train/ci_causal.yaml", "--quiet")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    metrics = json.loads((home / "runs/causal_lm/metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["train"]["steps"] == 4
    # Ray Train's checkpoints are on the durable storage the config names, not in Ray's session directory
    assert metrics["ray_train"]["checkpoint"].startswith(str(home / "runs/causal_lm/ray_results/causal_lm/"))
    monkeypatch.setenv("LLMROUTER_HOME", str(home))  # as the Serve app loads it: the base model is models/...
    router = CausalLMRouter.load(home / "artifacts/causallm_router")
    router.bind_engines(generators={"router": build_generator(router.default_engine_config("router"))})
    assert router.route_single("What is 2 + 2?")["model_name"] in router.llm_data


def test_a_job_whose_paths_would_resolve_in_rays_copy_fails_before_it_starts_naming_the_fix(head: Head) -> None:
    done = head.submit("python", "-m", "train_jobs.hybrid", "--config", "configs/train/hybrid.yaml",
                       runtime_env={"env_vars": {"LLMROUTER_HOME": ""}})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "train_jobs.hybrid: error: this job runs in Ray's temporary copy" in output
    assert "LLMROUTER_HOME" in output and "Traceback" not in output


def test_a_job_missing_its_data_names_the_path_it_looked_at(head: Head, tmp_path: Path) -> None:
    empty_home, empty_data = tmp_path / "elsewhere", tmp_path / "no-data"
    empty_home.mkdir()
    empty_data.mkdir()
    done = head.submit("python", "-m", "train_jobs.hybrid", "--config", "configs/train/hybrid.yaml",
                       runtime_env={"env_vars": {"LLMROUTER_HOME": str(empty_home), "LLMROUTER_DATA": str(empty_data)}})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"train_jobs.hybrid: error: {empty_data}/" in output and "file does not exist" in output
    assert "`llmrouter data get routellm --from DIR`" in output and "Traceback" not in output
