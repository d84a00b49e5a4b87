"""The writer's side of sample storage: appending samples as they arrive.

:class:`SampleStore` runs on the writer thread, inside the writer's transaction. For each
series it appends new samples to ``samples_head`` (or, once a block's worth is there, seals
head + new straight into blocks), merges the batch's count/sum/min/max into the 1-minute and
1-hour rollups, and handles samples that are not newer than the series' last one (a clock
step, a replay): those are merged into the head or into their block, and the rollup buckets
they touch are recomputed from the finer tier. Tables and reading are in
:mod:`storage.samples`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from storage.codec import decode_lists
from storage.records import Labels, Sample, labels_json
from storage.samples import (
    BLOCK_SAMPLES,
    RAW,
    RES_1H,
    RES_1M,
    TIER_1M,
    insert_block,
    oldest_ts,
    pack,
    raw_arrays,
    write_blocks,
)

MAX_SEALS_PER_COMMIT = 32
"""Bounds the extra work one commit does when many series fill their heads at once."""
_NO_TS = -(2**63)

_INSERT_HEAD = "INSERT INTO samples_head (series_id, ts, value) VALUES (?, ?, ?)"
_UPSERT = (
    "INSERT INTO {table} (series_id, ts, count, sum, min, max) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (series_id, ts) DO UPDATE SET count = count + excluded.count, "
    "sum = sum + excluded.sum, min = min(min, excluded.min), max = max(max, excluded.max)"
)
_UPSERT_1M = _UPSERT.format(table="samples_1m")
_UPSERT_1H = _UPSERT.format(table="samples_1h")

Point = tuple[int, float]
Partial = tuple[int, int, float, float, float]
"""(bucket start, count, sum, min, max) of some points of one series."""


def partials(ts_ms: list[int], values: list[float], resolution_ms: int) -> list[Partial]:
    """Aggregate time-ordered points per ``resolution_ms`` bucket."""
    # One bisect and three C-level reductions per bucket, rather than Python work per point.
    out: list[Partial] = []
    n = len(ts_ms)
    i = 0
    while i < n:
        b = ts_ms[i] - ts_ms[i] % resolution_ms
        j = bisect.bisect_left(ts_ms, b + resolution_ms, i)
        chunk = values[i:j]
        out.append((b, j - i, sum(chunk), min(chunk), max(chunk)))
        i = j
    return out


def fold(parts: list[Partial], resolution_ms: int) -> list[Partial]:
    """Merge time-ordered partials into coarser buckets."""
    out: list[Partial] = []
    for start, c, s, lo, hi in parts:
        b = start - start % resolution_ms
        if out and out[-1][0] == b:
            _, c0, s0, lo0, hi0 = out[-1]
            out[-1] = (b, c0 + c, s0 + s, min(lo0, lo), max(hi0, hi))
        else:
            out.append((b, c, s, lo, hi))
    return out


@dataclass(slots=True)
class _Tail:
    """What the writer remembers of a series between commits.

    ``last_ts`` is an upper bound of the newest raw timestamp stored (retention only deletes
    old data), so a sample newer than it can be appended without looking; anything else takes
    the careful path, which reads the database. ``head_count`` only decides when to seal.
    """

    last_ts: int
    head_count: int
    block_samples: int
    """How many samples the next block of this series takes (fewer when they compress badly)."""


@dataclass(slots=True)
class _Fix:
    """Rollup buckets of one series to recompute exactly after its out-of-order samples."""

    series_id: int
    minutes: set[int]
    hours: set[int]


@dataclass(slots=True)
class StagedSamples:
    """What one :meth:`SampleStore.write` did inside the open transaction, applied to the
    store's memory only if it commits."""

    written: int
    rejected: int
    new_ids: dict[tuple[str, Labels], int]
    tails: dict[int, _Tail]


class SampleStore:
    """The writer's side of sample storage: series ids, heads, rollups and sealing."""

    def __init__(self, block_samples: int = BLOCK_SAMPLES) -> None:
        self.block_samples = block_samples
        self._ids: dict[tuple[str, Labels], int] = {}
        self._tails: dict[int, _Tail] = {}

    def applied(self, staged: StagedSamples) -> None:
        """The transaction holding ``staged`` committed: remember its ids and tails."""
        self._ids.update(staged.new_ids)
        self._tails.update(staged.tails)

    def write(self, conn: sqlite3.Connection, samples: Iterable[Sample]) -> StagedSamples:
        """Write samples inside the caller's open transaction.

        Non-finite values (NaN, inf) are rejected: they have no meaningful rollup. A sample
        whose series and time are already stored replaces the stored one.
        """
        groups: dict[tuple[str, Labels], list[Sample]] = {}
        for rec in samples:
            key = (rec.name, rec.labels)
            group = groups.get(key)
            if group is None:
                groups[key] = [rec]
            else:
                group.append(rec)
        ids = self._ids
        new_ids: dict[tuple[str, Labels], int] = {}
        columns: list[tuple[int, list[int], list[float]]] = []
        rejected = 0
        for key, group in groups.items():
            tss = [r.ts_ms for r in group]
            vals = [r.value for r in group]
            if not math.isfinite(sum(vals)):  # a NaN or inf somewhere (or a huge sum)
                keep = [i for i, v in enumerate(vals) if math.isfinite(v)]
                rejected += len(vals) - len(keep)
                if not keep:
                    continue
                tss, vals = [tss[i] for i in keep], [vals[i] for i in keep]
            sid = ids.get(key) or new_ids.get(key)
            if sid is None:
                sid = new_ids[key] = _series_id(conn, key[0], key[1])
            columns.append((sid, tss, vals))
        columns.sort(key=operator.itemgetter(0))  # key order: neighbouring B-tree pages

        tails: dict[int, _Tail] = {}
        head_rows: list[tuple[int, int, float]] = []
        m_rows: list[tuple[int, int, int, float, float, float]] = []
        h_rows: list[tuple[int, int, int, float, float, float]] = []
        fixes: list[_Fix] = []
        written = 0
        seals = 0
        for sid, given_ts, given_vals in columns:
            tss, vals = given_ts, given_vals
            if len(tss) > 1 and not all(map(operator.lt, tss, tss[1:])):
                last_wins = dict(zip(tss, vals, strict=True))
                tss = sorted(last_wins)
                vals = [last_wins[t] for t in tss]
            tail = self._tail(conn, sid)
            tail = tails[sid] = _Tail(tail.last_ts, tail.head_count, tail.block_samples)
            written += len(tss)
            exact_m: set[int] = set()
            exact_h: set[int] = set()
            new_ts, new_vals = tss, vals
            if tss[0] <= tail.last_ts:
                split = bisect.bisect_right(tss, tail.last_ts)
                old = list(zip(tss[:split], vals[:split], strict=True))
                exact_m, exact_h = self._write_old(conn, sid, old, tail)
                if exact_m or exact_h:
                    fixes.append(_Fix(sid, exact_m, exact_h))
                new_ts, new_vals = tss[split:], vals[split:]
            if new_ts:
                if (
                    tail.head_count + len(new_ts) >= tail.block_samples
                    and seals < MAX_SEALS_PER_COMMIT
                ):
                    # Full blocks straight from head + new: the new samples that go into a
                    # block are never inserted as rows and deleted again.
                    tail.head_count, tail.block_samples = _append_sealing(
                        conn, sid, new_ts, new_vals, tail.block_samples, self.block_samples
                    )
                    seals += 1
                else:
                    head_rows.extend(zip(itertools.repeat(sid), new_ts, new_vals))
                    tail.head_count += len(new_ts)
                tail.last_ts = new_ts[-1]
            mp = partials(tss, vals, RES_1M)
            hp = fold(mp, RES_1H)
            m_rows.extend([(sid, *p) for p in mp if p[0] not in exact_m])
            h_rows.extend([(sid, *p) for p in hp if p[0] not in exact_h])
        if head_rows:
            conn.executemany(_INSERT_HEAD, head_rows)
        if m_rows:
            conn.executemany(_UPSERT_1M, m_rows)
        if h_rows:
            conn.executemany(_UPSERT_1H, h_rows)
        for fix in fixes:
            _recompute(conn, fix)
        return StagedSamples(written, rejected, new_ids, tails)

    def _tail(self, conn: sqlite3.Connection, sid: int) -> _Tail:
        tail = self._tails.get(sid)
        if tail is None:
            count, head_max = conn.execute(
                "SELECT count(*), max(ts) FROM samples_head WHERE series_id = ?", (sid,)
            ).fetchone()
            last = conn.execute(
                "SELECT end_ts FROM sample_blocks WHERE series_id = ? "
                "ORDER BY start_ts DESC LIMIT 1",
                (sid,),
            ).fetchone()
            candidates = [t for t in (head_max, last[0] if last else None) if t is not None]
            tail = _Tail(max(candidates, default=_NO_TS), int(count), self.block_samples)
        return tail

    def _write_old(
        self, conn: sqlite3.Connection, sid: int, old: list[Point], tail: _Tail
    ) -> tuple[set[int], set[int]]:
        """Store samples not newer than the series' last one (a clock step, a replay).

        Returns the minutes and hours whose rollups must be recomputed from finer data: those
        the finer tier still fully covers. Elsewhere the sample was counted incrementally.
        """
        raw_from = oldest_ts(conn, RAW, sid)
        m_from = oldest_ts(conn, TIER_1M, sid)
        last_block = conn.execute(
            "SELECT end_ts FROM sample_blocks WHERE series_id = ? ORDER BY start_ts DESC LIMIT 1",
            (sid,),
        ).fetchone()
        block_end = None if last_block is None else int(last_block[0])
        into_blocks: dict[int, list[Point]] = {}
        for ts, v in old:
            if block_end is None or ts > block_end:
                existed = conn.execute(
                    "SELECT 1 FROM samples_head WHERE series_id = ? AND ts = ?", (sid, ts)
                ).fetchone()
                conn.execute(
                    "INSERT OR REPLACE INTO samples_head (series_id, ts, value) VALUES (?, ?, ?)",
                    (sid, ts, v),
                )
                if existed is None:
                    tail.head_count += 1
                continue
            row = (
                conn.execute(
                    "SELECT start_ts FROM sample_blocks WHERE series_id = ? AND start_ts <= ? "
                    "ORDER BY start_ts DESC LIMIT 1",
                    (sid, ts),
                ).fetchone()
                or conn.execute(
                    "SELECT start_ts FROM sample_blocks WHERE series_id = ? "
                    "ORDER BY start_ts LIMIT 1",
                    (sid,),
                ).fetchone()
            )
            into_blocks.setdefault(int(row[0]), []).append((ts, v))
        for start, pts in into_blocks.items():
            _merge_into_block(conn, sid, start, pts)
        minutes = {ts - ts % RES_1M for ts, _ in old}
        hours = {m - m % RES_1H for m in minutes}
        exact_m = {m for m in minutes if raw_from is not None and raw_from <= m}
        exact_h = {h for h in hours if m_from is not None and m_from <= h}
        return exact_m, exact_h


def _append_sealing(
    conn: sqlite3.Connection,
    sid: int,
    new_ts: list[int],
    new_vals: list[float],
    guess: int,
    most: int,
) -> tuple[int, int]:
    """Append new samples (all newer than the head) by sealing full blocks of head + new and
    keeping the rest in the head. Returns how many head rows remain and the next block size."""
    head = conn.execute(
        "SELECT ts, value FROM samples_head WHERE series_id = ? ORDER BY ts", (sid,)
    ).fetchall()
    h = len(head)
    n = h + len(new_ts)
    ts = [r[0] for r in head]
    ts += new_ts
    vals = [r[1] for r in head]
    vals += new_vals
    blocks, guess = pack(ts, vals, guess, most=most, keep_tail=True)
    for lo, hi, blob in blocks:
        insert_block(conn, sid, ts[lo], ts[hi - 1], hi - lo, blob)
    sealed = blocks[-1][1] if blocks else 0
    if h and sealed:
        conn.execute(
            "DELETE FROM samples_head WHERE series_id = ? AND ts <= ?",
            (sid, ts[min(sealed, h) - 1]),
        )
    rest = max(sealed, h)
    if rest < n:
        conn.executemany(
            _INSERT_HEAD,
            zip(itertools.repeat(sid), ts[rest:], vals[rest:]),
        )
    return n - sealed, guess


def _merge_into_block(conn: sqlite3.Connection, sid: int, start: int, pts: list[Point]) -> None:
    (blob,) = conn.execute(
        "SELECT data FROM sample_blocks WHERE series_id = ? AND start_ts = ?", (sid, start)
    ).fetchone()
    merged = dict(zip(*decode_lists(blob), strict=True))
    merged.update(pts)  # for equal times the new sample wins
    all_ts = sorted(merged)
    conn.execute("DELETE FROM sample_blocks WHERE series_id = ? AND start_ts = ?", (sid, start))
    write_blocks(conn, sid, all_ts, [merged[t] for t in all_ts])


def _recompute(conn: sqlite3.Connection, fix: _Fix) -> None:
    """Rebuild rollup rows exactly: minutes from raw samples, then hours from minutes."""
    sid = fix.series_id
    for m in sorted(fix.minutes):
        _, vals = raw_arrays(conn, sid, m, m + RES_1M - 1)
        if len(vals):
            conn.execute(
                "INSERT OR REPLACE INTO samples_1m (series_id, ts, count, sum, min, max) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (sid, m, len(vals), float(vals.sum()), float(vals.min()), float(vals.max())),
            )
    for h in sorted(fix.hours):
        conn.execute(
            "INSERT OR REPLACE INTO samples_1h (series_id, ts, count, sum, min, max) "
            "SELECT series_id, ?, sum(count), sum(sum), min(min), max(max) FROM samples_1m "
            "WHERE series_id = ? AND ts BETWEEN ? AND ? GROUP BY series_id",
            (h, sid, h, h + RES_1H - 1),
        )


def _series_id(conn: sqlite3.Connection, name: str, labels: Labels) -> int:
    key = (name, labels_json(labels))
    conn.execute("INSERT OR IGNORE INTO series (name, labels) VALUES (?, ?)", key)
    row = conn.execute("SELECT id FROM series WHERE name = ? AND labels = ?", key).fetchone()
    return int(row[0])
