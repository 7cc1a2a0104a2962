"""Real upstreams for the remote-model tests and benchmarks, all on loopback:

- ``VLLMServer``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``) on the project's
  SmolLM2, with an API key and a tool-call parser, in a subprocess;
- ``FaultProxy``: an HTTP proxy in front of it that can misbehave the way networks and providers do: refuse
  connections (stopped), answer 429 with ``Retry-After``, 500, a body that is not JSON, answer slower than a
  timeout, or cut a stream after some chunks. In ``pass`` mode it forwards every byte as the server sent it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / "models/smollm2-135m-instruct"
SERVED_NAME = "remote-smol"


class VLLMServer:
    """vLLM's OpenAI server on ``port``; ``start`` waits until ``/v1/models`` answers."""

    def __init__(self, port: int, api_key: str, log_path: Path, model: Path = SMOLLM, name: str = SERVED_NAME) -> None:
        self.port = port
        self.api_key = api_key
        self.log_path = log_path
        self.model = model
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 300) -> VLLMServer:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                   "--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(self.port),
                   "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--api-key", self.api_key,
                   "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--disable-log-stats"]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({self.process.returncode}): {self.log_tail()}")
            try:
                response = httpx.get(f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"},
                                     timeout=2)
                if response.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server did not answer within {timeout_s}s: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


MODES = ("pass", "429", "500", "not_json", "slow", "cut_stream")


class FaultProxy:
    """A loopback HTTP proxy to ``upstream`` (the API root, ``.../v1``) whose ``mode`` says how it misbehaves.

    ``stop()`` closes its port (connections are refused, as for a dead server); ``start()`` opens it again.
    ``requests`` counts the requests it received, ``abandoned`` the responses its client stopped reading before
    the end (the router closing its upstream connection when its own client went away).
    """

    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.mode = "pass"
        self.retry_after = "2"
        self.slow_s = 5.0
        self.cut_after_chunks = 3
        self.requests = 0
        self.abandoned = 0
        self.server: Any = None
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        client = httpx.AsyncClient(base_url=self.upstream, timeout=120)

        async def forward(request: Request) -> Response:
            self.requests += 1
            mode = self.mode
            if mode == "429":
                return JSONResponse({"error": {"message": "Rate limit reached", "type": "rate_limit"}}, 429,
                                    headers={"Retry-After": self.retry_after})
            if mode == "500":
                return JSONResponse({"error": {"message": "internal error", "type": "server_error"}}, 500)
            if mode == "not_json":
                return Response("<html>502 Bad Gateway</html>", 200, media_type="application/json")
            if mode == "slow":
                await asyncio.sleep(self.slow_s)
            body = await request.body()
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
            path = request.url.path.removeprefix("/v1")
            upstream = await client.send(client.build_request(request.method, path, content=body, headers=headers),
                                         stream=True)
            media = upstream.headers.get("content-type", "application/json")
            if mode == "cut_stream" and media.startswith("text/event-stream"):
                return StreamingResponse(self.cut(upstream), media_type=media)
            return StreamingResponse(self.relay(upstream), status_code=upstream.status_code, media_type=media)

        return Starlette(routes=[Route("/v1/{path:path}", forward, methods=["GET", "POST"])])

    async def relay(self, upstream: httpx.Response) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for piece in upstream.aiter_raw():
                yield piece
            finished = True
        finally:
            if not finished:
                self.abandoned += 1
            await upstream.aclose()  # the upstream server sees its connection close and aborts the request

    async def cut(self, upstream: httpx.Response) -> AsyncIterator[bytes]:
        """The first ``cut_after_chunks`` events, then the connection drops (no ``[DONE]``)."""
        sent = 0
        try:
            async for line in upstream.aiter_lines():
                if line.startswith("data:"):
                    yield (line + "\n\n").encode()
                    sent += 1
                    if sent >= self.cut_after_chunks:
                        raise ConnectionResetError("proxy cut the stream")
        finally:
            await upstream.aclose()

    def start(self) -> FaultProxy:
        import uvicorn

        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError(f"fault proxy did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.server = self.thread = None
