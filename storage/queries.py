"""Read queries: series ranges, latest values, probe runs, events.

Readers use their own connections (WAL lets them run beside the writer without blocking it).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from storage.records import Event, Labels, ProbeRun, SeriesPoint, labels_json, make_labels


def series_id(conn: sqlite3.Connection, name: str, labels: Labels = ()) -> int | None:
    """The id of one series, or None if it was never written."""
    row = conn.execute(
        "SELECT id FROM series WHERE name = ? AND labels = ?", (name, labels_json(labels))
    ).fetchone()
    return int(row[0]) if row else None


def series_range(
    conn: sqlite3.Connection,
    name: str,
    labels: Labels = (),
    *,
    since_ms: int,
    until_ms: int,
    step_ms: int | None = None,
) -> list[SeriesPoint]:
    """Points of one series in ``[since_ms, until_ms]``.

    Args:
        step_ms: when given, samples are grouped into buckets of this width starting at
            ``since_ms`` and each bucket reports avg, min, max and count; otherwise raw points.
    """
    sid = series_id(conn, name, labels)
    if sid is None:
        return []
    if not step_ms or step_ms <= 0:
        rows = conn.execute(
            "SELECT ts, value FROM samples WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts",
            (sid, since_ms, until_ms),
        )
        return [SeriesPoint(ts_ms=ts, avg=v, min=v, max=v) for ts, v in rows]
    rows = conn.execute(
        "SELECT ? + ((ts - ?) / ?) * ? AS bucket, avg(value), min(value), max(value), count(*) "
        "FROM samples WHERE series_id = ? AND ts BETWEEN ? AND ? "
        "GROUP BY bucket ORDER BY bucket",
        (since_ms, since_ms, step_ms, step_ms, sid, since_ms, until_ms),
    )
    return [
        SeriesPoint(ts_ms=int(b), avg=a, min=lo, max=hi, count=int(c)) for b, a, lo, hi, c in rows
    ]


def list_series(conn: sqlite3.Connection, prefix: str = "") -> list[tuple[str, Labels]]:
    """Every series (name, labels) whose name starts with ``prefix``."""
    rows = conn.execute(
        "SELECT name, labels FROM series WHERE name >= ? AND name < ? ORDER BY name, labels",
        (prefix, prefix + "\uffff"),
    )
    return [(n, make_labels(json.loads(lbl))) for n, lbl in rows]


def count_samples(conn: sqlite3.Connection, name: str, labels: Labels = ()) -> int:
    """How many raw samples one series holds."""
    sid = series_id(conn, name, labels)
    if sid is None:
        return 0
    return int(
        conn.execute("SELECT count(*) FROM samples WHERE series_id = ?", (sid,)).fetchone()[0]
    )


def recent_probe_runs(
    conn: sqlite3.Connection,
    model: str | None = None,
    *,
    limit: int = 50,
    since_ms: int | None = None,
) -> list[ProbeRun]:
    """Probe runs, newest first, optionally for one model and since a time."""
    sql = (
        "SELECT model, ts, ok, category, e2e_ms, ttft_ms, itl_ms, output_tokens, "
        "tokens_per_s, status, error, phases FROM probe_runs WHERE 1=1"
    )
    args: list[Any] = []
    if model is not None:
        sql += " AND model = ?"
        args.append(model)
    if since_ms is not None:
        sql += " AND ts >= ?"
        args.append(since_ms)
    sql += " ORDER BY ts DESC, id DESC LIMIT ?"
    args.append(limit)
    return [
        ProbeRun(
            model=m,
            ts_ms=ts,
            ok=bool(ok),
            category=cat,
            e2e_ms=e2e,
            ttft_ms=ttft,
            itl_ms=itl,
            output_tokens=tok,
            tokens_per_s=tps,
            status=st,
            error=err,
            phases_ms=json.loads(ph or "{}"),
        )
        for m, ts, ok, cat, e2e, ttft, itl, tok, tps, st, err, ph in conn.execute(sql, args)
    ]


def recent_events(
    conn: sqlite3.Connection,
    *,
    limit: int = 100,
    kind: str | None = None,
    subject: str | None = None,
    since_ms: int | None = None,
) -> list[Event]:
    """Audit events, newest first. ``kind`` matches as a prefix (``process.`` for all)."""
    sql = "SELECT seq, ts, kind, subject, message, data, prev_hash, hash FROM events WHERE 1=1"
    args: list[Any] = []
    if kind:
        sql += " AND kind >= ? AND kind < ?"
        args += [kind, kind + "\uffff"]
    if subject:
        sql += " AND subject = ?"
        args.append(subject)
    if since_ms is not None:
        sql += " AND ts >= ?"
        args.append(since_ms)
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(limit)
    return [
        Event(
            seq=seq,
            ts_ms=ts,
            kind=k,
            subject=s,
            message=msg,
            data=json.loads(data),
            prev_hash=ph,
            hash=h,
        )
        for seq, ts, k, s, msg, data, ph, h in conn.execute(sql, args)
    ]


LATENCY_COLUMNS = ("ttft_ms", "itl_ms", "e2e_ms")
ANSWERED = ("ok", "slow", "wrong_output")
"""Runs where the server answered: their latencies describe the service users got. Failed
connections and timeouts have no meaningful latency and are counted as errors instead."""


def probe_latencies(
    conn: sqlite3.Connection,
    model: str,
    since_ms: int,
) -> dict[str, list[float]]:
    """Answered runs' latency values per column since a time."""
    out: dict[str, list[float]] = {c: [] for c in LATENCY_COLUMNS}
    rows = conn.execute(
        "SELECT ttft_ms, itl_ms, e2e_ms FROM probe_runs WHERE model = ? AND ts >= ? "
        "AND category IN (?, ?, ?)",
        (model, since_ms, *ANSWERED),
    )
    for row in rows:
        for col, value in zip(LATENCY_COLUMNS, row, strict=True):
            if value is not None:
                out[col].append(float(value))
    return out


def probe_outcomes(conn: sqlite3.Connection, model: str, since_ms: int) -> dict[str, int]:
    """Run counts per category since a time."""
    rows = conn.execute(
        "SELECT category, count(*) FROM probe_runs WHERE model = ? AND ts >= ? GROUP BY category",
        (model, since_ms),
    )
    return {str(cat): int(n) for cat, n in rows}
