"""Serving the agent's API: binding its routes, and api.json where local clients find it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.serve.files import API_FILE
from agent.serve.httpserver import HttpServer
from agent.serve.routing import Router
from storage import private


async def bind(app: Router, host: str, port: int) -> tuple[HttpServer, str]:
    """Start serving ``app`` on ``host:port`` (0 picks a free port); the server and the URL."""
    server = HttpServer(app)
    await server.start(host, port)
    bound, real_port = server.sockets[0].getsockname()[:2]
    shown = f"[{bound}]" if ":" in bound else bound
    return server, f"http://{shown}:{real_port}"


def publish(data_dir: Path, url: str | None, started_ms: int) -> None:
    """Write api.json, atomically and owner-only: the URL, the pid and when the agent started."""
    info = {"url": url, "pid": os.getpid(), "started_ms": started_ms}
    private.write_atomic(data_dir / API_FILE, (json.dumps(info) + "\n").encode("utf-8"))
