"""Start the real Serve app (CPU default models) locally for end-to-end tests and benchmarks."""

from __future__ import annotations

import copy
import socket
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = [
    "models/smollm2-135m-instruct",
    "models/gemma-3-270m",
    "models/all-minilm-l6-v2",
    "artifacts/hybrid_llm/router.json",
    "artifacts/automix/router.json",
    "artifacts/causallm_router/router.json",
    "artifacts/policy_router/router.json",
    "artifacts/mf/router.json",
    "artifacts/blend/router.json",
    "artifacts/domain_prior/router.json",
]


def missing_prerequisites() -> list[str]:
    return [p for p in REQUIRED if not (ROOT / p).exists()]


def default_app_args(config: str = "serve_config.yaml") -> dict[str, Any]:
    """The app's ``args`` from a Serve config file (the CPU default app unless told otherwise)."""
    raw = yaml.safe_load((ROOT / config).read_text())
    return copy.deepcopy(raw["applications"][0]["args"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_config(args: dict[str, Any], name: str = "llmrouter",
               user_configs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Serve config (the layout of ``serve_config.yaml``) for the app, with ``user_config`` per deployment."""
    application: dict[str, Any] = {
        "name": name, "route_prefix": "/", "import_path": "serve_app.app:build_app", "args": args,
        "runtime_env": {"env_vars": {"LLMROUTER_HOME": str(ROOT)}},
    }
    if user_configs:
        application["deployments"] = [{"name": d, "user_config": u} for d, u in user_configs.items()]
    return {"applications": [application]}


def deploy_config(args: dict[str, Any], user_configs: dict[str, dict[str, Any]] | None = None,
                  name: str = "llmrouter", timeout_s: float = 600) -> None:
    """Deploy (or redeploy) the app from a config, as ``serve deploy`` / ``serve run config.yaml`` do.

    A redeploy that changes only ``user_config`` is a lightweight update: Serve calls ``reconfigure`` on
    the running replicas instead of replacing them (``serve.run`` from Python would restart every replica,
    since it gives each deployment a new random version).
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(app_config(args, name, user_configs))
    _get_global_client().deploy_apps(config)
    wait_until_running(name, timeout_s)


def wait_until_running(name: str, timeout_s: float) -> None:
    from ray import serve

    deadline = time.time() + timeout_s
    status: Any = None
    while time.time() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            break
        time.sleep(1)
    details = None if status is None else (status.status, status.message,
                                           {d: (s.status, s.message) for d, s in status.deployments.items()})
    raise RuntimeError(f"application {name!r} is not running: {details}")


def start_serve(args: dict[str, Any], port: int, num_cpus: float = 4, name: str = "llmrouter",
                declarative: bool = False, metrics_port: int | None = None) -> str:
    """Start Ray and the app on ``port``; returns the base URL. Caller shuts down with ``stop_serve``.

    ``declarative=True`` deploys from a Serve config (``deploy_config``), so ``deploy_config`` can later
    hot-swap a ``user_config``; otherwise ``serve.run`` with the built application.
    """
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import parse_app_config

    parse_app_config(args).resolved()  # a bad config fails before Ray starts, in both modes
    extra = {} if metrics_port is None else {"_metrics_export_port": metrics_port}
    ray.init(num_cpus=num_cpus, log_to_driver=False, include_dashboard=False, ignore_reinit_error=True, **extra)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    if declarative:
        deploy_config(args, name=name)
    else:
        # built once Ray is up: Ray Serve LLM reads the job's runtime environment when it builds a deployment
        serve.run(build_app(args), name=name, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def serve_log_text() -> str:
    """Everything the Serve replicas and proxies of this Ray session have logged so far."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))


def stop_serve() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def as_clients(handles: dict[str, Any]) -> dict[str, Any]:
    """Answer-model handles (or fakes of them) as the ingress calls them: behind the AnswerModel client."""
    from serve_app.answer_clients import DeploymentAnswerClient
    from serve_app.config import AnswerModelSpec

    return {key: DeploymentAnswerClient(key, AnswerModelSpec(engine={"model": f"models/{key}"}), handle)
            for key, handle in handles.items()}


def ask(openai_client: Any, model: str, content: str = "What is the capital of France?", **extra: Any) -> Any:
    """One chat completion through the app with the ``openai`` client (``max_tokens`` 8 unless given)."""
    return openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=extra.pop("max_tokens", 8), **extra)
