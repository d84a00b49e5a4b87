"""A fake agent for the triage views: every route the TUI reads, and the actions it takes,
with deterministic data (ages are computed from the status's ``now_ms``).

It extends the host screen's :class:`FakeAgent` with a read-only token, ``/whoami``,
``/models``, ``/probe_runs``, ``/incidents``, ``/processes``, logs, the report and the POST
actions, which it records (with the ``X-Vigil-Operator`` header) in ``actions``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from storage.records import Event, Incident, ProbeRun
from tests.fakes.agent_api import TOKEN, FakeAgent, sample_status

READ_TOKEN = "s3cret-read-only-token"
FIXED_NOW_MS = 1_780_000_000_000
"""2026-05-28 20:26:40 UTC: snapshots need the same clock every run."""


def sample_incidents(now: int) -> list[Incident]:
    return [
        Incident(
            id=3,
            subject="model:whisper",
            kind="model_down",
            severity="critical",
            cause="connection refused (3 runs in a row)",
            state="open",
            opened_ms=now - 60_000,
            evidence={"runs": 3, "last_error": "connection refused"},
        ),
        Incident(
            id=2,
            subject="process:llama-cpp",
            kind="process_exited",
            severity="warning",
            cause="exit 1 after 12s",
            state="acknowledged",
            opened_ms=now - 600_000,
            acknowledged_ms=now - 300_000,
            acknowledged_by="alice@laptop",
        ),
        Incident(
            id=1,
            subject="model:embedder",
            kind="model_degraded",
            severity="warning",
            cause="p95 above 2000 ms",
            state="resolved",
            opened_ms=now - 7_200_000,
            resolved_ms=now - 7_000_000,
            resolved_by="auto",
            ttr_ms=200_000,
        ),
    ]


def sample_runs(model: str, now: int) -> list[ProbeRun]:
    cats = ["ok", "ok", "slow", "ok", "timeout", "ok", "refused", "ok"]
    out = []
    for i, cat in enumerate(cats):
        ok = cat == "ok"
        out.append(
            ProbeRun(
                model=model,
                ts_ms=now - (i + 1) * 2000,
                ok=ok,
                category=cat,
                e2e_ms=None if cat in ("timeout", "refused") else 100.0 + 37 * i,
                ttft_ms=None if cat in ("timeout", "refused") else 20.0 + i,
                itl_ms=None if cat in ("timeout", "refused") else 5.0 + i / 10,
                status=200 if cat in ("ok", "slow") else None,
                error=None if cat in ("ok", "slow") else f"{cat} after 1.0s",
            )
        )
    return out


def sample_events(now: int) -> list[Event]:
    specs = [
        (
            "model.artifact",
            "model:llama",
            "new artifact",
            {"sha256": "ab" * 32, "previous_sha256": "cd" * 32, "category": "ok"},
        ),
        ("process.restarting", "process:llama-cpp", "restart in 2.00s: exit 1", {"delay_s": 2.0}),
        ("process.exited", "process:llama-cpp", "exit 1 after 12s", {"status": 1}),
        ("incident.opened", "model:whisper", "model_down: connection refused", {"incident": 3}),
        ("model.state_changed", "model:whisper", "up -> down", {"from": "up", "to": "down"}),
        (
            "process.action",
            "process:vllm-server",
            "restart by alice@laptop",
            {"by": "alice@laptop"},
        ),
        ("config.reloaded", "agent", "config reloaded: 4 models", {}),
        ("agent.started", "agent", "agent started", {"pid": 1}),
    ]
    return [
        Event(ts_ms=now - (i + 1) * 5000, kind=k, subject=s, message=m, data=d, seq=len(specs) - i)
        for i, (k, s, m, d) in enumerate(specs)
    ]


def sample_alerts(now: int) -> list[dict[str, Any]]:
    """Alerts as ``GET /api/v1/alerts`` serves them: one pending, two firing (one silenced),
    one resolved."""

    def alert(id_: int, rule: str, subject: str, sev: str, state: str, **kw: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": id_,
            "fingerprint": f"fp{id_}",
            "rule": rule,
            "subject": subject,
            "labels": {"rule": rule, "subject": subject},
            "severity": sev,
            "state": state,
            "value": None,
            "summary": f"{rule} on {subject}",
            "runbook_url": "",
            "pending_ms": now - 300_000,
            "firing_ms": None,
            "resolved_ms": None,
            "flapping": False,
            "updated_ms": now - 1000,
            "silenced_by": None,
            "maintenance": None,
        }
        base.update(kw)
        return base

    return [
        alert(4, "disk_filling", "host", "warning", "pending", value=91.5),
        alert(3, "model_down", "model:whisper", "critical", "firing", firing_ms=now - 60_000),
        alert(
            2,
            "process_restart_loop",
            "process:llama-cpp",
            "warning",
            "firing",
            firing_ms=now - 600_000,
            silenced_by=7,
        ),
        alert(
            1,
            "model_degraded",
            "model:embedder",
            "warning",
            "resolved",
            firing_ms=now - 7_200_000,
            resolved_ms=now - 1_800_000,
        ),
    ]


def sample_silences(now: int) -> list[dict[str, Any]]:
    return [
        {
            "id": 7,
            "matchers": ['subject="process:llama-cpp"'],
            "starts_ms": now - 900_000,
            "ends_ms": now + 6_300_000,
            "author": "alice@laptop",
            "comment": "rebuilding the llama-cpp image",
            "created_ms": now - 900_000,
            "expired_ms": None,
            "expired_by": None,
            "state": "active",
        }
    ]


def sample_channels() -> list[dict[str, Any]]:
    return [
        {
            "name": "ops-webhook",
            "kind": "webhook",
            "ok": True,
            "last_error": None,
            "delivered": 12,
            "failed_attempts": 0,
            "given_up": 0,
        },
        {
            "name": "pager",
            "kind": "pagerduty",
            "ok": False,
            "last_error": "HTTP 503: service unavailable",
            "delivered": 3,
            "failed_attempts": 5,
            "given_up": 1,
        },
    ]


@dataclass
class TriageAgent(FakeAgent):
    """The fake agent, with everything the triage views read and do."""

    read_token: str = READ_TOKEN
    incidents: list[Incident] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    actions: list[tuple[str, str, str]] = field(default_factory=list)
    """(method and path, operator header, scope) of every action and report asked for."""
    whoami_missing: bool = False
    alerts: list[dict[str, Any]] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)
    channels: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    """The JSON body of every POST that had one (a new silence's matchers...)."""

    def __post_init__(self) -> None:
        now = self.status.now_ms
        self.alerts = sample_alerts(now)
        self.silences = sample_silences(now)
        self.channels = sample_channels()
        self.incidents = sample_incidents(now)
        self.events = sample_events(now)
        self.logs = [
            "server starting",
            "[@click=app.quit] not a link",
            "\x1b[31mred text\x1b[0m and a bell\x07",
            "listening on :8000",
        ]

    def _scope(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header == f"Bearer {self.token}":
            return "operate"
        if header == f"Bearer {self.read_token}":
            return "read"
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        self.last_query = dict(request.query)
        scope = self._scope(request)
        if scope is None:
            return web.json_response({"error": "token rejected"}, status=401)
        if request.method in ("POST", "DELETE") and scope != "operate":
            return web.json_response(
                {"error": "this token is read-only; the action needs the operate scope"},
                status=403,
            )
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        operator = request.headers.get("X-Vigil-Operator", "")
        if request.method == "POST":
            self.actions.append((f"POST {unquote(path)}", operator, scope))
            if request.can_read_body:
                self.bodies.append(await request.json())
            return self._act(unquote(path))
        if request.method == "DELETE":
            self.actions.append((f"DELETE {unquote(path)}", operator, scope))
            return self._expire(unquote(path), operator)
        if path == "/api/v1/report":
            self.actions.append(
                (f"GET {path}?format={request.query.get('format')}", operator, scope)
            )
            return web.Response(text="<html><body>report</body></html>", content_type="text/html")
        if path == "/api/v1/whoami":
            if self.whoami_missing:
                return web.json_response({"error": "not found"}, status=404)
            return web.json_response({"scope": scope, "operator": operator or f"token:{scope}"})
        answer = self._triage_answer(request)
        if answer is not None:
            return web.json_response(answer)
        return web.json_response(self._answer(request))

    def _triage_answer(self, request: web.Request) -> dict[str, Any] | None:
        q = request.query
        path = unquote(request.path)
        status = self.make_status() if self.make_status else self.status
        now = status.now_ms
        if path == "/api/v1/models":
            return {"models": [self._model_json(m.name, m.to_json(), now) for m in status.models]}
        if path == "/api/v1/probe_runs":
            runs = sample_runs(q.get("model", ""), now)
            return {"probe_runs": [r.to_json() for r in runs[: int(q.get("limit", "50"))]]}
        if path == "/api/v1/incidents":
            found = [
                i
                for i in self.incidents
                if (not q.get("state") or i.state == q["state"])
                and (not q.get("subject") or i.subject == q["subject"])
            ]
            return {"incidents": [i.to_json() for i in found]}
        if path == "/api/v1/alerts":
            state = q.get("state")
            matching = [
                a
                for a in self.alerts
                if not state or (a["silenced_by"] if state == "silenced" else a["state"] == state)
            ]
            return {"alerts": matching}
        if path == "/api/v1/silences":
            return {
                "silences": [
                    s for s in self.silences if not q.get("state") or s["state"] == q["state"]
                ]
            }
        if path == "/api/v1/deliveries":
            return {"deliveries": [], "channels": self.channels}
        if path == "/api/v1/processes":
            return {"processes": [p.to_json() for p in status.processes]}
        if path.startswith("/api/v1/processes/") and path.endswith("/logs"):
            name = path.removeprefix("/api/v1/processes/").removesuffix("/logs")
            if name not in {p.name for p in status.processes}:
                return {"error": f"no process named {name!r}"}
            return {"name": name, "lines": self.logs[-int(q.get("lines", "100")) :]}
        if path == "/api/v1/events":
            found = [
                e
                for e in self.events
                if e.kind.startswith(q.get("kind", ""))
                and (not q.get("subject") or e.subject == q["subject"])
            ]
            return {"events": [e.to_json() for e in found[: int(q.get("limit", "100"))]]}
        return None

    def _model_json(self, name: str, base: dict[str, Any], now: int) -> dict[str, Any]:
        def summary(scale: float) -> dict[str, Any]:
            return {
                "count": 8,
                "p50": 10 * scale,
                "p95": 30 * scale,
                "p99": 45 * scale,
                "mean": 15 * scale,
                "max": 50 * scale,
            }

        incident = next(
            (i for i in self.incidents if i.subject == f"model:{name}" and i.state != "resolved"),
            None,
        )
        return {
            **base,
            "latency": {
                "5m": {"ttft_ms": summary(2), "itl_ms": summary(0.5), "e2e_ms": summary(12)},
                "1h": {"ttft_ms": summary(2), "itl_ms": summary(0.5), "e2e_ms": summary(12)},
            },
            "outcomes_1h": {"ok": 96, "slow": 2, "timeout": 1, "refused": 1},
            "availability_1h": 0.96,
            "info": {"platform": "onnxruntime", "sha256": "ab" * 32},
            "incident": incident.to_json() if incident else None,
        }

    def _expire(self, path: str, operator: str) -> web.Response:
        parts = path.removeprefix("/api/v1/").split("/")
        if parts[0] == "silences" and len(parts) == 2:
            for n, sil in enumerate(self.silences):
                if str(sil["id"]) == parts[1] and sil["state"] in ("active", "pending"):
                    now = self.status.now_ms
                    done = {
                        **sil,
                        "state": "expired",
                        "expired_ms": now,
                        "expired_by": operator or "token:operate",
                    }
                    self.silences[n] = done
                    for a in self.alerts:
                        if a["silenced_by"] == sil["id"]:
                            a["silenced_by"] = None
                    return web.json_response({"silence": done})
        return web.json_response({"error": "no such silence in force"}, status=404)

    def _act(self, path: str) -> web.Response:
        parts = path.removeprefix("/api/v1/").split("/")
        if parts == ["silences"] and self.bodies:
            body = self.bodies[-1]
            now = self.status.now_ms
            made = {
                "id": max((int(s["id"]) for s in self.silences), default=0) + 1,
                "matchers": list(body.get("matchers", [])),
                "starts_ms": now,
                "ends_ms": now + 7_200_000,
                "author": "x",
                "comment": body.get("comment", ""),
                "created_ms": now,
                "expired_ms": None,
                "expired_by": None,
                "state": "active",
            }
            self.silences.insert(0, made)
            return web.json_response({"silence": made}, status=201)
        if parts[0] == "processes" and len(parts) == 3:
            name, action = parts[1], parts[2]
            proc = next((p for p in self.status.processes if p.name == name), None)
            if proc is None:
                return web.json_response({"error": f"no process named {name!r}"}, status=404)
            if action == "release" and proc.state != "quarantined":
                return web.json_response(
                    {"error": f"{name} is not quarantined (it is {proc.state})"}, status=409
                )
            return web.json_response({"process": proc.to_json(), "accepted": action}, status=202)
        if parts[0] == "models" and len(parts) == 3 and parts[2] == "probe":
            return web.json_response({"model": parts[1], "accepted": "probe"}, status=202)
        if parts[0] == "incidents" and len(parts) == 3:
            inc_id, action = int(parts[1]), parts[2]
            for n, inc in enumerate(self.incidents):
                if inc.id != inc_id:
                    continue
                if inc.state == "resolved" or (action == "acknowledge" and inc.state != "open"):
                    return web.json_response(
                        {"error": f"incident {inc_id} is not open"}, status=409
                    )
                now = self.status.now_ms
                if action == "acknowledge":
                    done = replace(
                        inc, state="acknowledged", acknowledged_ms=now, acknowledged_by="x"
                    )
                else:
                    done = replace(inc, state="resolved", resolved_ms=now, resolved_by="x")
                self.incidents[n] = done
                return web.json_response({"incident": done.to_json()})
        return web.json_response({"error": "not found"}, status=404)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/{tail:.*}", self._handle)
        app.router.add_post("/api/v1/{tail:.*}", self._handle)
        app.router.add_delete("/api/v1/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"


def fixed_agent() -> TriageAgent:
    """The deterministic agent of the snapshot tests."""
    return TriageAgent(status=sample_status(now_ms=FIXED_NOW_MS))


@contextmanager
def agent_in_thread(agent: TriageAgent) -> Iterator[TriageAgent]:
    """Serve ``agent`` from a loop of its own: snapshot tests run the app with ``App.run``,
    which needs the test's thread and its own loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(agent.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "the fake agent did not start"
    try:
        yield agent
    finally:
        asyncio.run_coroutine_threadsafe(agent.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


__all__ = ["READ_TOKEN", "TOKEN", "TriageAgent", "agent_in_thread", "fixed_agent"]
