"""The report's alerting section: alerts fired, pages sent, time to first notification,
silences and maintenance windows (see :class:`storage.report_model.Alerting`).

It reads the ``alerts``, ``silences`` and ``outbox`` tables and the ``maintenance.*`` events. A
database from before those tables existed (an old copied ``vigil.db``) gives an empty section
with a note, not an error.

**Time to first notification** of an incident (docs/kpi.md): for each *unplanned* incident
opened in the window, from when its fault began (``began_ms``; older rows: the evidence's
``failing_since_ms``; else ``opened_ms``) to the ``delivered_ms`` of the first outbox row that

- is ``delivered``, by the window's end,
- was created at or after that ``began_ms``, and
- carries an alert (in its payload's ``alerts``, folded or not) whose subject (the ``alerts``
  row of the same fingerprint) equals the incident's subject;

"first" is the smallest ``delivered_ms`` (then ``created_ms``, channel). An incident without one
has a null time and is counted as not notified. Incidents opened inside maintenance are left
out: maintenance mutes their notifications on purpose.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from typing import Any

from storage.alerts import list_silences
from storage.incidents import list_incidents
from storage.report_events import began_of, json_object, maintenance_of
from storage.report_model import (
    Alerting,
    ChannelPages,
    FirstNotification,
    MaintenanceInWindow,
    RuleFirings,
    SilenceInWindow,
    Window,
)
from storage.stats import percentile

NOISIEST = 5
"""How many rules the noisiest-rules list keeps."""


def _has_tables(conn: sqlite3.Connection, *names: str) -> bool:
    found = {
        str(r[0])
        for r in conn.execute(
            f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "  # noqa: S608
            f"({','.join('?' * len(names))})",
            names,
        )
    }
    return found == set(names)


def alerting_in(conn: sqlite3.Connection, window: Window) -> Alerting:
    """The alerting section over ``window``."""
    if not _has_tables(conn, "alerts", "silences", "outbox"):
        return Alerting(
            fired=0,
            by_rule=(),
            noisiest=(),
            pages_delivered=0,
            pages_undelivered=0,
            pages_pending=0,
            channels=(),
            first_notifications=(),
            mean_time_to_notify_ms=None,
            median_time_to_notify_ms=None,
            silences=(),
            maintenance=_maintenance(conn, window),
            note="this database has no alert tables (written before alerting existed)",
        )
    by_rule = _firings(conn, window)
    noisy: dict[str, int] = defaultdict(int)
    for f in by_rule:
        noisy[f.rule] += f.fired
    noisiest = tuple(
        RuleFirings(rule=rule, severity="all", fired=n)
        for rule, n in sorted(noisy.items(), key=lambda kv: (-kv[1], kv[0]))[:NOISIEST]
    )
    channels = _channels(conn, window)
    firsts = _first_notifications(conn, window)
    times = sorted(f.latency_ms for f in firsts if f.latency_ms is not None)
    fired = sum(f.fired for f in by_rule)
    return Alerting(
        fired=fired,
        by_rule=by_rule,
        noisiest=noisiest,
        pages_delivered=sum(c.delivered for c in channels),
        pages_undelivered=sum(c.undelivered for c in channels),
        pages_pending=sum(c.pending for c in channels),
        channels=channels,
        first_notifications=firsts,
        mean_time_to_notify_ms=(sum(times) / len(times)) if times else None,
        median_time_to_notify_ms=percentile([float(t) for t in times], 50),
        silences=_silences(conn, window),
        maintenance=_maintenance(conn, window),
        note=None if fired else "no alerts fired in this window",
    )


def _firings(conn: sqlite3.Connection, window: Window) -> tuple[RuleFirings, ...]:
    rows = conn.execute(
        "SELECT rule, severity, count(*) FROM alerts WHERE firing_ms BETWEEN ? AND ? "
        "GROUP BY rule, severity",
        (window.since_ms, window.until_ms),
    ).fetchall()
    return tuple(
        RuleFirings(rule=str(rule), severity=str(sev), fired=int(n))
        for rule, sev, n in sorted(rows, key=lambda r: (-int(r[2]), str(r[0]), str(r[1])))
    )


def _channels(conn: sqlite3.Connection, window: Window) -> tuple[ChannelPages, ...]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    errors: dict[str, str | None] = {}
    for channel, state, delivered_ms, last_error in conn.execute(
        "SELECT channel, state, delivered_ms, last_error FROM outbox "
        "WHERE created_ms BETWEEN ? AND ? AND kind != 'test' ORDER BY created_ms, id",
        (window.since_ms, window.until_ms),
    ):
        c = counts[str(channel)]
        if state == "delivered" and delivered_ms is not None and delivered_ms <= window.until_ms:
            c[0] += 1
        elif state == "undelivered":
            c[1] += 1
        else:
            c[2] += 1
        if last_error:
            errors[str(channel)] = str(last_error)
    return tuple(
        ChannelPages(
            channel=name, delivered=d, undelivered=u, pending=p, last_error=errors.get(name)
        )
        for name, (d, u, p) in sorted(counts.items())
    )


def _first_notifications(conn: sqlite3.Connection, window: Window) -> tuple[FirstNotification, ...]:
    subjects = {
        str(fp): str(subject)
        for fp, subject in conn.execute("SELECT DISTINCT fingerprint, subject FROM alerts")
    }
    # Delivered notifications by the subjects of the alerts they carry, earliest delivery first.
    delivered: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for channel, created, done, payload in conn.execute(
        "SELECT channel, created_ms, delivered_ms, payload FROM outbox WHERE state = 'delivered' "
        "AND delivered_ms IS NOT NULL AND delivered_ms <= ? ORDER BY delivered_ms, created_ms, "
        "channel",
        (window.until_ms,),
    ):
        carried = {
            subjects[fp]
            for a in _alerts_of(payload)
            if isinstance(a, dict) and (fp := str(a.get("fingerprint"))) in subjects
        }
        for subject in carried:
            delivered[subject].append((int(done), int(created), str(channel)))
    out: list[FirstNotification] = []
    for inc in sorted(
        list_incidents(conn, since_ms=window.since_ms, limit=1_000_000),
        key=lambda i: (i.opened_ms, i.id),
    ):
        if not window.since_ms <= inc.opened_ms <= window.until_ms or maintenance_of(inc):
            continue
        began = began_of(inc)
        began = inc.opened_ms if began is None else began
        first = next((d for d in delivered.get(inc.subject, ()) if d[1] >= began), None)
        out.append(
            FirstNotification(
                incident_id=inc.id,
                subject=inc.subject,
                kind=inc.kind,
                began_ms=began,
                notified_ms=first[0] if first else None,
                channel=first[2] if first else None,
                latency_ms=max(0, first[0] - began) if first else None,
            )
        )
    return tuple(out)


def _alerts_of(payload: str | None) -> list[Any]:
    try:
        alerts = json.loads(payload or "{}").get("alerts")
    except (ValueError, AttributeError):
        return []
    return alerts if isinstance(alerts, list) else []


def _silences(conn: sqlite3.Connection, window: Window) -> tuple[SilenceInWindow, ...]:
    out: list[SilenceInWindow] = []
    for s in list_silences(conn):
        ended = s.ends_ms if s.expired_ms is None else min(s.ends_ms, s.expired_ms)
        if s.starts_ms > window.until_ms or ended < window.since_ms:
            continue
        out.append(
            SilenceInWindow(
                id=s.id,
                matchers=", ".join(f"{k}{op}{v}" for k, op, v in s.matchers),
                starts_ms=s.starts_ms,
                ends_ms=s.ends_ms,
                expired_ms=s.expired_ms,
                author=s.author,
                comment=s.comment,
            )
        )
    return tuple(sorted(out, key=lambda s: (s.starts_ms, s.id)))


def _maintenance(conn: sqlite3.Connection, window: Window) -> tuple[MaintenanceInWindow, ...]:
    opened: dict[str, tuple[int, int | None, str]] = {}
    spans: list[tuple[str, int, int | None, str]] = []
    for ts, kind, raw in conn.execute(
        "SELECT ts, kind, data FROM events WHERE kind IN ('maintenance.started', "
        "'maintenance.ended') AND ts <= ? ORDER BY ts, seq",
        (window.until_ms,),
    ):
        data = json_object(raw)
        name = str(data.get("window") or "?")
        if kind == "maintenance.started":
            ends = data.get("ends_ms")
            subjects = data.get("subjects")
            scope = ", ".join(str(s) for s in subjects) if isinstance(subjects, list) else ""
            opened[name] = (int(ts), int(ends) if isinstance(ends, int | float) else None, scope)
        elif name in opened:
            start, _, scope = opened.pop(name)
            spans.append((name, start, int(ts), scope))
    spans += [(name, start, ends, scope) for name, (start, ends, scope) in opened.items()]
    planned: dict[str, list[int]] = defaultdict(list)
    for inc in list_incidents(conn, since_ms=window.since_ms, limit=1_000_000):
        inside = maintenance_of(inc)
        if inside is not None and inc.opened_ms <= window.until_ms:
            planned[inside].append(inc.opened_ms)
    out: list[MaintenanceInWindow] = []
    for name, start, ends, scope in spans:
        if start > window.until_ms or (ends is not None and ends < window.since_ms):
            continue
        opened_in = [t for t in planned.get(name, ()) if start <= t <= (ends or window.until_ms)]
        out.append(
            MaintenanceInWindow(
                name=name,
                starts_ms=start,
                ends_ms=ends,
                subjects=scope or "the whole host",
                incidents=len(opened_in),
                source="events",
            )
        )
    seen = {m.name for m in out}
    for name, times in planned.items():
        if name not in seen:
            out.append(
                MaintenanceInWindow(
                    name=name,
                    starts_ms=min(times),
                    ends_ms=None,
                    subjects="",
                    incidents=len(times),
                    source="incidents",
                )
            )
    return tuple(sorted(out, key=lambda m: (m.starts_ms, m.name)))
