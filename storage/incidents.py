"""Persisting and reading incidents (the agent's ``IncidentBook`` decides; this stores)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from storage.records import Incident

_COLUMNS = (
    "id, subject, kind, severity, cause, state, opened_ms, acknowledged_ms, "
    "acknowledged_by, resolved_ms, resolved_by, ttr_ms, root_id, evidence, began_ms"
)


def save_incident(conn: sqlite3.Connection, inc: Incident) -> None:
    """Insert or update one incident (runs on the writer thread)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        f"INSERT OR REPLACE INTO incidents ({_COLUMNS}) "  # noqa: S608 - fixed column list
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            inc.id,
            inc.subject,
            inc.kind,
            inc.severity,
            inc.cause,
            inc.state,
            inc.opened_ms,
            inc.acknowledged_ms,
            inc.acknowledged_by,
            inc.resolved_ms,
            inc.resolved_by,
            inc.ttr_ms,
            inc.root_id,
            json.dumps(dict(inc.evidence), sort_keys=True, default=str),
            inc.began_ms,
        ),
    )
    conn.execute("COMMIT")


def _row(row: tuple[Any, ...]) -> Incident:
    (
        iid,
        subject,
        kind,
        severity,
        cause,
        state,
        opened,
        acked,
        acked_by,
        resolved,
        resolved_by,
        ttr,
        root,
        evidence,
        began,
    ) = row
    return Incident(
        id=int(iid),
        subject=subject,
        kind=kind,
        severity=severity,
        cause=cause,
        state=state,
        opened_ms=int(opened),
        acknowledged_ms=acked,
        acknowledged_by=acked_by,
        resolved_ms=resolved,
        resolved_by=resolved_by,
        ttr_ms=ttr,
        root_id=root,
        evidence=json.loads(evidence or "{}"),
        began_ms=began,
    )


def list_incidents(
    conn: sqlite3.Connection,
    *,
    state: str | None = None,
    subject: str | None = None,
    since_ms: int | None = None,
    limit: int = 200,
) -> list[Incident]:
    """Incidents newest first; ``state`` may be ``open`` (open or acknowledged) or exact."""
    sql = f"SELECT {_COLUMNS} FROM incidents WHERE 1=1"  # noqa: S608 - fixed column list
    args: list[object] = []
    if state == "open":
        sql += " AND state != 'resolved'"
    elif state:
        sql += " AND state = ?"
        args.append(state)
    if subject:
        sql += " AND subject = ?"
        args.append(subject)
    if since_ms is not None:
        sql += " AND (opened_ms >= ? OR resolved_ms IS NULL OR resolved_ms >= ?)"
        args += [since_ms, since_ms]
    sql += " ORDER BY opened_ms DESC, id DESC LIMIT ?"
    args.append(limit)
    return [_row(r) for r in conn.execute(sql, args)]


def max_incident_id(conn: sqlite3.Connection) -> int:
    """The highest id used so far (0 for none): ids are allocated by the agent."""
    row = conn.execute("SELECT max(id) FROM incidents").fetchone()
    return int(row[0] or 0)
