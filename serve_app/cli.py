"""The ``llmrouter`` command: the library's verbs (train, infer, evaluate, setup-models) plus the
serving verbs that need Ray (``chat``, ``serve``), which live here so ``routers/`` never imports Ray.

    llmrouter chat  --config serve_config.yaml --port 8000     # app + web chat page at /chat
    llmrouter serve --config serve_config.yaml                  # the app only (like `serve run`)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routers import cli as library_cli
from routers.config import load_mapping_file
from routers.errors import ConfigError


def app_args_from_serve_config(path: str | Path, app_name: str | None = None) -> dict[str, Any]:
    """The ``args`` of one application in a Serve config file (the first one unless named)."""
    raw = load_mapping_file(path, "serve config")
    apps = raw.get("applications") or []
    if not apps:
        raise ConfigError(f"{path}: no 'applications' listed")
    for app in apps:
        if app_name is None or app.get("name") == app_name:
            return dict(app.get("args") or {})
    raise ConfigError(f"{path}: no application named {app_name!r}")


def start_app(config: str, host: str, port: int, app_name: str | None = None) -> str:
    import ray
    from ray import serve

    from serve_app.app import build_app

    args = app_args_from_serve_config(config, app_name)
    application = build_app(args)  # validates the config before Ray starts anything
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=app_name or "llmrouter", route_prefix="/")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def cmd_chat(args: argparse.Namespace) -> int:
    url = start_app(args.config, args.host, args.port, args.app)
    print(f"llmrouter chat: open {url}/chat  (OpenAI API at {url}/v1; Ctrl-C stops)", flush=True)
    wait_forever()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    url = start_app(args.config, args.host, args.port, args.app)
    print(f"llmrouter serving at {url}/v1  (Ctrl-C stops)", flush=True)
    wait_forever()
    return 0


def add_serving_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, func, text in (("chat", cmd_chat, "start the app and its web chat page"),
                             ("serve", cmd_serve, "start the app (like `serve run`)")):
        verb = sub.add_parser(name, parents=[common], help=text)
        verb.add_argument("--config", default="serve_config.yaml", help="Serve config file")
        verb.add_argument("--app", help="application name in the config (default: the first)")
        verb.add_argument("--host", default="127.0.0.1")
        verb.add_argument("--port", type=int, default=8000)
        verb.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:
    return library_cli.main(argv, extend=add_serving_verbs)


if __name__ == "__main__":
    sys.exit(main())
