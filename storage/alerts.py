"""Persisting and reading alerts and silences (the agent's alert engine decides; this stores).

An ``alerts`` row is one occurrence of one alert instance (rule x labels, its
``fingerprint``): from pending, through firing, to resolved. The row is updated in place as it
moves; every move is also an audit event, so its history lives in the chain. A ``silences`` row
is one silence; expiring it early sets ``expired_ms``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.records import Labels, make_labels


def create_tables(conn: sqlite3.Connection) -> None:
    """The ``alerts`` and ``silences`` tables (migration ``0006_alerts``)."""
    conn.execute("""
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            rule TEXT NOT NULL,
            subject TEXT NOT NULL,
            labels TEXT NOT NULL DEFAULT '{}',
            severity TEXT NOT NULL,
            state TEXT NOT NULL,
            value REAL,
            summary TEXT NOT NULL DEFAULT '',
            runbook_url TEXT NOT NULL DEFAULT '',
            pending_ms INTEGER NOT NULL,
            firing_ms INTEGER,
            resolved_ms INTEGER,
            flapping INTEGER NOT NULL DEFAULT 0,
            updated_ms INTEGER NOT NULL
        )""")
    conn.execute("CREATE INDEX alerts_state ON alerts (state, updated_ms)")
    conn.execute("CREATE INDEX alerts_fingerprint ON alerts (fingerprint, id)")
    conn.execute("""
        CREATE TABLE silences (
            id TEXT PRIMARY KEY,
            matchers TEXT NOT NULL,
            starts_ms INTEGER NOT NULL,
            ends_ms INTEGER NOT NULL,
            author TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            created_ms INTEGER NOT NULL,
            expired_ms INTEGER,
            expired_by TEXT
        )""")
    conn.execute("CREATE INDEX silences_ends ON silences (ends_ms)")


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One occurrence of one alert instance, as stored and served.

    ``state`` is ``pending``, ``firing`` or ``resolved``; the times are those of the decisions.
    """

    id: int
    fingerprint: str
    rule: str
    subject: str
    labels: Labels
    severity: str
    state: str
    value: float | None
    summary: str
    runbook_url: str
    pending_ms: int
    firing_ms: int | None
    resolved_ms: int | None
    flapping: bool
    updated_ms: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "subject": self.subject,
            "labels": dict(self.labels),
            "severity": self.severity,
            "state": self.state,
            "value": self.value,
            "summary": self.summary,
            "runbook_url": self.runbook_url,
            "pending_ms": self.pending_ms,
            "firing_ms": self.firing_ms,
            "resolved_ms": self.resolved_ms,
            "flapping": self.flapping,
            "updated_ms": self.updated_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertRow:
        """Rebuild from :meth:`to_json` output."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["labels"] = make_labels(data.get("labels") or {})
        kwargs["flapping"] = bool(data.get("flapping", False))
        return cls(**kwargs)


_ALERT_COLUMNS = (
    "id, fingerprint, rule, subject, labels, severity, state, value, summary, runbook_url, "
    "pending_ms, firing_ms, resolved_ms, flapping, updated_ms"
)


def save_alert(conn: sqlite3.Connection, row: AlertRow) -> None:
    """Insert or update one alert occurrence (runs on the writer thread)."""
    value = row.value if row.value is not None and math.isfinite(row.value) else None
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS}) "  # noqa: S608 - fixed columns
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.id,
            row.fingerprint,
            row.rule,
            row.subject,
            json.dumps(dict(row.labels), sort_keys=True),
            row.severity,
            row.state,
            value,
            row.summary,
            row.runbook_url,
            row.pending_ms,
            row.firing_ms,
            row.resolved_ms,
            int(row.flapping),
            row.updated_ms,
        ),
    )
    conn.execute("COMMIT")


def list_alerts(
    conn: sqlite3.Connection,
    *,
    states: tuple[str, ...] = (),
    since_ms: int | None = None,
    limit: int = 500,
) -> list[AlertRow]:
    """Alert occurrences, newest first, optionally in some states or updated since a time."""
    sql = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE 1=1"  # noqa: S608 - fixed columns
    args: list[object] = []
    if states:
        sql += f" AND state IN ({','.join('?' * len(states))})"
        args += list(states)
    if since_ms is not None:
        sql += " AND updated_ms >= ?"
        args.append(since_ms)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [
        AlertRow(
            id=int(r[0]),
            fingerprint=r[1],
            rule=r[2],
            subject=r[3],
            labels=make_labels(json.loads(r[4] or "{}")),
            severity=r[5],
            state=r[6],
            value=r[7],
            summary=r[8],
            runbook_url=r[9],
            pending_ms=int(r[10]),
            firing_ms=r[11],
            resolved_ms=r[12],
            flapping=bool(r[13]),
            updated_ms=int(r[14]),
        )
        for r in conn.execute(sql, args)
    ]


def max_alert_id(conn: sqlite3.Connection) -> int:
    """The highest alert id used so far (0 for none): ids are allocated by the agent."""
    row = conn.execute("SELECT max(id) FROM alerts").fetchone()
    return int(row[0] or 0)


@dataclass(frozen=True, slots=True)
class SilenceRow:
    """One silence as stored: matchers as ``[[label, op, value], ...]``."""

    id: str
    matchers: tuple[tuple[str, str, str], ...]
    starts_ms: int
    ends_ms: int
    author: str
    comment: str
    created_ms: int
    expired_ms: int | None = None
    expired_by: str | None = None


def save_silence(conn: sqlite3.Connection, row: SilenceRow) -> None:
    """Insert or update one silence (runs on the writer thread)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT OR REPLACE INTO silences (id, matchers, starts_ms, ends_ms, author, comment, "
        "created_ms, expired_ms, expired_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.id,
            json.dumps([list(m) for m in row.matchers]),
            row.starts_ms,
            row.ends_ms,
            row.author,
            row.comment,
            row.created_ms,
            row.expired_ms,
            row.expired_by,
        ),
    )
    conn.execute("COMMIT")


def list_silences(conn: sqlite3.Connection, *, active_at_ms: int | None = None) -> list[SilenceRow]:
    """Silences, newest first; with ``active_at_ms``, only those not ended by then."""
    sql = (
        "SELECT id, matchers, starts_ms, ends_ms, author, comment, created_ms, expired_ms, "
        "expired_by FROM silences"
    )
    args: list[object] = []
    if active_at_ms is not None:
        sql += " WHERE ends_ms > ? AND expired_ms IS NULL"
        args.append(active_at_ms)
    sql += " ORDER BY created_ms DESC, id"
    return [
        SilenceRow(
            id=r[0],
            matchers=tuple((str(a), str(b), str(c)) for a, b, c in json.loads(r[1])),
            starts_ms=int(r[2]),
            ends_ms=int(r[3]),
            author=r[4],
            comment=r[5],
            created_ms=int(r[6]),
            expired_ms=r[7],
            expired_by=r[8],
        )
        for r in conn.execute(sql, args)
    ]
