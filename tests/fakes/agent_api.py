"""A fake agent API for TUI tests: the TUI must depend only on the agent's HTTP contract, so
it is tested against this loopback server, which serves records built from the real record
types. :mod:`tests.fakes.triage_agent` adds the triage views' routes,
:mod:`tests.fakes.fleet_agents` what the fleet table reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from storage.records import (
    AgentStatus,
    Event,
    ModelStatus,
    ProbeRun,
    ProcessStatus,
    ResourceValue,
    make_labels,
)

TOKEN = "s3cret-read-token"
GiB = 1024**3


def res(name: str, value: float, ts_ms: int, **labels: object) -> ResourceValue:
    return ResourceValue(name=name, labels=make_labels(labels), ts_ms=ts_ms, value=value)


def sample_status(
    host: str = "gpu-host-01", now_ms: int | None = None, cpu: float = 23.4
) -> AgentStatus:
    """A plausible status: four models in each state, two processes, a GPU-less host."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    resources = [
        res("host.cpu.percent", cpu, now),
        *(res("host.cpu.percent", v, now, core=i) for i, v in enumerate([10.0, 95.0, 50.0, 5.0])),
        res("host.mem.total_bytes", 32 * GiB, now),
        res("host.mem.used_bytes", 12 * GiB, now),
        res("host.mem.available_bytes", 20 * GiB, now),
        res("host.mem.percent", 37.5, now),
        res("host.swap.total_bytes", 0, now),
        res("host.swap.used_bytes", 0, now),
        res("host.swap.percent", 0, now),
        res("host.load.1m", 1.25, now),
        res("host.load.5m", 0.8, now),
        res("host.load.15m", 0.5, now),
        res("host.disk.total_bytes", 500 * GiB, now, mount="/"),
        res("host.disk.used_bytes", 405 * GiB, now, mount="/"),
        res("host.disk.percent", 81.0, now, mount="/"),
        res("host.diskio.read_bytes_per_s", 1.5 * 1024**2, now, device="nvme0n1"),
        res("host.diskio.write_bytes_per_s", 300 * 1024, now, device="nvme0n1"),
        res("host.net.rx_bytes_per_s", 2 * 1024**2, now, iface="eth0"),
        res("host.net.tx_bytes_per_s", 512 * 1024, now, iface="eth0"),
        res("host.net.rx_bytes_per_s", 999, now, iface="lo"),
        res("host.net.tx_bytes_per_s", 999, now, iface="lo"),
        res("process.cpu.percent", 150.0, now, process="vllm-server"),
        res("process.rss_bytes", 3 * GiB, now, process="vllm-server"),
    ]
    models = (
        ModelStatus(
            "llama",
            "openai",
            "http://127.0.0.1:8000",
            "up",
            now - 192_000,
            ProbeRun("llama", now - 1000, True, "ok", e2e_ms=123.4),
        ),
        ModelStatus(
            "embedder",
            "kserve_v2",
            "http://127.0.0.1:8001",
            "degraded",
            now - 5_000,
            ProbeRun("embedder", now - 1000, False, "slow", e2e_ms=2500.0),
        ),
        ModelStatus(
            "whisper",
            "http",
            "http://127.0.0.1:8002",
            "down",
            now - 60_000,
            ProbeRun("whisper", now - 1000, False, "refused", error="connection refused"),
        ),
        ModelStatus("fresh", "ollama", "http://127.0.0.1:11434", "unknown", now),
    )
    processes = (
        ProcessStatus(
            "vllm-server", "running", now - 3_600_000, pid=4242, restarts=1, last_exit="exit 1"
        ),
        ProcessStatus(
            "llama-cpp",
            "backoff",
            now - 2_000,
            restarts=3,
            last_exit="\x1b[31mkilled by SIGKILL\x1b[0m\x07",
        ),
    )
    return AgentStatus(
        host=host,
        version="0.1.0",
        started_ms=now - 3_723_000,
        now_ms=now,
        models=models,
        processes=processes,
        resources=tuple(resources),
    )


@dataclass
class FakeAgent:
    """A running fake agent. Tests mutate ``status`` (or ``make_status``) and read ``hits``."""

    url: str = ""
    token: str = TOKEN
    status: AgentStatus = field(default_factory=sample_status)
    make_status: Callable[[], AgentStatus] | None = None
    alert_counts: dict[str, Any] | None = None
    """``alert_counts`` of the status answer (``{"firing": 2, "critical": 1, ...}``); None
    leaves the key out, as an agent older than alerting does."""
    hang_s: float = 0.0
    raw_body: bytes | None = None
    hits: dict[str, int] = field(default_factory=dict)
    last_query: dict[str, str] = field(default_factory=dict)
    runner: web.AppRunner | None = None

    def _authorised(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "missing or invalid token"}, status=401)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        self.last_query = dict(request.query)
        denied = self._authorised(request)
        if denied is not None:
            return denied
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.raw_body is not None:
            return web.Response(body=self.raw_body, content_type="application/json")
        if request.path == "/api/v1/summary":
            return self._summary(request)
        return web.json_response(self._answer(request))

    def _summary(self, request: web.Request) -> web.Response:
        """``/api/v1/summary``: not served, as by an agent older than the route
        (:class:`tests.fakes.fleet_agents.FleetFake` serves it)."""
        return web.json_response({"error": "not found"}, status=404)

    def _answer(self, request: web.Request) -> dict[str, Any]:
        if request.path == "/api/v1/status":
            status = self.make_status() if self.make_status else self.status
            body = status.to_json()
            if self.alert_counts is not None:
                body["alert_counts"] = self.alert_counts
            return body
        if request.path == "/api/v1/series":
            now = int(time.time() * 1000)
            points = [
                {
                    "ts_ms": now - (5 - i) * 1000,
                    "avg": 10.0 * i,
                    "min": 0.0,
                    "max": 10.0 * i,
                    "count": 1,
                }
                for i in range(5)
            ]
            return {"name": request.query["name"], "labels": {}, "points": points}
        events = [
            Event(
                ts_ms=2,
                kind="process.exited",
                subject="process:vllm-server",
                message="exit 1",
                seq=2,
            ).to_json(),
            Event(ts_ms=1, kind="agent.started", subject="agent", message="hi", seq=1).to_json(),
        ]
        return {"events": events[: int(request.query.get("limit", "50"))]}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    def with_status(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
