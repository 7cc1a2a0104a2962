"""Start the real Serve app (CPU default models) locally for end-to-end tests and benchmarks."""

from __future__ import annotations

import copy
import socket
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
]


def missing_prerequisites() -> list[str]:
    return [p for p in REQUIRED if not (ROOT / p).exists()]


def default_app_args() -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    return copy.deepcopy(raw["applications"][0]["args"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(args: dict[str, Any], port: int, num_cpus: int = 4, name: str = "llmrouter") -> str:
    """Start Ray and the app on ``port``; returns the base URL. Caller shuts down with ``stop_serve``."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    application = build_app(args)
    ray.init(num_cpus=num_cpus, log_to_driver=False, include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(application, name=name, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def stop_serve() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
