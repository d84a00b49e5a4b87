"""Serving the agent's API: binding the aiohttp app, and api.json where local clients find it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aiohttp import web

from agent.serve.files import API_FILE


async def bind(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start serving ``app`` on ``host:port`` (0 picks a free port); the runner and the URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    bound, real_port = server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]
    shown = f"[{bound}]" if ":" in bound else bound
    return runner, f"http://{shown}:{real_port}"


def publish(data_dir: Path, url: str | None, started_ms: int) -> None:
    """Write api.json, atomically: the URL, the pid and when the agent started."""
    info = {"url": url, "pid": os.getpid(), "started_ms": started_ms}
    tmp = data_dir / (API_FILE + ".tmp")
    tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
    tmp.replace(data_dir / API_FILE)
