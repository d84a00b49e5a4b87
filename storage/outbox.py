"""The durable outbox: notifications written before they are sent, and their delivery state.

A row is one notification for one channel, keyed by ``(id, channel)``: the id is stable per alert
transition, so writing the same notification twice (a restart re-deciding it) is harmless, and a
receiver that gets it twice (a crash between "sent" and "marked delivered") sees the same id.

The payload is the notification's plain JSON as the agent's alerting room made it; storage does
not read it. It never holds secrets: those belong to the channel's settings, not the message.

Every write here runs on the writer thread (``Writer.run_task``); reads may run anywhere.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class DeliveryState(StrEnum):
    """Where a notification stands on its channel."""

    PENDING = "pending"
    """Not yet accepted by the receiver; sent (again) when ``next_attempt_ms`` comes."""
    DELIVERED = "delivered"
    """The receiver accepted it."""
    UNDELIVERED = "undelivered"
    """Given up: the receiver refused it for good, or kept failing past the retry limit."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One stored notification and its delivery state."""

    id: str
    channel: str
    kind: str
    dedup_key: str
    payload: Mapping[str, Any]
    created_ms: int
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_ms: int = 0
    last_attempt_ms: int | None = None
    last_error: str | None = None
    delivered_ms: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The row's identity: ``(id, channel)``."""
        return (self.id, self.channel)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form for the API (the payload holds no secrets)."""
        return {
            "id": self.id,
            "channel": self.channel,
            "kind": self.kind,
            "dedup_key": self.dedup_key,
            "created_ms": self.created_ms,
            "state": str(self.state),
            "attempts": self.attempts,
            "next_attempt_ms": self.next_attempt_ms,
            "last_attempt_ms": self.last_attempt_ms,
            "last_error": self.last_error,
            "delivered_ms": self.delivered_ms,
            "payload": dict(self.payload),
        }


_COLUMNS = (
    "id, channel, kind, dedup_key, payload, created_ms, state, attempts, next_attempt_ms, "
    "last_attempt_ms, last_error, delivered_ms"
)


def create_table(conn: sqlite3.Connection) -> None:
    """The ``outbox`` table (migration ``0007_outbox``)."""
    conn.execute("""
        CREATE TABLE outbox (
            id TEXT NOT NULL,
            channel TEXT NOT NULL,
            kind TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL,
            last_attempt_ms INTEGER,
            last_error TEXT,
            delivered_ms INTEGER,
            PRIMARY KEY (id, channel)
        )""")
    # The sender's question: this channel's pending rows, oldest first.
    conn.execute("CREATE INDEX outbox_due ON outbox (channel, state, created_ms, id)")
    conn.execute("CREATE INDEX outbox_created ON outbox (created_ms)")


def enqueue(conn: sqlite3.Connection, entries: Iterable[OutboxEntry]) -> int:
    """Insert new notifications (one transaction); a row already there is left as it is.

    Returns:
        How many rows were new.
    """
    rows = [
        (
            e.id,
            e.channel,
            e.kind,
            e.dedup_key,
            json.dumps(dict(e.payload), sort_keys=True, default=str),
            e.created_ms,
            str(DeliveryState.PENDING),
            e.next_attempt_ms or e.created_ms,
        )
        for e in entries
    ]
    if not rows:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO outbox (id, channel, kind, dedup_key, payload, created_ms, "
            "state, next_attempt_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        added = conn.total_changes - before
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return added


def due(conn: sqlite3.Connection, channel: str, now_ms: int, limit: int = 50) -> list[OutboxEntry]:
    """Pending notifications of one channel that may be sent now, oldest first.

    A channel's notifications go out in the order they were made (a resolution never overtakes
    its firing): only the oldest pending rows whose next attempt has come are due, up to the
    first that must wait for its retry.
    """
    sql = (
        f"SELECT {_COLUMNS} FROM outbox "  # noqa: S608 - fixed column list
        "WHERE channel = ? AND state = 'pending' ORDER BY created_ms, id LIMIT ?"
    )
    out: list[OutboxEntry] = []
    for row in conn.execute(sql, (channel, limit)):
        entry = _entry(row)
        if entry.next_attempt_ms > now_ms:
            break
        out.append(entry)
    return out


def heads(conn: sqlite3.Connection, channels: Sequence[str]) -> dict[str, int]:
    """For each channel with pending rows: when its oldest pending row may be sent."""
    out: dict[str, int] = {}
    for channel in channels:
        row = conn.execute(
            "SELECT next_attempt_ms FROM outbox WHERE channel = ? AND state = 'pending' "
            "ORDER BY created_ms, id LIMIT 1",
            (channel,),
        ).fetchone()
        if row is not None:
            out[channel] = int(row[0])
    return out


def mark_delivered(
    conn: sqlite3.Connection, key: tuple[str, str], *, attempts: int, delivered_ms: int
) -> None:
    """Record that the receiver accepted the notification."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "UPDATE outbox SET state = 'delivered', attempts = ?, last_attempt_ms = ?, "
        "delivered_ms = ?, last_error = NULL WHERE id = ? AND channel = ?",
        (attempts, delivered_ms, delivered_ms, key[0], key[1]),
    )
    conn.execute("COMMIT")


def mark_failed(
    conn: sqlite3.Connection,
    key: tuple[str, str],
    *,
    attempts: int,
    attempted_ms: int,
    error: str,
    next_attempt_ms: int | None,
) -> None:
    """Record a failed attempt: retried at ``next_attempt_ms``, or given up when it is None."""
    state = DeliveryState.PENDING if next_attempt_ms is not None else DeliveryState.UNDELIVERED
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "UPDATE outbox SET state = ?, attempts = ?, last_attempt_ms = ?, last_error = ?, "
        "next_attempt_ms = coalesce(?, next_attempt_ms) WHERE id = ? AND channel = ?",
        (str(state), attempts, attempted_ms, error, next_attempt_ms, key[0], key[1]),
    )
    conn.execute("COMMIT")


def list_entries(
    conn: sqlite3.Connection,
    *,
    state: str | None = None,
    channel: str | None = None,
    since_ms: int | None = None,
    limit: int = 200,
) -> list[OutboxEntry]:
    """Notifications newest first, optionally of one state or channel (for the API)."""
    sql = f"SELECT {_COLUMNS} FROM outbox WHERE 1=1"  # noqa: S608 - fixed column list
    args: list[object] = []
    if state:
        sql += " AND state = ?"
        args.append(state)
    if channel:
        sql += " AND channel = ?"
        args.append(channel)
    if since_ms is not None:
        sql += " AND created_ms >= ?"
        args.append(since_ms)
    sql += " ORDER BY created_ms DESC, id LIMIT ?"
    args.append(limit)
    return [_entry(r) for r in conn.execute(sql, args)]


def counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """Rows per ``(channel, state)``, for ``/metrics`` and the status view."""
    return {
        (str(ch), str(st)): int(n)
        for ch, st, n in conn.execute(
            "SELECT channel, state, count(*) FROM outbox GROUP BY channel, state"
        )
    }


def prune(conn: sqlite3.Connection, before_ms: int) -> int:
    """Delete settled rows (delivered or given up) created before ``before_ms``."""
    conn.execute("BEGIN IMMEDIATE")
    cur = conn.execute(
        "DELETE FROM outbox WHERE state != 'pending' AND created_ms < ?", (before_ms,)
    )
    conn.execute("COMMIT")
    return cur.rowcount


def _entry(row: tuple[Any, ...]) -> OutboxEntry:
    (nid, channel, kind, dedup, payload, created, state, attempts, nxt, last, err, done) = row
    return OutboxEntry(
        id=str(nid),
        channel=str(channel),
        kind=str(kind),
        dedup_key=str(dedup),
        payload=json.loads(payload or "{}"),
        created_ms=int(created),
        state=DeliveryState(state),
        attempts=int(attempts),
        next_attempt_ms=int(nxt),
        last_attempt_ms=None if last is None else int(last),
        last_error=err,
        delivered_ms=None if done is None else int(done),
    )
