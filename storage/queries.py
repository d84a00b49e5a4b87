"""Read queries: series ranges, latest values, probe runs, events.

Readers use their own connections (WAL lets them run beside the writer without blocking it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from storage import samples
from storage.records import Event, Labels, ProbeRun, SeriesPoint, labels_json, make_labels


def series_id(conn: sqlite3.Connection, name: str, labels: Labels = ()) -> int | None:
    """The id of one series, or None if it was never written."""
    row = conn.execute(
        "SELECT id FROM series WHERE name = ? AND labels = ?", (name, labels_json(labels))
    ).fetchone()
    return int(row[0]) if row else None


def series_points(
    conn: sqlite3.Connection, name: str, labels: Labels, *, since_ms: int, until_ms: int
) -> list[tuple[int, float]]:
    """Raw (ts_ms, value) samples of one series in ``[since_ms, until_ms]``, without numpy."""
    sid = series_id(conn, name, labels)
    return [] if sid is None else samples.raw_points(conn, sid, since_ms, until_ms)


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
            A step of a minute or more is answered from the 1-minute rollups, an hour or more
            from the 1-hour rollups (each rollup counts in the bucket its start falls in), and
            where a tier was already purged the next coarser one fills in the older part.
    """
    sid = series_id(conn, name, labels)
    if sid is None:
        return []
    if not step_ms or step_ms <= 0:
        ts, vals = samples.raw_arrays(conn, sid, since_ms, until_ms)
        return [
            SeriesPoint(ts_ms=t, avg=v, min=v, max=v)
            for t, v in zip(ts.tolist(), vals.tolist(), strict=True)
        ]
    data = samples.fetch(conn, sid, since_ms, until_ms, samples.tier_for_step(step_ms))
    b = samples.bucket(data, since_ms, step_ms)
    return [
        SeriesPoint(ts_ms=t, avg=s / c, min=lo, max=hi, count=c)
        for t, c, s, lo, hi in zip(
            b.ts.tolist(),
            b.n.tolist(),
            b.sum.tolist(),
            b.min.tolist(),
            b.max.tolist(),
            strict=True,
        )
    ]


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """count, mean, min, max and first/last time of one series over a window."""

    count: int
    mean: float | None
    min: float | None
    max: float | None
    first_ms: int | None
    last_ms: int | None


def series_summary(
    conn: sqlite3.Connection, name: str, labels: Labels = (), *, since_ms: int, until_ms: int
) -> SeriesSummary:
    """Summarise one series over ``[since_ms, until_ms]``: raw samples where they are kept,
    the rollups for older parts (so a 7-day summary outlives the 2-day raw retention).

    ``first_ms`` is the oldest covered time: a raw sample's, or a rollup bucket's start.
    """
    sid = series_id(conn, name, labels)
    data = samples.fetch(conn, sid, since_ms, until_ms) if sid is not None else None
    if data is None or not len(data.ts):
        return SeriesSummary(0, None, None, None, None, None)
    count = int(data.n.sum())
    return SeriesSummary(
        count=count,
        mean=float(data.sum.sum()) / count,
        min=float(data.min.min()),
        max=float(data.max.max()),
        first_ms=int(data.ts[0]),
        last_ms=int(data.ts[-1]),
    )


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
    return samples.count_raw(conn, sid)


def count_all_samples(
    conn: sqlite3.Connection, since_ms: int | None = None, until_ms: int | None = None
) -> int:
    """How many raw samples the database holds, all series together, optionally only those
    with a time in ``[since_ms, until_ms]``."""
    if since_ms is None and until_ms is None:
        return samples.count_all_raw(conn)
    return samples.count_raw_between(
        conn, since_ms if since_ms is not None else -(2**63), until_ms or 2**63 - 1
    )


def recent_probe_runs(
    conn: sqlite3.Connection,
    model: str | None = None,
    *,
    limit: int = 50,
    since_ms: int | None = None,
    categories: Collection[str] = (),
) -> list[ProbeRun]:
    """Probe runs, newest first, optionally for one model, since a time, of some categories."""
    sql = (
        "SELECT model, ts, ok, category, e2e_ms, ttft_ms, itl_ms, output_tokens, "
        "tokens_per_s, status, error, phases, end_ts, planned FROM probe_runs WHERE 1=1"
    )
    args: list[Any] = []
    if model is not None:
        sql += " AND model = ?"
        args.append(model)
    if since_ms is not None:
        sql += " AND ts >= ?"
        args.append(since_ms)
    if categories:
        sql += f" AND category IN ({','.join('?' * len(categories))})"
        args.extend(categories)
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
            end_ms=end,
            planned=bool(planned),
        )
        for m, ts, ok, cat, e2e, ttft, itl, tok, tps, st, err, ph, end, planned in conn.execute(
            sql, args
        )
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
    """Unplanned run counts per category since a time (planned runs, made while the model's
    server was in a start or stop someone asked for, count against nothing)."""
    rows = conn.execute(
        "SELECT category, count(*) FROM probe_runs WHERE model = ? AND ts >= ? AND planned = 0 "
        "GROUP BY category",
        (model, since_ms),
    )
    return {str(cat): int(n) for cat, n in rows}
