"""Retention: delete raw samples older than the configured horizon, in small steps.

Each step deletes at most ``chunk`` rows of one series in its own short transaction, so the
write lock is never held long enough to stall the writer's batches or the readers.
"""

from __future__ import annotations

import sqlite3


def purge_samples(conn: sqlite3.Connection, cutoff_ms: int, *, chunk: int = 5000) -> int:
    """Delete samples with ``ts < cutoff_ms``; return how many rows went.

    Runs on the writer's connection (see ``Writer.run_task``).
    """
    total = 0
    series_ids = [row[0] for row in conn.execute("SELECT id FROM series")]
    for sid in series_ids:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            # The primary key is (series_id, ts): this range is an index seek, and the LIMIT
            # through a sub-select bounds how long the lock is held.
            cur = conn.execute(
                "DELETE FROM samples WHERE series_id = ? AND ts IN "
                "(SELECT ts FROM samples WHERE series_id = ? AND ts < ? ORDER BY ts LIMIT ?)",
                (sid, sid, cutoff_ms, chunk),
            )
            conn.execute("COMMIT")
            total += cur.rowcount
            if cur.rowcount < chunk:
                break
    return total


def purge_probe_runs(conn: sqlite3.Connection, cutoff_ms: int) -> int:
    """Delete probe runs older than the cutoff (one short transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    cur = conn.execute("DELETE FROM probe_runs WHERE ts < ?", (cutoff_ms,))
    conn.execute("COMMIT")
    return cur.rowcount
