"""Helpers of the ``pipeline serve`` tests: the app with its lifespan under httpx, users, a
webhook receiver and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from pipeline.serve import ServeConfig, create_app
from pipeline.serve.accounts import Accounts


@asynccontextmanager
async def app_client(config: ServeConfig, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the ASGI app, its lifespan (the exports' task group) running."""
    app = create_app(config)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


def make_users(registry: Path, *names: str) -> dict[str, str]:
    accounts = Accounts(registry)
    return {name: accounts.add_user(name) for name in names}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found[1]


async def wait_done(client: httpx.AsyncClient, export_id: str) -> dict[str, Any]:
    """Follow the export's server-sent events to its ``done`` event; returns its description."""
    response = await client.get(f"/api/exports/{export_id}/events")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"event: (\w+)\r?\ndata: (.*)", response.text)
    assert events and events[-1][0] == "done", response.text[-500:]
    return json.loads(events[-1][1])


class Webhook:
    """A loopback HTTP server recording the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(json.loads(body))
                outer.arrived.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_server(
    corpus: Path, registry: Path, data: Path, *extra: str,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``pipeline serve`` in a child process on a free loopback port; stopped (and waited for)
    on exit. Yields its base URL and the process."""
    port = free_port()
    log = data.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--corpus", str(corpus), "--registry",
             str(registry), "--data", str(data), "--host", "127.0.0.1", "--port", str(port), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log.read_text()}")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
