"""The agent's HTTP API: JSON under ``/api/v1``, Prometheus text under ``/metrics``.

The routes of the host, its models, processes and incidents are here; alerting's, deploys'
and canary runs' are in :mod:`agent.serve.alerts_api`, :mod:`~agent.serve.deploy_api` and
:mod:`~agent.serve.rollout_api`, added to the same table by :func:`build_app`.

Served by the agent's own HTTP server (:mod:`agent.serve.httpserver`), not aiohttp, which
cost the agent about 16 MB of RSS.

Every route but ``/healthz`` needs ``Authorization: Bearer <token>``; reads need the ``read``
scope, anything that acts needs ``operate``. Database reads run in worker threads on their own
read-only connections, so a slow query never blocks the loop or the writer.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from agent.serve.alerts_api import AlertsApi
from agent.serve.alerts_api import register as register_alert_routes
from agent.serve.alertsummary import alert_counts
from agent.serve.deploy_api import register as register_deploy_routes
from agent.serve.environment_api import environment_hash
from agent.serve.environment_api import register as register_environment_routes
from agent.serve.exposition import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent.serve.exposition import render as render_metrics
from agent.serve.forward_api import register as register_forward_routes
from agent.serve.httpmessages import (
    Request,
    Response,
    StreamResponse,
    json_response,
    loads_json,
    whole_number,
)
from agent.serve.identity import OPERATOR_HEADER, acting_as, acting_for, operator_of
from agent.serve.metrics import AgentMetrics
from agent.serve.params import error as _error
from agent.serve.params import parse_time
from agent.serve.rollout_api import register as register_rollout_routes
from agent.serve.routing import Handler, Middleware, Router
from agent.serve.summary_api import register as register_summary_routes
from agent.serve.tokens import TokenRegistry
from agent.serve.view import AgentView, model_stats
from agent.supervise.proclogs import TAIL_MAX_LINES
from agent.supervise.supervisor import ActionError
from probes.base import now_ms
from storage import queries
from storage.db import DB_FILENAME, connect
from storage.incidents import list_incidents
from storage.records import Event, make_labels
from storage.units import parse_duration

T = TypeVar("T")

MAX_POINTS = 2000
"""A range query without a step returns at most about this many points (auto-downsampled)."""


def _auth_middleware(tokens: TokenRegistry) -> Middleware:
    async def auth(request: Request, handler: Handler) -> Response | StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return _error(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>' "
                "(the token is in the agent's data dir, file api-token)",
            )
        # Never echoed or logged: a refused token says nothing of what was presented.
        grant = tokens.identify(presented.strip())
        if grant is None:
            return _error(
                401, "token rejected (unknown, revoked, expired, or rotated past its grace)"
            )
        needed = "read" if request.method in ("GET", "HEAD") else "operate"
        if needed == "operate" and grant.scope != "operate":
            return _error(403, "this token is read-only; the action needs the operate scope")
        request["scope"] = grant.scope
        acting = request["acting"] = acting_for(request, grant)
        with acting_as(acting):
            return await handler(request)

    return auth


class Api:
    """Route handlers bound to one agent."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent
        # Probes asked for by operators run after the answer; hold them so none is collected.
        self._probes: set[asyncio.Task[None]] = set()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        path = self.agent.data_dir / DB_FILENAME

        def run() -> T:
            conn = connect(path, readonly=True)
            try:
                return fn(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def healthz(self, request: Request) -> Response:
        return json_response({"ok": True})

    async def status(self, request: Request) -> Response:
        body = self.agent.status().to_json()
        return json_response(
            {
                **body,
                "alert_counts": alert_counts(self.agent.alerting),
                "environment_hash": environment_hash(self.agent),
            }
        )

    async def whoami(self, request: Request) -> Response:
        """The presented token's scope, so a client can hide what it may not do, its name,
        and who the audit trail records for this client's actions."""
        return json_response(
            {
                "scope": request["scope"],
                "operator": operator_of(request),
                "token": request["acting"].token,
            }
        )

    async def probe_model(self, request: Request) -> Response:
        """Probe one model now (``operate``): audited, answered at once, run right after."""
        name = request.match_info["name"]
        known = [m.name for m in self.agent.status().models]
        if name not in known:
            return _error(404, f"no model named {name!r}; known: {', '.join(known) or 'none'}")
        by = operator_of(request)
        self.agent.emit(
            Event(
                ts_ms=now_ms(),
                kind="model.probe_requested",
                subject=f"model:{name}",
                message=f"probe requested by {by}",
                data={"by": by},
            )
        )
        task = asyncio.create_task(self.agent.probe_models([name]))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)
        return json_response({"model": name, "accepted": "probe"}, status=202)

    async def models(self, request: Request) -> Response:
        status = self.agent.status()
        info = self.agent.model_info()
        now = now_ms()
        names = [m.name for m in status.models]
        stats = await self.read(lambda c: {n: model_stats(c, n, now) for n in names})
        out = []
        for m in status.models:
            incident = self.agent.incidents.current(f"model:{m.name}")
            out.append(
                {
                    **m.to_json(),
                    **stats[m.name],
                    "info": info.get(m.name, {}),
                    "incident": incident.to_json() if incident else None,
                }
            )
        return json_response({"models": out})

    async def incidents(self, request: Request) -> Response:
        q = request.query
        state = q.get("state")
        if state not in (None, "open", "acknowledged", "resolved"):
            return _error(400, "state: expected open, acknowledged or resolved")
        try:
            limit = min(1000, max(1, int(q.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit: expected a whole number")
        found = await self.read(
            lambda c: list_incidents(c, state=state, subject=q.get("subject"), limit=limit)
        )
        # The book is ahead of the database by at most one writer batch: overlay its view.
        live = {i.id: i for i in self.agent.incidents.open_incidents()}
        merged = [live.pop(i.id, i) for i in found]
        if state in (None, "open"):
            merged = sorted([*live.values(), *merged], key=lambda i: -i.id)
        return json_response({"incidents": [i.to_json() for i in merged]})

    async def incident_action(self, request: Request) -> Response:
        try:
            incident_id = int(request.match_info["id"])
        except ValueError:
            return _error(400, "id: expected an incident number")
        action = request.match_info["action"]
        by = operator_of(request)
        book = self.agent.incidents
        inc = (
            book.acknowledge(incident_id, by)
            if action == "acknowledge"
            else book.resolve_by_id(incident_id, by)
        )
        if inc is None:
            return _error(409, f"incident {incident_id} is not open")
        return json_response({"incident": inc.to_json()})

    async def processes(self, request: Request) -> Response:
        return json_response({"processes": [p.to_json() for p in self.agent.supervisor.statuses()]})

    async def process_action(self, request: Request) -> Response:
        name, action = request.match_info["name"], request.match_info["action"]
        try:
            status = self.agent.supervisor.act(name, action, operator_of(request))
        except ActionError as exc:
            return _error(exc.status, str(exc))
        return json_response({"process": status.to_json(), "accepted": action}, status=202)

    async def process_logs(self, request: Request) -> Response:
        raw = request.query.get("lines", "100")
        count = whole_number(raw)
        if count is None or not 1 <= count <= TAIL_MAX_LINES:
            return _error(400, f"lines: expected a whole number from 1 to {TAIL_MAX_LINES}")
        name = request.match_info["name"]
        try:
            lines = await asyncio.to_thread(self.agent.supervisor.logs, name, count)
        except ActionError as exc:
            return _error(exc.status, str(exc))
        return json_response({"name": name, "lines": lines})

    async def series(self, request: Request) -> Response:
        q = request.query
        name = q.get("name")
        if not name:
            return _error(400, "name: required, e.g. name=host.cpu.percent")
        try:
            raw_labels = loads_json(q.get("labels") or "{}")
            if not isinstance(raw_labels, dict):
                raise ValueError
        except ValueError:
            return _error(400, 'labels: expected a JSON object such as {"core":"0"}')
        labels = make_labels(raw_labels)
        now = now_ms()
        until = parse_time(q.get("until"), now, now, "until")
        since = parse_time(q.get("since"), until - 3_600_000, now, "since")
        if since > until:
            return _error(400, "since: must not be after until")
        step_raw = q.get("step")
        step: int | None = None
        if step_raw:
            try:
                step = whole_number(step_raw)
                if step is None:
                    step = int(parse_duration(step_raw) * 1000)
            except ValueError:
                return _error(
                    400, f"step: expected milliseconds or a duration such as 10s, got {step_raw!r}"
                )
            if step <= 0:
                return _error(400, "step: must be positive")

        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            chosen = step
            if chosen is None:
                count = queries.count_samples(conn, name, labels)
                if count > MAX_POINTS:
                    chosen = max(1, math.ceil((until - since) / MAX_POINTS))
            points = queries.series_range(
                conn, name, labels, since_ms=since, until_ms=until, step_ms=chosen
            )
            return [
                {"ts_ms": p.ts_ms, "avg": p.avg, "min": p.min, "max": p.max, "count": p.count}
                for p in points
            ]

        points = await self.read(query)
        return json_response(
            {
                "name": name,
                "labels": dict(labels),
                "since_ms": since,
                "until_ms": until,
                "step_ms": step,
                "points": points,
            }
        )

    async def events(self, request: Request) -> Response:
        q = request.query
        try:
            limit = min(1000, max(1, int(q.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit: expected a whole number")
        now = now_ms()
        since = parse_time(q.get("since"), 0, now, "since") if q.get("since") else None
        events = await self.read(
            lambda c: queries.recent_events(
                c, limit=limit, kind=q.get("kind"), subject=q.get("subject"), since_ms=since
            )
        )
        return json_response({"events": [e.to_json() for e in events]})

    async def report(self, request: Request) -> Response:
        """The host report (the same code as ``vigil report``), built in a worker thread."""
        # Deferred: the report code (and its tables and charts) loads on the first export,
        # not in every agent that never serves one.
        from agent.report import CONTENT_TYPES, DOCUMENT_FORMATS, parse_since, render
        from storage.report import build_report

        q = request.query
        fmt = q.get("format", "json")
        if fmt not in DOCUMENT_FORMATS:
            return _error(
                400,
                f"format: expected {', '.join(DOCUMENT_FORMATS)}, got {fmt!r} (CSV is one file "
                "per table: use `vigil report --format csv -o DIR`)",
            )
        try:
            span_ms = parse_since(q.get("since", "7d"))
        except ValueError as exc:
            return _error(400, f"since: {exc}")
        status = self.agent.status()
        models = [m.name for m in status.models]
        now = now_ms()
        body = await self.read(
            lambda c: render(
                build_report(
                    c, since_ms=now - span_ms, until_ms=now, host=status.host, models=models
                ),
                fmt,
            )
        )
        if request.headers.get(OPERATOR_HEADER):
            # A person exported it (the TUI names them); dashboards polling JSON are not audited.
            by = operator_of(request)
            self.agent.emit(
                Event(
                    ts_ms=now,
                    kind="report.exported",
                    subject="agent",
                    message=f"{fmt} report exported by {by}",
                    data={"by": by, "format": fmt, "since_ms": now - span_ms},
                )
            )
        return Response(body=body.encode("utf-8"), headers={"Content-Type": CONTENT_TYPES[fmt]})

    async def probe_runs(self, request: Request) -> Response:
        q = request.query
        try:
            limit = min(1000, max(1, int(q.get("limit", "50"))))
        except ValueError:
            return _error(400, "limit: expected a whole number")
        runs = await self.read(lambda c: queries.recent_probe_runs(c, q.get("model"), limit=limit))
        return json_response({"probe_runs": [r.to_json() for r in runs]})


def build_app(agent: AgentView, tokens: TokenRegistry) -> Router:
    """The routes of one agent, behind the bearer-token check."""
    api = Api(agent)
    collector = AgentMetrics(agent)

    async def metrics(request: Request) -> Response:
        body = await asyncio.to_thread(lambda: render_metrics(collector.collect()))
        return Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    app = Router(middlewares=[_auth_middleware(tokens)])
    app.add_get("/healthz", api.healthz)
    app.add_get("/api/v1/status", api.status)
    app.add_get("/api/v1/whoami", api.whoami)
    app.add_get("/api/v1/models", api.models)
    app.add_post("/api/v1/models/{name}/probe", api.probe_model)
    app.add_get("/api/v1/series", api.series)
    app.add_get("/api/v1/events", api.events)
    app.add_get("/api/v1/probe_runs", api.probe_runs)
    app.add_get("/api/v1/report", api.report)
    app.add_get("/api/v1/incidents", api.incidents)
    app.add_post(r"/api/v1/incidents/{id}/{action:acknowledge|resolve}", api.incident_action)
    app.add_get("/api/v1/processes", api.processes)
    app.add_get("/api/v1/processes/{name}/logs", api.process_logs)
    app.add_post(
        r"/api/v1/processes/{name}/{action:start|stop|restart|release}", api.process_action
    )
    register_alert_routes(app, AlertsApi(agent, api.read))
    app.add_get("/metrics", metrics)
    register_deploy_routes(app, agent, operator_of)
    register_forward_routes(app, agent)
    register_rollout_routes(app, agent, operator_of)
    register_environment_routes(app, agent)
    register_summary_routes(app, agent, api.read)
    return app
