"""The event-derived parts of a host report: incidents, restarts, deployments, drift.

See :mod:`storage.report` for what the numbers mean; this module only reads the ``incidents``
and ``events`` tables (and ``probe_runs`` to find when a deployment was first verified).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from typing import Any

from storage.incidents import list_incidents
from storage.records import Incident
from storage.report_model import (
    DeploymentRow,
    Deployments,
    Drift,
    DriftRow,
    IncidentRow,
    Incidents,
    ProcessSummary,
    RestartGroup,
    Restarts,
    Window,
)
from storage.stats import percentile

DAY_MS = 86_400_000
RESTART_EVENTS = ("process.restarting", "process.exited", "process.hung", "process.quarantined")


def scalar(conn: sqlite3.Connection, sql: str, *args: object) -> Any:
    """The first column of the first row of a query, or None without rows."""
    row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


def json_object(text: str | None) -> dict[str, Any]:
    """A stored JSON object (event data, labels); ``{}`` for anything else."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def restart_reason(data: dict[str, Any]) -> str:
    """The reason a ``process.restarting`` event is grouped by.

    The hang detail in parentheses (the failing probe's error text) is dropped so that restarts
    for the same cause group together; an operator's restart is ``operator restart``.
    """
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason:
        return "operator restart" if data.get("by") else "unknown"
    return re.sub(r"\s*\(.*\)\s*$", "", reason) or reason


def began_of(inc: Incident) -> int | None:
    """When the incident's fault began: ``began_ms``, or (rows from before it was kept) the
    ``failing_since_ms`` its evidence carries; None when neither is known."""
    if inc.began_ms is not None:
        return inc.began_ms
    failing = inc.evidence.get("failing_since_ms")
    return int(failing) if isinstance(failing, int | float) else None


MAINTENANCE_PREFIX = "maintenance:"


def maintenance_of(inc: Incident) -> str | None:
    """The maintenance window an incident opened in: its evidence's ``planned`` key, when that
    reads ``maintenance: <name>`` (the name; ``?`` if empty); None for an unplanned incident."""
    planned = inc.evidence.get("planned")
    if isinstance(planned, str) and planned.startswith(MAINTENANCE_PREFIX):
        return planned[len(MAINTENANCE_PREFIX) :].strip() or "?"
    return None


def incidents_in(conn: sqlite3.Connection, window: Window) -> Incidents:
    """Incidents open at some time in the window, with their times to detect and recover.

    Incidents opened inside a maintenance window (evidence ``planned`` starting with
    ``maintenance:``) are counted apart; MTTD, MTTR and the longest TTR cover the unplanned
    ones only."""
    found = [
        i
        for i in list_incidents(conn, since_ms=window.since_ms, limit=1_000_000)
        if i.opened_ms <= window.until_ms
    ]
    rows: list[IncidentRow] = []
    for inc in sorted(found, key=lambda i: (i.opened_ms, i.id)):
        failing_ms = began_of(inc)
        resolved_in = inc.resolved_ms is not None and inc.resolved_ms <= window.until_ms
        rows.append(
            IncidentRow(
                id=inc.id,
                subject=inc.subject,
                kind=inc.kind,
                severity=inc.severity,
                cause=inc.cause,
                state=inc.state if resolved_in or inc.state != "resolved" else "open",
                opened_ms=inc.opened_ms,
                failing_since_ms=failing_ms,
                acknowledged_ms=inc.acknowledged_ms,
                resolved_ms=inc.resolved_ms if resolved_in else None,
                ttd_ms=max(0, inc.opened_ms - failing_ms) if failing_ms is not None else None,
                ttr_ms=inc.ttr_ms if resolved_in else None,
                root_id=inc.root_id,
                maintenance=maintenance_of(inc),
            )
        )
    unplanned = [r for r in rows if r.maintenance is None]
    ttds = [r.ttd_ms for r in unplanned if r.ttd_ms is not None and r.opened_ms >= window.since_ms]
    resolved = [r for r in rows if r.ttr_ms is not None and r.resolved_ms is not None]
    ttrs = [r.ttr_ms for r in resolved if r.maintenance is None and r.ttr_ms is not None]
    return Incidents(
        total=len(rows),
        opened_in_window=sum(1 for r in rows if r.opened_ms >= window.since_ms),
        resolved_in_window=len(resolved),
        still_open=sum(1 for r in rows if r.resolved_ms is None),
        critical=sum(1 for r in rows if r.severity == "critical"),
        mttd_ms=(sum(ttds) / len(ttds)) if ttds else None,
        mttr_ms=(sum(ttrs) / len(ttrs)) if ttrs else None,
        max_ttr_ms=max(ttrs) if ttrs else None,
        rows=tuple(rows),
        in_maintenance=len(rows) - len(unplanned),
        unplanned=len(unplanned),
    )


def restarts_in(conn: sqlite3.Connection, window: Window) -> Restarts:
    """``process.restarting`` events grouped by process and reason, and per-process counts."""
    groups: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = conn.execute(
        "SELECT ts, kind, subject, data FROM events WHERE kind IN (?, ?, ?, ?) "
        "AND ts BETWEEN ? AND ? ORDER BY seq",
        (*RESTART_EVENTS, window.since_ms, window.until_ms),
    )
    for ts, kind, subject, raw in rows:
        process = subject.removeprefix("process:")
        counts[process][kind] += 1
        if kind == "process.restarting":
            data = json_object(raw)
            detail = str(data.get("reason") or f"restarted by {data.get('by', 'unknown')}")
            groups[(process, restart_reason(data))].append((int(ts), detail))
    restart_groups = tuple(
        RestartGroup(
            process=process,
            reason=reason,
            count=len(items),
            first_ms=items[0][0],
            last_ms=items[-1][0],
            last_detail=items[-1][1],
        )
        for (process, reason), items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    )
    processes = tuple(
        ProcessSummary(
            process=name,
            restarts=c["process.restarting"],
            exits=c["process.exited"],
            hangs=c["process.hung"],
            quarantines=c["process.quarantined"],
        )
        for name, c in sorted(counts.items())
    )
    return Restarts(
        total=sum(g.count for g in restart_groups), groups=restart_groups, processes=processes
    )


def _artifact_of(data: dict[str, Any]) -> Any:
    # Events written before artifacts had kinds carry the file's sha256 only.
    return data.get("artifact") or data.get("sha256")


def deployments_in(conn: sqlite3.Connection, window: Window) -> Deployments:
    """Artifact changes (``model.artifact`` events with a new artifact) in the window."""
    # The whole history up to the window's end: the artifact a model had before the window
    # decides whether the first one seen inside it is a change.
    events = conn.execute(
        "SELECT ts, subject, data FROM events WHERE kind = 'model.artifact' AND ts <= ? "
        "ORDER BY seq",
        (window.until_ms,),
    ).fetchall()
    by_model: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for ts, subject, raw in events:
        by_model[subject.removeprefix("model:")].append((int(ts), json_object(raw)))
    rows: list[DeploymentRow] = []
    for model, seen in by_model.items():
        for i, (ts, data) in enumerate(seen):
            previous = _artifact_of(seen[i - 1][1]) if i else None
            artifact = _artifact_of(data)
            if not i or artifact == previous or ts < window.since_ms:
                continue
            upto = seen[i + 1][0] if i + 1 < len(seen) else window.until_ms + 1
            # Events are stamped when their run's outcome was observed (end_ts), runs keep when
            # they were sent (ts): the run that reported the new artifact, if ok, verifies it.
            verified = scalar(
                conn,
                "SELECT min(coalesce(end_ts, ts)) FROM probe_runs WHERE model = ? AND ok = 1 "
                "AND coalesce(end_ts, ts) >= ? AND coalesce(end_ts, ts) < ?",
                model,
                ts,
                upto,
            )
            made = data.get("artifact_time_ms", data.get("artifact_mtime_ms"))
            made_ms = int(made) if isinstance(made, int | float) else None
            kind = data.get("artifact_kind") or ("sha256" if data.get("sha256") else None)
            run_data = data.get("run")
            run = run_data if isinstance(run_data, dict) else {}
            rows.append(
                DeploymentRow(
                    ts_ms=ts,
                    model=model,
                    artifact=str(artifact) if artifact is not None else None,
                    artifact_kind=str(kind) if kind else None,
                    previous_artifact=str(previous) if previous is not None else None,
                    first_run_category=str(run.get("category")) if run.get("category") else None,
                    verified_ms=int(verified) if verified is not None else None,
                    artifact_time_ms=made_ms,
                    lead_time_ms=(
                        max(0, int(verified) - made_ms)
                        if verified is not None and made_ms is not None
                        else None
                    ),
                )
            )
    rows.sort(key=lambda r: (r.ts_ms, r.model))
    leads = sorted(r.lead_time_ms for r in rows if r.lead_time_ms is not None)
    days = max(window.until_ms - window.since_ms, 1) / DAY_MS
    return Deployments(
        count=len(rows),
        per_day=len(rows) / days,
        failed=sum(1 for r in rows if r.verified_ms is None),
        median_lead_time_ms=percentile(leads, 50),
        rows=tuple(rows),
        note=None
        if rows
        else "no deployments in this window: a deployment is a change of the artifact a probe "
        "reports (onnx: the file's sha256; ollama: the digest; tgi: model_sha; openai: the "
        "served root, where the server sends one; kserve_v2: the model's versions; http, tcp "
        "and metrics report none)",
    )


def drift_in(conn: sqlite3.Connection, window: Window) -> Drift:
    """``drift.*`` events in the window."""
    rows = tuple(
        DriftRow(ts_ms=int(ts), subject=subject, kind=kind, message=message)
        for ts, kind, subject, message in conn.execute(
            "SELECT ts, kind, subject, message FROM events WHERE kind >= 'drift.' "
            "AND kind < 'drift.\uffff' AND ts BETWEEN ? AND ? ORDER BY seq",
            (window.since_ms, window.until_ms),
        )
    )
    return Drift(
        count=len(rows),
        rows=rows,
        note=None
        if rows
        else "no drift detected in this window (latency, throughput and output checks on "
        "each model's answered probe runs)",
    )


PLANNED_STATES = ("starting", "stopped")


def planned_downtime_ms(conn: sqlite3.Connection, window: Window, model: str) -> int:
    """Time ``model`` spent ``starting`` or ``stopped`` in the window, from its state changes.

    A span still open ends at the window's end, or where the agent stopped (nothing is known
    of the model's state after that until it starts again).
    """
    subject = f"model:{model}"
    before = conn.execute(
        "SELECT json_extract(data, '$.to') FROM events WHERE kind = 'model.state_changed' "
        "AND subject = ? AND ts < ? AND json_valid(data) ORDER BY seq DESC LIMIT 1",
        (subject, window.since_ms),
    ).fetchone()
    state = str(before[0]) if before and before[0] is not None else None
    since = window.since_ms
    total = 0
    rows = conn.execute(
        "SELECT ts, kind, json_extract(data, '$.to') FROM events "
        "WHERE ts BETWEEN ? AND ? AND ((kind = 'model.state_changed' AND subject = ?) "
        "OR kind = 'agent.stopped') AND json_valid(data) ORDER BY seq",
        (window.since_ms, window.until_ms, subject),
    )
    for ts, kind, to in rows:
        at = max(int(ts), since)
        if state in PLANNED_STATES:
            total += at - since
        state = None if kind == "agent.stopped" else str(to)
        since = at
    if state in PLANNED_STATES:
        total += window.until_ms - since
    return total


def outage_ms(conn: sqlite3.Connection, window: Window, model: str) -> int:
    """Time the model's ``model_down`` incidents covered in the window: from when the fault
    began to when recovery was observed (the window's end for one still open)."""
    total = 0
    for inc in list_incidents(
        conn, subject=f"model:{model}", since_ms=window.since_ms, limit=100_000
    ):
        if inc.kind != "model_down":
            continue
        began = began_of(inc)
        began = began if began is not None else inc.opened_ms
        end = inc.resolved_ms if inc.resolved_ms is not None else window.until_ms
        lo, hi = max(began, window.since_ms), min(end, window.until_ms)
        total += max(0, hi - lo)
    return total
