"""The agent's HTTP API: JSON under ``/api/v1``, Prometheus text under ``/metrics``.

Served by the agent's own HTTP server (:mod:`agent.serve.httpserver`), not aiohttp, which
cost the agent about 16 MB of RSS.

Every route but ``/healthz`` needs ``Authorization: Bearer <token>``; reads need the ``read``
scope, anything that acts needs ``operate``. Database reads run in worker threads on their own
read-only connections, so a slow query never blocks the loop or the writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from agent.alerting.outbox import send_test
from agent.alerting.outbox_store import OutboxUnavailable
from agent.config.alerting.routes import Matcher
from agent.serve.alertsummary import alert_counts
from agent.serve.deploy_api import register as register_deploy_routes
from agent.serve.exposition import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent.serve.exposition import render as render_metrics
from agent.serve.httpmessages import (
    HttpError,
    Request,
    Response,
    StreamResponse,
    json_response,
    loads_json,
    whole_number,
)
from agent.serve.identity import OPERATOR_HEADER, acting_as, acting_for, operator_of
from agent.serve.metrics import AgentMetrics
from agent.serve.rollout_api import register as register_rollout_routes
from agent.serve.routing import Handler, Middleware, Router
from agent.serve.tokens import TokenRegistry
from agent.serve.view import AgentView, model_stats
from agent.supervise.proclogs import TAIL_MAX_LINES
from agent.supervise.supervisor import ActionError
from probes.base import now_ms
from storage import queries
from storage.alerts import AlertRow, SilenceRow, list_alerts, list_silences
from storage.db import DB_FILENAME, connect
from storage.incidents import list_incidents
from storage.outbox import DeliveryState
from storage.records import Event, make_labels
from storage.text import printable
from storage.units import parse_duration

T = TypeVar("T")

MAX_POINTS = 2000
"""A range query without a step returns at most about this many points (auto-downsampled)."""

ALERT_STATES = ("pending", "firing", "silenced", "resolved")
SILENCE_STATES = ("active", "pending", "expired")
RESOLVED_SINCE = "1h"
"""``GET /api/v1/alerts`` lists alerts resolved within this long ago unless ``since`` says."""
MAX_SILENCE_S = 366 * 86_400.0


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status=status)


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


def parse_time(value: str | None, default_ms: int, now: int, field: str) -> int:
    """Epoch milliseconds, ``now``, or a duration relative to now (``-5m`` or ``5m`` ago)."""
    if value is None or value == "":
        return default_ms
    if value == "now":
        return now
    number = whole_number(value.removeprefix("-"))
    if number is not None:
        return -number if value.startswith("-") else number
    try:
        return now - int(abs(parse_duration(value)) * 1000)
    except ValueError:
        raise HttpError(
            400,
            f"{field}: expected epoch milliseconds, 'now' or a "
            f"relative duration such as -5m, got {value!r}",
        ) from None


class Api:
    """Route handlers bound to one agent."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent
        # Probes asked for by operators run after the answer; hold them so none is collected.
        self._probes: set[asyncio.Task[None]] = set()

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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
        return json_response({**body, "alert_counts": alert_counts(self.agent.alerting)})

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
        stats = await self._read(lambda c: {n: model_stats(c, n, now) for n in names})
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
        found = await self._read(
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

        points = await self._read(query)
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
        events = await self._read(
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
        body = await self._read(
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
        runs = await self._read(lambda c: queries.recent_probe_runs(c, q.get("model"), limit=limit))
        return json_response({"probe_runs": [r.to_json() for r in runs]})

    # --- alerting -------------------------------------------------------------------------

    def _alert_json(self, row: AlertRow, now: int) -> dict[str, Any]:
        """An alert as served: its stored form, plus the silence muting it and the
        maintenance window covering its subject now (None when neither)."""
        alerting = self.agent.alerting
        silence = (
            alerting.silences.silencing(dict(row.labels), now) if row.state == "firing" else None
        )
        window = (
            alerting.calendar.in_maintenance(row.subject, now) if row.state != "resolved" else None
        )
        return {
            **row.to_json(),
            "silenced_by": silence.id if silence else None,
            "maintenance": window.name if window else None,
        }

    async def alerts(self, request: Request) -> Response:
        """Pending and firing alerts as of the last evaluation (firing ones muted by a silence
        have ``silenced_by``), and those resolved since ``since`` (default 1h)."""
        q = request.query
        state = q.get("state") or None
        if state is not None and state not in ALERT_STATES:
            return _error(400, f"state: expected {', '.join(ALERT_STATES)}, got {state!r}")
        now = now_ms()
        since = parse_time(
            q.get("since"), now - int(parse_duration(RESOLVED_SINCE) * 1000), now, "since"
        )
        live = [self._alert_json(a, now) for a in self.agent.alerting.alerts()]
        resolved: list[dict[str, Any]] = []
        if state in (None, "resolved"):
            rows = await self._read(
                lambda c: list_alerts(c, states=("resolved",), since_ms=since, limit=500)
            )
            live_ids = {a["id"] for a in live}
            resolved = [self._alert_json(r, now) for r in rows if r.id not in live_ids]
        out = [*sorted(live, key=lambda a: -a["id"]), *resolved]
        if state == "silenced":
            out = [a for a in out if a["silenced_by"]]
        elif state is not None:
            out = [a for a in out if a["state"] == state]
        return json_response({"alerts": out})

    async def silences(self, request: Request) -> Response:
        """Silences newest first, each with its ``state``: active, pending (starts later) or
        expired."""
        state = request.query.get("state") or None
        if state is not None and state not in SILENCE_STATES:
            return _error(400, f"state: expected {', '.join(SILENCE_STATES)}, got {state!r}")
        now = now_ms()
        stored = await self._read(list_silences)
        # The book is ahead of the database by at most one writer batch: overlay its view.
        merged = {r.id: r for r in stored}
        for row in self.agent.alerting.silences.active(now):
            if row.id not in merged or merged[row.id].expired_ms is None:
                merged[row.id] = row
        rows = sorted(merged.values(), key=lambda r: (-r.created_ms, r.id))
        out = [_silence_json(r, now) for r in rows]
        if state is not None:
            out = [s for s in out if s["state"] == state]
        return json_response({"silences": out})

    async def create_silence(self, request: Request) -> Response:
        """A new silence (``operate``): ``{"matchers": ["model=m1", ...], "duration": "2h",
        "comment": "..."}``; the author is the operator."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body: expected a JSON object with matchers, duration and comment")
        if not isinstance(body, dict):
            return _error(400, "body: expected a JSON object with matchers, duration and comment")
        raw = body.get("matchers")
        if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
            return _error(
                400, 'matchers: expected a non-empty list of strings such as ["model=m1"]'
            )
        try:
            matchers = [Matcher.parse(m.strip()) for m in raw]
        except ValueError as exc:
            return _error(400, f"matchers: {exc}")
        duration = body.get("duration")
        try:
            if isinstance(duration, bool) or not isinstance(duration, (str, int, float)):
                raise ValueError
            seconds = float(duration) if not isinstance(duration, str) else parse_duration(duration)
        except (ValueError, OverflowError):  # OverflowError: an integer too large for a float
            return _error(
                400, f"duration: expected seconds or a duration such as 2h, got {duration!r}"
            )
        if not 0 < seconds <= MAX_SILENCE_S or not math.isfinite(seconds):
            return _error(400, f"duration: expected more than 0 and at most 366d, got {duration!r}")
        comment = body.get("comment")
        if not isinstance(comment, str) or not comment.strip():
            return _error(400, "comment: expected a non-empty string saying why")
        now = now_ms()
        row = self.agent.alerting.silences.create(
            matchers,
            duration_s=seconds,
            author=operator_of(request),
            comment=printable(comment.strip())[:1000],
            now_ms=now,
        )
        return json_response({"silence": _silence_json(row, now)}, status=201)

    async def expire_silence(self, request: Request) -> Response:
        """End a silence now (``operate``), recorded with the operator."""
        silence_id = request.match_info["id"]
        now = now_ms()
        row = self.agent.alerting.silences.expire(silence_id, operator_of(request), now)
        if row is None:
            return _error(404, f"no silence {silence_id!r} in force")
        return json_response({"silence": _silence_json(row, now)})

    async def deliveries(self, request: Request) -> Response:
        """Recent outbox rows newest first (status, attempts, last error) and each channel's
        delivery health. Channel settings (URLs, keys) are never served."""
        q = request.query
        state = q.get("state") or None
        states = tuple(str(s) for s in DeliveryState)
        if state is not None and state not in states:
            return _error(400, f"state: expected {', '.join(states)}, got {state!r}")
        try:
            limit = min(1000, max(1, int(q.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit: expected a whole number")
        alerting = self.agent.alerting
        try:
            rows = await alerting.store.entries(
                state=state, channel=q.get("channel") or None, limit=limit
            )
        except OutboxUnavailable as exc:
            return _error(503, f"the outbox cannot be read now: {exc}")
        health = [dataclasses.asdict(h) for _, h in sorted(alerting.sender.health.items())]
        return json_response({"deliveries": [r.to_json() for r in rows], "channels": health})

    async def notify_test(self, request: Request) -> Response:
        """Send a test notification straight through one channel (``operate``) and answer
        with the receiver's reply (secrets scrubbed); audited as ``notify.tested``."""
        name = request.match_info["channel"]
        channels = self.agent.alerting.sender.channels
        channel = channels.get(name)
        if channel is None:
            known = ", ".join(sorted(channels)) or "none"
            return _error(404, f"no notify channel named {name!r}; known: {known}")
        result = await send_test(channel, self.agent.status().host)
        by = operator_of(request)
        detail = printable(result.detail)
        self.agent.emit(
            Event(
                ts_ms=now_ms(),
                kind="notify.tested",
                subject="alerts",
                message=f"test notification on {name} by {by}: "
                f"{'ok' if result.ok else 'failed'} ({detail})",
                data={"by": by, "channel": name, "ok": result.ok, "detail": detail},
            )
        )
        return json_response(
            {"channel": name, "ok": result.ok, "detail": detail, "status": result.status}
        )


def _silence_json(row: SilenceRow, now: int) -> dict[str, Any]:
    """A silence as served, with its state at ``now``."""
    if row.expired_ms is not None or row.ends_ms <= now:
        state = "expired"
    elif row.starts_ms > now:
        state = "pending"
    else:
        state = "active"
    return {
        "id": row.id,
        "matchers": [f"{a}{b}{c}" for a, b, c in row.matchers],
        "starts_ms": row.starts_ms,
        "ends_ms": row.ends_ms,
        "author": row.author,
        "comment": row.comment,
        "created_ms": row.created_ms,
        "expired_ms": row.expired_ms,
        "expired_by": row.expired_by,
        "state": state,
    }


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
    app.add_get("/api/v1/alerts", api.alerts)
    app.add_get("/api/v1/silences", api.silences)
    app.add_post("/api/v1/silences", api.create_silence)
    app.add_delete("/api/v1/silences/{id}", api.expire_silence)
    app.add_get("/api/v1/deliveries", api.deliveries)
    app.add_post("/api/v1/notify/{channel}/test", api.notify_test)
    app.add_get("/metrics", metrics)
    register_deploy_routes(app, agent, operator_of)
    register_rollout_routes(app, agent, operator_of)
    return app
