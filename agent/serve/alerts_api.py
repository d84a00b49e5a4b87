"""The alerting routes of the API: alerts, silences, deliveries and a channel's test send.

Reads need the ``read`` scope, creating or expiring a silence and a test send ``operate`` (the
API's bearer check says so by method). Who acts is the request's operator
(:func:`agent.serve.identity.operator_of`). Channel settings (URLs, keys) are never served.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from agent.alerting.outbox import send_test
from agent.alerting.outbox_store import OutboxUnavailable
from agent.config.alerting.routes import Matcher
from agent.serve.httpmessages import Request, Response, json_response
from agent.serve.identity import operator_of
from agent.serve.params import error as _error
from agent.serve.params import parse_time
from agent.serve.routing import Router
from agent.serve.view import AgentView
from probes.base import now_ms
from storage.alerts import AlertRow, SilenceRow, list_alerts, list_silences
from storage.outbox import DeliveryState
from storage.records import Event
from storage.text import printable
from storage.units import parse_duration

__all__ = ["AlertsApi", "register"]

T = TypeVar("T")

ALERT_STATES = ("pending", "firing", "silenced", "resolved")
SILENCE_STATES = ("active", "pending", "expired")
RESOLVED_SINCE = "1h"
"""``GET /api/v1/alerts`` lists alerts resolved within this long ago unless ``since`` says."""
MAX_SILENCE_S = 366 * 86_400.0


class Reader(Protocol):
    """Runs a read of the agent's database off the loop (:meth:`agent.serve.api.Api.read`)."""

    def __call__(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...


class AlertsApi:
    """The alerting handlers, bound to one agent; ``read`` runs a database read off the loop."""

    def __init__(self, agent: AgentView, read: Reader) -> None:
        self.agent = agent
        self._read = read

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


def register(app: Router, api: AlertsApi) -> None:
    """Add the alerting routes to ``app``."""
    app.add_get("/api/v1/alerts", api.alerts)
    app.add_get("/api/v1/silences", api.silences)
    app.add_post("/api/v1/silences", api.create_silence)
    app.add_delete("/api/v1/silences/{id}", api.expire_silence)
    app.add_get("/api/v1/deliveries", api.deliveries)
    app.add_post("/api/v1/notify/{channel}/test", api.notify_test)
