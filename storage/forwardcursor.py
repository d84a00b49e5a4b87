"""The remote_write cursor: how far each series has been sent to a receiver, and the reads that
pick up from there.

The forwarder (``agent.forward``) sends the raw samples already stored here, never a second
copy of them. What it has sent is one row per series, ``remote_write_cursor (target,
series_id, ts)``: every sample of the series up to and including ``ts`` has been accepted (or
refused for good) by the receiver. A series with no row yet starts after the target's
``start_ms`` (when forwarding was turned on). After an outage of the receiver the next read
simply starts at the cursor again: nothing is lost while the samples are within the raw
retention.

Retention may delete samples a cursor has not reached yet (a receiver down for longer than
``[agent] retention``). :func:`skip_purged`, called by :mod:`storage.retention` before it
deletes a series' raw samples, counts those samples into the target's ``dropped`` and moves
the cursor past them, in the same step, so the count is exact; the forwarder reports what it
has not reported yet (``dropped - dropped_reported``) as an event and a metric.

Cursor and target rows are written on the writer thread only (``Writer.run_task``); the reads
take any connection and run in one read transaction, so a block sealed from the head between
two statements can neither be missed nor read twice.
"""

from __future__ import annotations

import bisect
import sqlite3
from dataclasses import dataclass, field

from storage.codec import decode_lists

TARGET = "default"
"""The one receiver a config names (``[remote_write]``)."""


def create_tables(conn: sqlite3.Connection) -> None:
    """The tables (migration ``0010_remote_write``)."""
    conn.execute("""
        CREATE TABLE remote_write_targets (
            name TEXT PRIMARY KEY,
            start_ms INTEGER NOT NULL,
            dropped INTEGER NOT NULL DEFAULT 0,
            dropped_reported INTEGER NOT NULL DEFAULT 0
        )""")
    # One small row per series, keyed as it is read: WITHOUT ROWID.
    conn.execute("""
        CREATE TABLE remote_write_cursor (
            target TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            PRIMARY KEY (target, series_id)
        ) WITHOUT ROWID""")


@dataclass(slots=True)
class TargetState:
    """A target as stored: where it started, its cursors and its dropped samples."""

    start_ms: int
    cursors: dict[int, int] = field(default_factory=dict)
    dropped: int = 0
    dropped_reported: int = 0


# --- written on the writer thread ------------------------------------------------------------


def open_target(conn: sqlite3.Connection, target: str, start_ms: int) -> None:
    """Create the target if it is new (starting after ``start_ms``); keep it as it is if not,
    and forget every other target (a config names one receiver)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT OR IGNORE INTO remote_write_targets (name, start_ms) VALUES (?, ?)",
            (target, start_ms),
        )
        _forget_others(conn, target)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def forget_targets(conn: sqlite3.Connection) -> None:
    """Forget every target and its cursors: forwarding was turned off, so turning it on again
    starts from then, not from a cursor days behind."""
    if conn.execute("SELECT 1 FROM remote_write_targets LIMIT 1").fetchone() is None:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        _forget_others(conn, None)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _forget_others(conn: sqlite3.Connection, keep: str | None) -> None:
    conn.execute("DELETE FROM remote_write_cursor WHERE target IS NOT ?", (keep,))
    conn.execute("DELETE FROM remote_write_targets WHERE name IS NOT ?", (keep,))


def advance(conn: sqlite3.Connection, target: str, cursors: dict[int, int]) -> None:
    """Record that each series was sent up to its time here; a cursor never moves back (the
    retention hook may have moved it further meanwhile)."""
    if not cursors:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO remote_write_cursor (target, series_id, ts) VALUES (?, ?, ?) "
            "ON CONFLICT (target, series_id) DO UPDATE SET ts = max(ts, excluded.ts)",
            [(target, sid, ts) for sid, ts in cursors.items()],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def mark_reported(conn: sqlite3.Connection, target: str, dropped: int) -> None:
    """The forwarder has reported the dropped samples up to this count."""
    conn.execute(
        "UPDATE remote_write_targets SET dropped_reported = max(dropped_reported, ?) "
        "WHERE name = ?",
        (dropped, target),
    )


# --- retention's hook ----------------------------------------------------------------------


def retention_targets(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """The targets whose cursors retention must respect: (name, start_ms); none in a
    database made before forwarding existed that was not migrated (tests, tools)."""
    try:
        rows = conn.execute("SELECT name, start_ms FROM remote_write_targets").fetchall()
    except sqlite3.OperationalError:
        return []
    return [(str(n), int(s)) for n, s in rows]


def skip_purged(
    conn: sqlite3.Connection, targets: list[tuple[str, int]], sid: int, cutoff_ms: int
) -> int:
    """Before retention deletes the raw samples of ``sid`` older than ``cutoff_ms``: count the
    ones a target has not sent as dropped and move its cursor past them. Runs inside
    retention's step transaction; returns how many were counted, all targets together."""
    total = 0
    for name, start_ms in targets:
        row = conn.execute(
            "SELECT ts FROM remote_write_cursor WHERE target = ? AND series_id = ?", (name, sid)
        ).fetchone()
        after = int(row[0]) if row is not None else start_ms
        if after >= cutoff_ms - 1:
            continue
        lost = count_between(conn, sid, after, cutoff_ms)
        conn.execute(
            "INSERT INTO remote_write_cursor (target, series_id, ts) VALUES (?, ?, ?) "
            "ON CONFLICT (target, series_id) DO UPDATE SET ts = max(ts, excluded.ts)",
            (name, sid, cutoff_ms - 1),
        )
        if lost:
            conn.execute(
                "UPDATE remote_write_targets SET dropped = dropped + ? WHERE name = ?",
                (lost, name),
            )
        total += lost
    return total


def count_between(conn: sqlite3.Connection, sid: int, after_ms: int, before_ms: int) -> int:
    """How many raw samples of one series have ``after_ms < ts < before_ms``."""
    n = 0
    for start, end, count, blob in conn.execute(
        "SELECT start_ts, end_ts, n, data FROM sample_blocks WHERE series_id = ? "
        "AND start_ts < ? AND end_ts > ?",
        (sid, before_ms, after_ms),
    ):
        if start > after_ms and end < before_ms:
            n += int(count)
        else:
            ts, _ = decode_lists(blob)
            n += sum(1 for t in ts if after_ms < t < before_ms)
    head = conn.execute(
        "SELECT count(*) FROM samples_head WHERE series_id = ? AND ts > ? AND ts < ?",
        (sid, after_ms, before_ms),
    ).fetchone()[0]
    return n + int(head)


# --- reading (any connection) ----------------------------------------------------------------


def load_target(conn: sqlite3.Connection, target: str) -> TargetState | None:
    """The stored target, or None when it is not (yet) there."""
    row = conn.execute(
        "SELECT start_ms, dropped, dropped_reported FROM remote_write_targets WHERE name = ?",
        (target,),
    ).fetchone()
    if row is None:
        return None
    cursors = {
        int(sid): int(ts)
        for sid, ts in conn.execute(
            "SELECT series_id, ts FROM remote_write_cursor WHERE target = ?", (target,)
        )
    }
    return TargetState(int(row[0]), cursors, int(row[1]), int(row[2]))


def dropped_counts(conn: sqlite3.Connection, target: str) -> tuple[int, int]:
    """(dropped, dropped_reported) of a target; (0, 0) when it is not there."""
    row = conn.execute(
        "SELECT dropped, dropped_reported FROM remote_write_targets WHERE name = ?", (target,)
    ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def series_after(conn: sqlite3.Connection, after_id: int) -> list[tuple[int, str, str]]:
    """Series with an id above ``after_id``: (id, name, labels JSON). Ids only grow."""
    return [
        (int(i), str(n), str(lab))
        for i, n, lab in conn.execute(
            "SELECT id, name, labels FROM series WHERE id > ? ORDER BY id", (after_id,)
        )
    ]


@dataclass(slots=True)
class Chunk:
    """Unsent samples of one series, in time order."""

    series_id: int
    ts: list[int]
    values: list[float]


@dataclass(slots=True)
class Batch:
    """What one read found to send."""

    chunks: list[Chunk]
    samples: int
    full: bool
    """The read stopped at its limit: more is waiting."""


def read_batch(
    conn: sqlite3.Connection,
    series_ids: list[int],
    cursors: dict[int, int],
    start_ms: int,
    max_samples: int,
) -> Batch:
    """Up to ``max_samples`` unsent samples: each series' samples after its cursor (after
    ``start_ms`` for a series without one), series after series, in one read transaction."""
    chunks: list[Chunk] = []
    room = max_samples
    conn.execute("BEGIN")
    try:
        for sid in series_ids:
            ts, values = _unsent(conn, sid, cursors.get(sid, start_ms), room)
            if ts:
                chunks.append(Chunk(sid, ts, values))
                room -= len(ts)
                if room <= 0:
                    break
    finally:
        conn.execute("COMMIT")
    return Batch(chunks, max_samples - room, room <= 0)


def _unsent(
    conn: sqlite3.Connection, sid: int, after: int, room: int
) -> tuple[list[int], list[float]]:
    """Up to ``room`` samples of one series with a time after ``after``."""
    out_ts: list[int] = []
    out_vals: list[float] = []
    # Blocks never overlap and are ordered by start: the one holding `after` starts at the
    # latest start <= after, so older blocks are never looked at. Only the blocks' bounds are
    # read here; a blob is fetched when its samples are wanted.
    blocks = conn.execute(
        "SELECT id, end_ts FROM sample_blocks WHERE series_id = ? AND start_ts >= "
        "coalesce((SELECT max(start_ts) FROM sample_blocks WHERE series_id = ? "
        "AND start_ts <= ?), ?) ORDER BY start_ts",
        (sid, sid, after, after),
    ).fetchall()
    for block_id, end in blocks:
        if end <= after:
            continue
        (blob,) = conn.execute(
            "SELECT data FROM sample_blocks WHERE id = ?", (block_id,)
        ).fetchone()
        ts, vals = decode_lists(blob)
        first = bisect.bisect_right(ts, after)
        take = min(len(ts) - first, room - len(out_ts))
        out_ts.extend(ts[first : first + take])
        out_vals.extend(vals[first : first + take])
        if len(out_ts) >= room:
            return out_ts, out_vals
    head_after = out_ts[-1] if out_ts else after
    for t, v in conn.execute(
        "SELECT ts, value FROM samples_head WHERE series_id = ? AND ts > ? ORDER BY ts LIMIT ?",
        (sid, head_after, room - len(out_ts)),
    ):
        out_ts.append(int(t))
        out_vals.append(float(v))
    return out_ts, out_vals
