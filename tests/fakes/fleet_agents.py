"""Fake agents for fleet tests: the TUI's fake agent (:mod:`tests.fakes.agent_api`), plus
``/api/v1/models`` (latency percentiles) and ``/api/v1/incidents`` answers, GPUs in the
status, and ``/api/v1/summary`` (the compact row the fleet polls, with an ETag) built from
those by the agent's own code."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from agent.serve.summary_api import etag_matches, render, summary_document
from storage.records import AgentStatus, ModelStatus
from tests.fakes.agent_api import FakeAgent, GiB, res, sample_status
from tui.view.fleetsummary import worst_p95


def gpu_status(host: str, util: float = 80.0, cpu: float = 23.4) -> AgentStatus:
    """The sample status (:func:`tests.fakes.agent_api.sample_status`) with two GPUs."""
    status = sample_status(host=host, cpu=cpu)
    now = status.now_ms
    gpus = [
        res("gpu.util.percent", util, now, gpu=0),
        res("gpu.util.percent", util / 2, now, gpu=1),
        res("gpu.mem.used_bytes", 60 * GiB, now, gpu=0),
        res("gpu.mem.used_bytes", 20 * GiB, now, gpu=1),
        res("gpu.mem.total_bytes", 80 * GiB, now, gpu=0),
        res("gpu.mem.total_bytes", 80 * GiB, now, gpu=1),
    ]
    return replace(status, resources=(*status.resources, *gpus), gpu_available=True)


def models_json(ttft_p95: dict[str, float | None]) -> dict[str, Any]:
    """A ``/api/v1/models`` answer with these p95 TTFTs (None: no streaming probe)."""

    def summary(p95: float | None) -> dict[str, Any]:
        return {"count": 0 if p95 is None else 10, "p50": p95, "p95": p95, "p99": p95}

    return {
        "models": [
            {
                "name": name,
                "state": "up",
                "latency": {
                    "5m": {
                        "ttft_ms": summary(p95),
                        "e2e_ms": summary(50.0),
                        "itl_ms": summary(None),
                    }
                },
            }
            for name, p95 in ttft_p95.items()
        ]
    }


@dataclass
class FleetFake(FakeAgent):
    """A fake agent that also answers the routes the fleet reads."""

    ttft_p95: dict[str, float | None] = field(default_factory=lambda: {"llama": 120.0})
    open_incidents: int = 0
    summary_route: bool = True
    """Whether ``/api/v1/summary`` is served (False: 404, an agent older than the route)."""

    def _summary(self, request: web.Request) -> web.Response:
        """The compact row, built by the agent's own :func:`summary_document` from what the
        other routes serve, with its ``ETag``; 304 when ``If-None-Match`` names it."""
        if not self.summary_route:
            return super()._summary(request)
        status = self.make_status() if self.make_status else self.status
        models = models_json(self.ttft_p95)
        latency = (worst_p95(models, "ttft_ms"), worst_p95(models, "e2e_ms"))
        doc = summary_document(status, self.alert_counts or {}, latency, self.open_incidents)
        if self.alert_counts is None:
            del doc["alert_counts"]  # as the status of an agent older than alerting
        body, etag = render(doc)
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, headers={"ETag": etag}, content_type="application/json")

    def _answer(self, request: web.Request) -> dict[str, Any]:
        if request.path == "/api/v1/models":
            return models_json(self.ttft_p95)
        if request.path == "/api/v1/incidents":
            now = int(time.time() * 1000)
            return {
                "incidents": [
                    {
                        "id": i + 1,
                        "subject": "model:llama",
                        "kind": "model_down",
                        "state": "open",
                        "severity": "critical",
                        "cause": "x",
                        "opened_ms": now,
                    }
                    for i in range(self.open_incidents)
                ]
            }
        return super()._answer(request)


def labelled_status(
    host: str, labels: dict[str, str], *, up: int = 1, down: int = 0, cpu: float = 20.0
) -> AgentStatus:
    """A status serving ``labels`` (``[agent] labels``), with ``up`` models up and ``down``
    down and no supervised process: ``ok`` unless a model is down (then ``failing``), or the
    fake's alerts or incidents make it ``degraded``."""
    now = int(time.time() * 1000)
    models = tuple(
        ModelStatus(f"m{i}", "http", f"http://127.0.0.1:{9000 + i}", state, now - 60_000)
        for i, state in enumerate(["up"] * up + ["down"] * down)
    )
    return AgentStatus(
        host=host,
        version="0.1.0",
        started_ms=now - 3_600_000,
        now_ms=now,
        models=models,
        resources=(res("host.cpu.percent", cpu, now),),
        labels=tuple(sorted(labels.items())),
    )
