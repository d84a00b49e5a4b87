"""Retention: delete what is older than each tier's horizon, in small steps.

Every step is its own short ``BEGIN IMMEDIATE ... COMMIT`` that deletes a bounded number of
rows of one series (at most :data:`BLOCK_CHUNK` blocks or :data:`ROW_CHUNK` rows: about a
millisecond of write lock; see bench/RESULTS.md), so the writer's batches never wait long and
readers, in WAL mode, never wait at all. The functions run on the writer's connection
(``Writer.run_task`` / ``Writer.run_steps``); the ``*_steps`` generators yield after each
committed step so the writer can interleave its own commits.

Raw samples: whole blocks older than the cutoff go; the one block straddling the cutoff is
re-encoded without its old samples; old head rows go. Rollups: rows whose bucket starts
before the cutoff go. Events: only when an events horizon is configured, and then the chain
stays verifiable (see :func:`purge_events_steps`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from storage.audit import canonical, chain_hash
from storage.codec import decode
from storage.forwardcursor import retention_targets, skip_purged
from storage.samples import write_blocks

BLOCK_CHUNK = 64
"""Blocks deleted per step (64 x 1024 samples)."""
ROW_CHUNK = 5000
"""Rows (head samples, rollups, probe runs, events) deleted per step."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of data is kept, in milliseconds; ``events_ms=None`` keeps events."""

    raw_ms: int
    rollup_1m_ms: int
    rollup_1h_ms: int
    events_ms: int | None = None


@dataclass(slots=True)
class RetentionResult:
    """What one pass deleted, per table, and how long its longest step held the lock."""

    deleted: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    max_step_s: float = 0.0
    max_step_s_by: dict[str, float] = field(default_factory=dict)
    """The longest step per kind of work (``sample_blocks``, ``samples_1m``, ...)."""

    def add(self, table: str, n: int) -> None:
        """Count ``n`` rows deleted from ``table``."""
        self.deleted[table] = self.deleted.get(table, 0) + n


class _Step:
    """Times one short write transaction (up to the end of its COMMIT, which includes an
    automatic WAL checkpoint when one falls due: that runs after the lock is released)."""

    def __init__(self, conn: sqlite3.Connection, result: RetentionResult | None, kind: str) -> None:
        self.conn = conn
        self.result = result
        self.kind = kind
        self.t0 = 0.0

    def __enter__(self) -> _Step:
        self.conn.execute("BEGIN IMMEDIATE")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        if self.result is not None:
            took = time.perf_counter() - self.t0
            r = self.result
            r.steps += 1
            r.max_step_s = max(r.max_step_s, took)
            r.max_step_s_by[self.kind] = max(r.max_step_s_by.get(self.kind, 0.0), took)


def _series_ids(conn: sqlite3.Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute("SELECT id FROM series ORDER BY id")]


def purge_raw_steps(
    conn: sqlite3.Connection,
    cutoff_ms: int,
    result: RetentionResult | None = None,
    *,
    chunk: int = BLOCK_CHUNK,
    row_chunk: int = ROW_CHUNK,
) -> Iterator[None]:
    """Delete raw samples with ``ts < cutoff_ms``; yields after each committed step.

    Samples a remote_write target has not sent yet are counted as dropped first, and its
    cursor moved past them (:func:`storage.forwardcursor.skip_purged`)."""
    res = result if result is not None else RetentionResult()
    forwarding = retention_targets(conn)
    for sid in _series_ids(conn):
        if forwarding and (
            _any(conn, "sample_blocks", "start_ts", sid, cutoff_ms)
            or _any(conn, "samples_head", "ts", sid, cutoff_ms)
        ):
            with _Step(conn, res, "remote_write_cursor"):
                dropped = skip_purged(conn, forwarding, sid, cutoff_ms)
            if dropped:
                res.add("remote_write_dropped", dropped)
        if _any(conn, "sample_blocks", "start_ts", sid, cutoff_ms):
            while True:
                with _Step(conn, res, "sample_blocks"):
                    counts = conn.execute(
                        "DELETE FROM sample_blocks WHERE id IN (SELECT id FROM sample_blocks "
                        "WHERE series_id = ? AND start_ts < ? AND end_ts < ? "
                        "ORDER BY start_ts LIMIT ?) RETURNING n",
                        (sid, cutoff_ms, cutoff_ms, chunk),
                    ).fetchall()
                    gone = len(counts)
                if gone:
                    res.add("sample_blocks", gone)
                    res.add("samples", sum(int(c[0]) for c in counts))
                    yield None
                if gone < chunk:
                    break
            with _Step(conn, res, "trim_block"):
                trimmed = _trim_block(conn, sid, cutoff_ms)
            if trimmed:
                res.add("samples", trimmed)
                yield None
        if not _any(conn, "samples_head", "ts", sid, cutoff_ms):
            continue
        while True:
            with _Step(conn, res, "samples_head"):
                cur = conn.execute(
                    "DELETE FROM samples_head WHERE series_id = ? AND ts IN "
                    "(SELECT ts FROM samples_head WHERE series_id = ? AND ts < ? "
                    "ORDER BY ts LIMIT ?)",
                    (sid, sid, cutoff_ms, row_chunk),
                )
                gone = cur.rowcount
            if gone:
                res.add("samples", gone)
                yield None
            if gone < row_chunk:
                break


def _any(conn: sqlite3.Connection, table: str, column: str, sid: int, cutoff_ms: int) -> bool:
    """Whether a series has anything before the cutoff: an index probe outside any
    transaction, so a steady-state pass skips the series with nothing due at no write cost."""
    sql = f"SELECT 1 FROM {table} WHERE series_id = ? AND {column} < ? LIMIT 1"  # noqa: S608
    return conn.execute(sql, (sid, cutoff_ms)).fetchone() is not None


def _trim_block(conn: sqlite3.Connection, sid: int, cutoff_ms: int) -> int:
    """Re-encode the block straddling the cutoff without its old samples; return how many
    samples went."""
    row = conn.execute(
        "SELECT id, data FROM sample_blocks WHERE series_id = ? AND start_ts < ? "
        "AND end_ts >= ? ORDER BY start_ts DESC LIMIT 1",
        (sid, cutoff_ms, cutoff_ms),
    ).fetchone()
    if row is None:
        return 0
    block_id, blob = row
    ts, vals = decode(blob)
    keep = ts >= cutoff_ms
    conn.execute("DELETE FROM sample_blocks WHERE id = ?", (block_id,))
    write_blocks(conn, sid, ts[keep], vals[keep])
    return int(len(ts) - keep.sum())


def purge_rollup_steps(
    conn: sqlite3.Connection,
    table: str,
    cutoff_ms: int,
    result: RetentionResult | None = None,
    *,
    chunk: int = ROW_CHUNK,
) -> Iterator[None]:
    """Delete rollup rows (``samples_1m`` or ``samples_1h``) whose bucket starts before the
    cutoff; yields after each committed step."""
    if table not in ("samples_1m", "samples_1h"):
        raise ValueError(f"not a rollup table: {table}")
    res = result if result is not None else RetentionResult()
    sql = (
        f"DELETE FROM {table} WHERE series_id = ? AND ts IN "  # noqa: S608 - checked above
        f"(SELECT ts FROM {table} WHERE series_id = ? AND ts < ? ORDER BY ts LIMIT ?)"
    )
    for sid in _series_ids(conn):
        if not _any(conn, table, "ts", sid, cutoff_ms):
            continue
        while True:
            with _Step(conn, res, table):
                gone = conn.execute(sql, (sid, sid, cutoff_ms, chunk)).rowcount
            if gone:
                res.add(table, gone)
                yield None
            if gone < chunk:
                break


def purge_probe_runs_steps(
    conn: sqlite3.Connection,
    cutoff_ms: int,
    result: RetentionResult | None = None,
    *,
    chunk: int = ROW_CHUNK,
) -> Iterator[None]:
    """Delete probe runs older than the cutoff; yields after each committed step."""
    res = result if result is not None else RetentionResult()
    while True:
        with _Step(conn, res, "probe_runs"):
            gone = conn.execute(
                "DELETE FROM probe_runs WHERE id IN "
                "(SELECT id FROM probe_runs WHERE ts < ? ORDER BY id LIMIT ?)",
                (cutoff_ms, chunk),
            ).rowcount
        if gone:
            res.add("probe_runs", gone)
            yield None
        if gone < chunk:
            break


def purge_events_steps(
    conn: sqlite3.Connection,
    cutoff_ms: int,
    now_ms: int,
    result: RetentionResult | None = None,
    *,
    chunk: int = ROW_CHUNK,
) -> Iterator[None]:
    """Delete the oldest audit events (those before the first one at or after the cutoff)
    without breaking the chain.

    First an ``audit.pruned`` event is appended to the chain naming the last event to go
    (``through_seq``, ``through_hash``). Then each step deletes a run of the oldest events
    and records the last deleted one's seq and hash in ``audit_anchor`` in the same
    transaction, so :func:`storage.audit.verify_chain` can start from the anchor at any
    moment, and accepts it only while an ``audit.pruned`` event in the chain covers it.
    """
    res = result if result is not None else RetentionResult()
    first_kept = conn.execute("SELECT min(seq) FROM events WHERE ts >= ?", (cutoff_ms,))
    head = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if head is None:
        return
    kept_from = first_kept.fetchone()[0]
    through = int(head[0]) if kept_from is None else int(kept_from) - 1
    oldest = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
    if oldest is None or through < int(oldest):
        return
    (through_hash,) = conn.execute("SELECT hash FROM events WHERE seq = ?", (through,)).fetchone()
    with _Step(conn, res, "events"):
        seq, prev = int(head[0]) + 1, str(head[1])
        data = json.dumps(
            {
                "through_seq": through,
                "through_hash": through_hash,
                "events": through - int(oldest) + 1,
                "cutoff_ms": cutoff_ms,
            },
            sort_keys=True,
        )
        message = f"retention removes events {oldest}..{through}"
        h = chain_hash(prev, canonical(seq, now_ms, "audit.pruned", "agent", message, data))
        conn.execute(
            "INSERT INTO events (seq, ts, kind, subject, message, data, prev_hash, hash) "
            "VALUES (?, ?, 'audit.pruned', 'agent', ?, ?, ?, ?)",
            (seq, now_ms, message, data, prev, h),
        )
    yield None
    lo = int(oldest)
    while lo <= through:
        hi = min(through, lo + chunk - 1)
        with _Step(conn, res, "events"):
            ts, last_hash = conn.execute(
                "SELECT ts, hash FROM events WHERE seq = ?", (hi,)
            ).fetchone()
            gone = conn.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
            conn.execute(
                "INSERT OR REPLACE INTO audit_anchor (id, seq, hash, ts) VALUES (1, ?, ?, ?)",
                (hi, last_hash, ts),
            )
        res.add("events", gone)
        yield None
        lo = hi + 1


def retention_steps(
    conn: sqlite3.Connection,
    now_ms: int,
    policy: RetentionPolicy,
    result: RetentionResult | None = None,
) -> Iterator[None]:
    """One whole retention pass as small steps: raw samples and probe runs, both rollup
    tiers, then (if configured) events."""
    res = result if result is not None else RetentionResult()
    yield from purge_raw_steps(conn, now_ms - policy.raw_ms, res)
    yield from purge_probe_runs_steps(conn, now_ms - policy.raw_ms, res)
    yield from purge_rollup_steps(conn, "samples_1m", now_ms - policy.rollup_1m_ms, res)
    yield from purge_rollup_steps(conn, "samples_1h", now_ms - policy.rollup_1h_ms, res)
    if policy.events_ms is not None:
        yield from purge_events_steps(conn, now_ms - policy.events_ms, now_ms, res)


def run_retention(
    conn: sqlite3.Connection, now_ms: int, policy: RetentionPolicy
) -> RetentionResult:
    """Run a whole retention pass at once (tests, benchmarks, a stopped agent's database)."""
    result = RetentionResult()
    for _ in retention_steps(conn, now_ms, policy, result):
        pass
    return result


def purge_samples(conn: sqlite3.Connection, cutoff_ms: int, *, chunk: int = BLOCK_CHUNK) -> int:
    """Delete raw samples older than the cutoff at once; return how many samples went."""
    result = RetentionResult()
    for _ in purge_raw_steps(conn, cutoff_ms, result, chunk=chunk):
        pass
    return result.deleted.get("samples", 0)


def purge_probe_runs(conn: sqlite3.Connection, cutoff_ms: int) -> int:
    """Delete probe runs older than the cutoff at once; return how many went."""
    result = RetentionResult()
    for _ in purge_probe_runs_steps(conn, cutoff_ms, result):
        pass
    return result.deleted.get("probe_runs", 0)
