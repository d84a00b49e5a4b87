"""A loopback HTTP receiver for notification tests: records every request and answers from a
script (status, headers, body per request; 200 once the script runs out)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"


class Receiver:
    """Start with :func:`receiver`; ``script`` answers requests in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.requests: list[Received] = []
        self.script: list[Answer] = []
        self.arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.arrived:
            self.requests.append(Received(request.path_qs, dict(request.headers), body))
            self.arrived.notify_all()
        answer = self.script.pop(0) if self.script else Answer()
        return web.Response(status=answer.status, headers=answer.headers, text=answer.body)

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[Received]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.requests) >= n), timeout)
        return self.requests

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def receiver(port: int | None = None) -> AsyncIterator[Receiver]:
    r = Receiver(port or free_port())
    await r.start()
    try:
        yield r
    finally:
        await r.stop()
