"""``GET /api/v1/summary``: what a fleet row shows of this host, in a few hundred bytes.

The fleet view polls every agent about once a second; at 1,000 agents the full status (about
12 KB, every resource series) made decoding JSON the TUI's largest cost, and the models'
latencies and open incidents were two more requests every few seconds. This route answers
with only the row's values, aggregated here: the models' and processes' states, total CPU,
the GPUs' mean utilisation and summed memory, the worst p95 TTFT and end-to-end latency over
5 minutes, open incidents, alert counts, labels and the environment's hash.

The answer carries a strong ``ETag`` (a hash of the body); a request whose ``If-None-Match``
names it is answered ``304 Not Modified`` without a body, so an agent whose values did not
change since the last poll costs the fleet view almost nothing. Only values are in the body,
never the time of the answer, so the tag changes exactly when the row would. The latency
percentiles come from the database at most every :data:`LATENCY_TTL_S` (the fleet view asked
for them that often before this route existed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from agent.serve.alertsummary import alert_counts
from agent.serve.environment_api import environment_hash
from agent.serve.httpmessages import JSON_TYPE, Request, Response
from agent.serve.routing import Router
from agent.serve.view import WINDOWS_MS, AgentView
from probes.base import now_ms
from storage import queries
from storage.records import AgentStatus
from storage.stats import summarize

__all__ = [
    "LATENCY_TTL_S",
    "etag_matches",
    "register",
    "render",
    "summary_document",
    "worst_p95s",
]

T = TypeVar("T")

LATENCY_TTL_S = 5.0
"""The worst p95 latencies are read from the database at most this often."""

_GPU_SERIES = {"gpu.util.percent": 0, "gpu.mem.used_bytes": 1, "gpu.mem.total_bytes": 2}


class Reader(Protocol):
    """Runs a read of the agent's database off the loop (:meth:`agent.serve.api.Api.read`)."""

    def __call__(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...


def _finite(value: float | None) -> float | None:
    # NaN and infinities are not JSON: a reading that is not a number is an unknown one.
    return value if value is None or math.isfinite(value) else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def worst_p95s(
    conn: sqlite3.Connection, models: Sequence[str], since_ms: int
) -> tuple[float | None, float | None]:
    """The highest p95 TTFT and end-to-end latency over ``models``' answered runs since
    ``since_ms``, as ``GET /api/v1/models`` computes each model's (None: no such runs)."""
    worst: list[float | None] = [None, None]
    for model in models:
        values = queries.probe_latencies(conn, model, since_ms)
        for i, column in enumerate(("ttft_ms", "e2e_ms")):
            p95 = summarize(values.get(column, []))["p95"]
            if p95 is not None:
                current = worst[i]
                worst[i] = float(p95) if current is None else max(current, float(p95))
    return worst[0], worst[1]


def summary_document(
    status: AgentStatus,
    alerts: dict[str, int],
    latency: tuple[float | None, float | None],
    open_incidents: int,
    environment: str | None = None,
) -> dict[str, Any]:
    """The route's body (docs/api.md): the row's values of ``status`` and the others."""
    cpu: float | None = None
    gpus: dict[str, list[float]] = {}
    for r in status.resources:
        if r.name == "host.cpu.percent" and not r.labels:
            cpu = r.value
        elif r.name in _GPU_SERIES:
            gpu = dict(r.labels).get("gpu")
            if gpu is not None and math.isfinite(r.value):
                gpus.setdefault(gpu, [math.nan] * 3)[_GPU_SERIES[r.name]] = r.value

    def column(i: int) -> list[float]:
        return [g[i] for g in gpus.values() if not math.isnan(g[i])]

    used, total = column(1), column(2)
    return {
        "host": status.host,
        "version": status.version,
        "storage_ok": status.storage_ok,
        "models": [{"name": m.name, "state": str(m.state)} for m in status.models],
        "processes": [{"name": p.name, "state": str(p.state)} for p in status.processes],
        "cpu_percent": _finite(cpu),
        "gpu": {
            "count": len(gpus),
            "util_percent": _mean(column(0)),
            "mem_used_bytes": sum(used) if used else None,
            "mem_total_bytes": sum(total) if total else None,
        },
        "ttft_p95_ms": _finite(latency[0]),
        "e2e_p95_ms": _finite(latency[1]),
        "open_incidents": open_incidents,
        "alert_counts": alerts,
        "labels": dict(status.labels),
        "environment_hash": environment,
    }


def render(doc: dict[str, Any]) -> tuple[bytes, str]:
    """The document as compact JSON, and its strong ``ETag`` (a hash of those bytes)."""
    body = json.dumps(doc, separators=(",", ":")).encode()
    return body, f'"{hashlib.blake2b(body, digest_size=8).hexdigest()}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or is ``*``); weak comparison, as
    RFC 9110 section 13.1.2 asks for this header."""
    if not if_none_match:
        return False
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


class SummaryRoute:
    """The handler, with the latency percentiles it read last (shared by every client)."""

    def __init__(self, agent: AgentView, read: Reader) -> None:
        self.agent = agent
        self._read = read
        self._lock = asyncio.Lock()
        self._latency: tuple[float | None, float | None] = (None, None)
        self._latency_key: tuple[str, ...] | None = None
        self._latency_at = -math.inf

    async def _worst_latency(self, models: tuple[str, ...]) -> tuple[float | None, float | None]:
        # One read for many clients asking at once; the others wait for it under the lock.
        async with self._lock:
            fresh = time.monotonic() - self._latency_at < LATENCY_TTL_S
            if not fresh or models != self._latency_key:
                since = now_ms() - WINDOWS_MS["5m"]
                self._latency = await self._read(lambda c: worst_p95s(c, models, since))
                self._latency_key = models
                self._latency_at = time.monotonic()
            return self._latency

    async def handle(self, request: Request) -> Response:
        """``GET /api/v1/summary``: 200 with the document and its ``ETag``, or 304."""
        status = self.agent.status()
        latency = await self._worst_latency(tuple(m.name for m in status.models))
        doc = summary_document(
            status,
            alert_counts(self.agent.alerting),
            latency,
            len(self.agent.incidents.open_incidents()),
            environment_hash(self.agent),
        )
        body, etag = render(doc)
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return Response(status=304, headers={"ETag": etag})
        return Response(body, headers={"ETag": etag}, content_type=JSON_TYPE)


def register(app: Router, agent: AgentView, read: Reader) -> None:
    """Add ``GET /api/v1/summary`` to ``app``."""
    app.add_get("/api/v1/summary", SummaryRoute(agent, read).handle)
