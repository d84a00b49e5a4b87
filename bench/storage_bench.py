"""Storage benchmark (issue 6): ingest rate, bytes per sample, range-query latency, retention.

Everything runs in this process against SQLite files in a temporary directory (``--dir`` to
choose one, ``--keep`` to keep it), through Vigil's own code: ``storage.writer.Writer`` (the one
writer thread), ``storage.queries`` and ``storage.retention``.

1. **Ingest.** ``--ingest-series`` series (500) x ``--ingest-seconds`` (3600) samples at 1 s
   of virtual time, a mix of value kinds (percentages with one decimal, byte counts, noisy
   floats such as rates and latencies). The samples are built first; then the main thread
   submits them tick by tick as fast as it can while a reader thread runs chart queries on its
   own connection the whole time (an hour of a random series at 300 points, 20 a second).
   Samples/s = samples / (first submit .. ``flush()`` returned). Writer ``batch_size``
   200,000 (``--batch-size``; the agent's default is 5,000 with a commit at least every
   second, which its ~1,000 samples/s never fill). CPU time of the whole process is reported
   too: on a shared machine it says more than the wall clock. Target: >= 100,000 samples/s.
2. **Bytes per sample.** ``--day-series`` series (20) x 24 h at 1 s written through the writer,
   then ``PRAGMA wal_checkpoint(TRUNCATE)``: bytes = ``page_count * page_size`` (every table
   and index: blocks, head, both rollup tiers, series, free pages) / raw samples. Per table
   from ``dbstat``. For comparison: the same samples as rows of the 0001 schema's ``samples``
   table (WITHOUT ROWID, integer timestamps and series ids), and the block tables alone at
   other page sizes. Target: <= 16 bytes per raw sample, index included.
3. **Range query.** On that database: a 24 h chart of one 1 s series at 300 points
   (``series_range(step=288 s)``, answered from the 1-minute rollups), every series 10 times,
   p50/p99/max; also the same chart computed from the raw blocks. Target: p99 <= 50 ms.
4. **Retention.** ``--retention-series`` series (500) with ``--retention-days`` (30) of history
   in every tier as the agent keeps it, plus one day retention has not yet removed (a day the
   pass was not run): raw 1 s samples for 3 days, 1-minute rollups for 31 days, 1-hour rollups
   for 31 days. One pass with the default policy (raw 2 d, 1 m 30 d, 1 h 2 y) runs on the
   writer thread in steps (``Writer.run_steps``) while a producer writes 500 samples every
   100 ms and waits for each commit: the pass's time, what it deleted, its longest step (a
   transaction up to the end of its COMMIT, an automatic WAL checkpoint included when one fell
   into it) and the producer's commit latency during the pass: the writer is the only writer,
   so that latency is what a long lock would cost. Then a steady-state pass 5 minutes later.
   Target: producer commit p99 <= 250 ms during a pass.

Run from the repo root: ``.venv/bin/python bench/storage_bench.py [--quick] [--json FILE]``.
``--quick`` shrinks every phase (for a smoke run; the numbers are not the recorded ones).
Exit code: 0 all targets met, 1 a target missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import BenchError, machine, percentiles

from storage import queries, samples
from storage.db import MIGRATIONS, connect, migrate, open_database
from storage.records import Labels, Sample, make_labels
from storage.retention import RetentionPolicy, RetentionResult, retention_steps
from storage.writer import Writer

T0 = 1_700_002_800_000  # an hour boundary
DAY = 86_400_000
TARGET_INGEST = 100_000.0
TARGET_BYTES = 16.0
TARGET_QUERY_MS = 50.0
TARGET_COMMIT_MS = 250.0
KINDS = ("percent", "bytes", "rate", "latency")


# --- data -------------------------------------------------------------------------------------


def series_values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of one series of a kind, shaped like what the collectors write."""
    if kind == "percent":  # psutil percentages: one decimal, a bounded random walk
        walk = np.cumsum(rng.normal(0, 2.0, n)) + rng.uniform(10, 90)
        return np.round(np.clip(np.abs(walk) % 200, 0, 100), 1)
    if kind == "bytes":  # memory in pages
        return (8e9 + np.cumsum(rng.integers(-64, 65, n)) * 4096).astype(np.float64)
    if kind == "rate":  # bytes/s over a jittery interval: full-precision floats
        return np.abs(rng.normal(2e5, 5e4, n)) * rng.uniform(0.999, 1.001, n)
    return np.abs(rng.normal(12.0, 3.0, n))  # latency ms


def tick_times(start: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Collection times 1 s apart with a few ms of scheduler jitter."""
    return start + np.arange(n, dtype=np.int64) * 1000 + rng.integers(0, 4, n)


def make_series(count: int, prefix: str) -> list[tuple[str, Labels, str]]:
    return [(f"{prefix}.{KINDS[i % 4]}", make_labels(i=i), KINDS[i % 4]) for i in range(count)]


# --- 1. ingest --------------------------------------------------------------------------------


class ChartReader(threading.Thread):
    """Runs chart queries on its own read-only connection until stopped."""

    def __init__(self, db: Path, series: list[tuple[str, Labels, str]], span: int) -> None:
        super().__init__(daemon=True)
        self.db, self.series, self.span = db, series, span
        self.latencies_ms: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = connect(self.db, readonly=True)
            rng = random.Random(1)
            while not self.stop.is_set():
                name, labels, _ = rng.choice(self.series)
                t = time.perf_counter()
                queries.series_range(
                    conn, name, labels, since_ms=T0, until_ms=T0 + self.span, step_ms=12_000
                )
                self.latencies_ms.append((time.perf_counter() - t) * 1000)
                time.sleep(0.05)  # 20 charts a second: a busy dashboard
            conn.close()
        except BaseException as exc:  # reported by the caller
            self.error = exc


def bench_ingest(work: Path, n_series: int, seconds: int, batch_size: int) -> dict[str, Any]:
    db = work / "ingest.db"
    rng = np.random.default_rng(11)
    series = make_series(n_series, "ingest")
    values = np.stack([series_values(kind, seconds, rng) for _, _, kind in series])
    times = tick_times(T0, seconds, rng).tolist()
    t = time.perf_counter()
    ticks: list[list[Sample]] = []
    for j, ts in enumerate(times):
        col = values[:, j].tolist()
        ticks.append(
            [Sample(name, labels, ts, col[i]) for i, (name, labels, _) in enumerate(series)]
        )
    build_s = time.perf_counter() - t
    total = n_series * seconds

    w = Writer(db, batch_size=batch_size, flush_interval_s=1.0, max_pending=10_000_000)
    w.start()
    w.submit(ticks[0])  # the series exist before the clock starts: the reader has something
    if not w.flush(60):
        raise BenchError(f"first flush failed: {w.last_error}")
    reader = ChartReader(db, series, seconds * 1000)
    reader.start()
    try:
        t = time.perf_counter()
        cpu = time.process_time()
        for batch in ticks[1:]:
            w.submit(batch)
        if not w.flush(600):
            raise BenchError(f"flush failed: {w.last_error}")
        elapsed = time.perf_counter() - t
        cpu_s = time.process_time() - cpu
    finally:
        reader.stop.set()
        reader.join(30)
        w.close()
    if reader.error is not None:
        raise BenchError(f"reader failed: {reader.error!r}")
    written = total - n_series
    conn = connect(db, readonly=True)
    try:
        stored = queries.count_all_samples(conn)
    finally:
        conn.close()
    if stored != total:
        raise BenchError(f"stored {stored} samples, expected {total}")
    return {
        "series": n_series,
        "seconds": seconds,
        "samples": written,
        "elapsed_s": round(elapsed, 3),
        "samples_per_s": round(written / elapsed),
        "cpu_s": round(cpu_s, 3),
        "samples_per_cpu_s": round(written / cpu_s),
        "batch_size": batch_size,
        "commits": w.stats.commits,
        "build_samples_s": round(build_s, 2),
        "reader_queries": percentiles(reader.latencies_ms, qs=(50, 99), digits=3),
        "target_samples_per_s": TARGET_INGEST,
        "ok": written / elapsed >= TARGET_INGEST,
    }


# --- 2. bytes per sample, 3. range query ------------------------------------------------------


def table_bytes(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        str(name): int(size)
        for name, size in conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        )
    }


def db_bytes(conn: sqlite3.Connection) -> tuple[int, int, int]:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages) * int(size), int(size), int(free) * int(size)


def write_day(db: Path, n_series: int) -> tuple[list[tuple[str, Labels, str]], dict[int, Any]]:
    rng = np.random.default_rng(22)
    series = make_series(n_series, "day")
    n = 86_400
    data: dict[int, Any] = {}
    w = Writer(db, batch_size=100_000, flush_interval_s=1.0, max_pending=10_000_000)
    w.start()
    try:
        times = tick_times(T0, n, rng)
        for i, (_, _, kind) in enumerate(series):
            data[i] = (times, series_values(kind, n, rng))
        ts_list = times.tolist()
        chunk = 3600
        for lo in range(0, n, chunk):
            cols = [data[i][1][lo : lo + chunk].tolist() for i in range(n_series)]
            w.submit(
                Sample(name, labels, ts_list[lo + j], cols[i][j])
                for j in range(min(chunk, n - lo))
                for i, (name, labels, _) in enumerate(series)
            )
        if not w.flush(600):
            raise BenchError(f"flush failed: {w.last_error}")
    finally:
        w.close()
    return series, data


def baseline_rows(work: Path, data: dict[int, Any]) -> float:
    """Bytes per sample of the same samples as rows of the 0001 schema (before this issue)."""
    db = work / "baseline.db"
    conn = connect(db)
    try:
        migrate(conn, MIGRATIONS[:1])
        conn.execute("BEGIN")
        for i, (times, vals) in data.items():
            conn.execute(
                "INSERT INTO series (id, name, labels) VALUES (?, ?, '{}')", (i + 1, str(i))
            )
            conn.executemany(
                "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?)",
                zip([i + 1] * len(times), times.tolist(), vals.tolist(), strict=True),
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        n = sum(len(t) for t, _ in data.values())
        return table_bytes(conn).get("samples", 0) / n
    finally:
        conn.close()


def blocks_at_page_size(work: Path, data: dict[int, Any], page_size: int) -> float:
    """Bytes per sample of the raw block table and its index alone at a page size."""
    db = work / f"blocks-{page_size}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size = {page_size}")
        migrate(conn)
        conn.execute("BEGIN")
        # Interleaved by time, as the writer seals them (every series fills at the same pace).
        per = 16 * samples.BLOCK_SAMPLES
        n = len(next(iter(data.values()))[0])
        for lo in range(0, n, per):
            for i, (times, vals) in data.items():
                samples.write_blocks(conn, i + 1, times[lo : lo + per], vals[lo : lo + per])
        conn.execute("COMMIT")
        tables = table_bytes(conn)
        used = tables.get("sample_blocks", 0) + tables.get("sample_blocks_key", 0)
        return used / sum(len(t) for t, _ in data.values())
    finally:
        conn.close()


def bench_day(work: Path, n_series: int, reps: int) -> dict[str, Any]:
    db = work / "day.db"
    t = time.perf_counter()
    series, data = write_day(db, n_series)
    write_s = time.perf_counter() - t
    n = n_series * 86_400
    conn = connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total, page_size, free = db_bytes(conn)
        tables = table_bytes(conn)
        stored = queries.count_all_samples(conn)
        if stored != n:
            raise BenchError(f"stored {stored} samples, expected {n}")
        per_kind: dict[str, float] = {}
        for kind in KINDS:
            blob, count = conn.execute(
                "SELECT sum(length(b.data)), sum(b.n) FROM sample_blocks b JOIN series s "
                "ON s.id = b.series_id WHERE s.name = ?",
                (f"day.{kind}",),
            ).fetchone()
            if count:
                per_kind[kind] = round(blob / count, 2)
        raw_tables = sum(
            tables.get(t, 0) for t in ("sample_blocks", "sample_blocks_key", "samples_head")
        )

        # 3. the 24 h chart at 300 points
        until = T0 + DAY - 1
        step = math.ceil(DAY / 300)
        tier_ms: list[float] = []
        raw_ms: list[float] = []
        points = 0
        for _ in range(reps):
            for name, labels, _kind in series:
                t = time.perf_counter()
                pts = queries.series_range(
                    conn, name, labels, since_ms=T0, until_ms=until, step_ms=step
                )
                tier_ms.append((time.perf_counter() - t) * 1000)
                points = len(pts)
                sid = queries.series_id(conn, name, labels)
                assert sid is not None
                t = time.perf_counter()
                samples.bucket(samples.fetch(conn, sid, T0, until, samples.RAW), T0, step)
                raw_ms.append((time.perf_counter() - t) * 1000)
    finally:
        conn.close()
    baseline = baseline_rows(work, data)
    sizes = {ps: round(blocks_at_page_size(work, data, ps), 3) for ps in (4096, 16384, 65536)}
    q = percentiles(tier_ms, qs=(50, 99), digits=3)
    return {
        "series": n_series,
        "samples": n,
        "write_s": round(write_s, 2),
        "write_samples_per_s": round(n / write_s),
        "bytes_total": total,
        "page_size": page_size,
        "free_bytes": free,
        "bytes_per_sample": round(total / n, 3),
        "raw_tables_bytes_per_sample": round(raw_tables / n, 3),
        "blob_bytes_per_sample_by_kind": per_kind,
        "tables_bytes": tables,
        "baseline_row_schema_bytes_per_sample": round(baseline, 3),
        "block_table_bytes_per_sample_by_page_size": sizes,
        "target_bytes_per_sample": TARGET_BYTES,
        "bytes_ok": total / n <= TARGET_BYTES,
        "query": {
            "range": "24 h of a 1 s series",
            "step_ms": step,
            "points": points,
            "rollup_ms": q,
            "raw_blocks_ms": percentiles(raw_ms, qs=(50, 99), digits=3),
            "target_p99_ms": TARGET_QUERY_MS,
            "ok": points == 300 and q.get("p99", 1e9) <= TARGET_QUERY_MS,
        },
    }


# --- 4. retention -----------------------------------------------------------------------------


def build_history(db: Path, n_series: int, days: int) -> dict[str, int]:
    """``days`` + 1 of 1m and 1h rollups and 3 days of 1 s raw blocks per series, directly."""
    rng = np.random.default_rng(33)
    now = T0 + (days + 1) * DAY
    conn = open_database(db)
    counts = {"sample_blocks": 0, "samples": 0, "samples_1m": 0, "samples_1h": 0}
    try:
        conn.execute("PRAGMA cache_size = -64000")
        series = make_series(n_series, "hist")
        for i, (name, labels, kind) in enumerate(series):
            conn.execute("BEGIN")
            sid = i + 1
            conn.execute(
                "INSERT INTO series (id, name, labels) VALUES (?, ?, ?)",
                (sid, name, json.dumps(dict(labels), separators=(",", ":"))),
            )
            minutes = (days + 1) * 1440
            m_ts = T0 + np.arange(minutes, dtype=np.int64) * 60_000
            base = series_values(kind, minutes, rng)
            spread = np.abs(base) * 0.05 + 1.0
            conn.executemany(
                "INSERT INTO samples_1m (series_id, ts, count, sum, min, max) "
                "VALUES (?, ?, 60, ?, ?, ?)",
                zip(
                    [sid] * minutes,
                    m_ts.tolist(),
                    (base * 60).tolist(),
                    (base - spread).tolist(),
                    (base + spread).tolist(),
                    strict=True,
                ),
            )
            hours = minutes // 60
            h = base.reshape(hours, 60)
            conn.executemany(
                "INSERT INTO samples_1h (series_id, ts, count, sum, min, max) "
                "VALUES (?, ?, 3600, ?, ?, ?)",
                zip(
                    [sid] * hours,
                    (T0 + np.arange(hours, dtype=np.int64) * 3_600_000).tolist(),
                    (h.sum(axis=1) * 60).tolist(),
                    (h.min(axis=1) - 1).tolist(),
                    (h.max(axis=1) + 1).tolist(),
                    strict=True,
                ),
            )
            raw_n = 3 * 86_400
            times = tick_times(now - 3 * DAY, raw_n, rng)
            vals = series_values(kind, raw_n, rng)
            samples.write_blocks(conn, sid, times, vals)
            conn.execute("COMMIT")
            counts["samples"] += raw_n
            counts["samples_1m"] += minutes
            counts["samples_1h"] += hours
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts["sample_blocks"] = conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0]
    finally:
        conn.close()
    counts["now_ms"] = now
    return counts


def retention_pass(db: Path, now: int, n_series: int) -> dict[str, Any]:
    """One default-policy pass on the writer thread while a producer writes and waits."""
    policy = RetentionPolicy(raw_ms=2 * DAY, rollup_1m_ms=30 * DAY, rollup_1h_ms=730 * DAY)
    w = Writer(db, batch_size=50_000, flush_interval_s=0.05)
    w.start()
    result = RetentionResult()
    done = threading.Event()
    labels = [make_labels(i=i) for i in range(n_series)]
    commit_ms: list[float] = []
    try:
        t0 = time.perf_counter()

        def steps(conn: sqlite3.Connection) -> Iterator[None]:
            return retention_steps(conn, now, policy, result)

        w.run_steps(steps, on_done=done.set)
        k = 0
        while not done.is_set():
            ts = now + k * 1000
            w.submit(Sample("load", lbl, ts, float(k % 100)) for lbl in labels)
            t = time.perf_counter()
            if not w.flush(120):
                raise BenchError(f"flush failed during retention: {w.last_error}")
            commit_ms.append((time.perf_counter() - t) * 1000)
            k += 1
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
    finally:
        w.close()
    return {
        "elapsed_s": round(elapsed, 3),
        "deleted": result.deleted,
        "steps": result.steps,
        "max_step_ms": round(result.max_step_s * 1000, 2),
        "max_step_ms_by": {k: round(v * 1000, 2) for k, v in result.max_step_s_by.items()},
        "producer_commit_ms": percentiles(commit_ms, qs=(50, 99), digits=3),
    }


def bench_retention(work: Path, n_series: int, days: int) -> dict[str, Any]:
    db = work / "history.db"
    t = time.perf_counter()
    built = build_history(db, n_series, days)
    build_s = time.perf_counter() - t
    size_before = db.stat().st_size
    now = built["now_ms"]
    first = retention_pass(db, now, n_series)
    steady = retention_pass(db, now + 300_000, n_series)
    return {
        "series": n_series,
        "days": days,
        "built": built,
        "build_s": round(build_s, 1),
        "db_bytes": size_before,
        "first_pass": first,
        "steady_pass_5min_later": steady,
        "target_commit_p99_ms": TARGET_COMMIT_MS,
        "ok": max(
            first["producer_commit_ms"].get("p99", 0), steady["producer_commit_ms"].get("p99", 0)
        )
        <= TARGET_COMMIT_MS,
    }


# --- report -----------------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['os']}, kernel {m['kernel']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}, numpy {m['numpy']}",
        f"run: {m['date_utc']}, git {m['git_commit']}, load at start {m['loadavg_at_start']}, "
        f"at end {r['loadavg_at_end']}",
    ]
    if "ingest" in r:
        i = r["ingest"]
        q = i["reader_queries"]
        lines += [
            "",
            f"ingest: {i['samples']:,} samples of {i['series']} series in {i['elapsed_s']} s = "
            f"{i['samples_per_s']:,}/s ({i['commits']} commits of up to {i['batch_size']:,}) "
            f"[target >= {TARGET_INGEST:,.0f}: {'ok' if i['ok'] else 'MISSED'}]",
            f"  CPU of the whole process (writer, producer, reader) {i['cpu_s']} s: "
            f"{i['samples_per_cpu_s']:,} samples per CPU-second",
            f"  concurrent reader: {q.get('n', 0)} chart queries, p50 {q.get('p50')} ms, "
            f"p99 {q.get('p99')} ms",
        ]
    if "day" in r:
        d = r["day"]
        q = d["query"]
        lines += [
            "",
            f"bytes per sample: {d['bytes_per_sample']} ({d['samples']:,} samples of "
            f"{d['series']} series x 24 h, {d['bytes_total'] / 2**20:.1f} MiB at page size "
            f"{d['page_size']}, {d['free_bytes']} free) [target <= {TARGET_BYTES}: "
            f"{'ok' if d['bytes_ok'] else 'MISSED'}]",
            f"  raw tables alone {d['raw_tables_bytes_per_sample']}; blob by kind "
            f"{d['blob_bytes_per_sample_by_kind']}",
            f"  tables: {d['tables_bytes']}",
            f"  before (0001 schema, one row per sample): "
            f"{d['baseline_row_schema_bytes_per_sample']}",
            f"  block table by page size: {d['block_table_bytes_per_sample_by_page_size']}",
            f"  written through the writer at {d['write_samples_per_s']:,} samples/s",
            f"range query: {q['range']}, {q['points']} points (step {q['step_ms']} ms): "
            f"p50 {q['rollup_ms']['p50']} ms, p99 {q['rollup_ms']['p99']} ms, max "
            f"{q['rollup_ms']['max']} ms [target p99 <= {TARGET_QUERY_MS}: "
            f"{'ok' if q['ok'] else 'MISSED'}]",
            f"  from raw blocks instead: p50 {q['raw_blocks_ms']['p50']} ms, "
            f"p99 {q['raw_blocks_ms']['p99']} ms",
        ]
    if "retention" in r:
        t = r["retention"]
        f, s = t["first_pass"], t["steady_pass_5min_later"]
        lines += [
            "",
            f"retention: {t['series']} series x {t['days']} days (+1 day due), "
            f"{t['db_bytes'] / 2**30:.2f} GiB, built in {t['build_s']} s",
            f"  first pass: {f['elapsed_s']} s, deleted {f['deleted']}, {f['steps']} steps, "
            f"longest step {f['max_step_ms']} ms (by kind {f['max_step_ms_by']})",
            f"  producer commits during it: {f['producer_commit_ms'].get('n')}, "
            f"p50 {f['producer_commit_ms'].get('p50')} ms, p99 "
            f"{f['producer_commit_ms'].get('p99')} ms, max {f['producer_commit_ms'].get('max')} ms",
            f"  steady pass 5 min later: {s['elapsed_s']} s, deleted {s['deleted']}, "
            f"longest step {s['max_step_ms']} ms; producer commits p99 "
            f"{s['producer_commit_ms'].get('p99')} ms "
            f"[target producer commit p99 <= {TARGET_COMMIT_MS} ms during a pass: "
            f"{'ok' if t['ok'] else 'MISSED'}]",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--ingest-series", type=int, default=500)
    p.add_argument("--ingest-seconds", type=int, default=3600)
    p.add_argument("--batch-size", type=int, default=200_000, help="the writer's batch_size")
    p.add_argument("--day-series", type=int, default=20)
    p.add_argument("--query-reps", type=int, default=10)
    p.add_argument("--retention-series", type=int, default=500)
    p.add_argument("--retention-days", type=int, default=30)
    p.add_argument(
        "--only",
        choices=("ingest", "day", "retention"),
        action="append",
        help="run only these phases (repeatable)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.ingest_series, args.ingest_seconds = 100, 600
        args.day_series, args.query_reps = 2, 3
        args.retention_series, args.retention_days = 10, 5
    phases = set(args.only or ("ingest", "day", "retention"))
    work = args.dir or Path(tempfile.mkdtemp(prefix="vigil-bench-storage-"))
    result: dict[str, Any] = {
        "machine": machine(sqlite=sqlite3.sqlite_version, numpy=np.__version__)
    }
    try:
        work.mkdir(parents=True, exist_ok=True)
        runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (
                "ingest",
                lambda: bench_ingest(
                    work, args.ingest_series, args.ingest_seconds, args.batch_size
                ),
            ),
            ("day", lambda: bench_day(work, args.day_series, args.query_reps)),
            (
                "retention",
                lambda: bench_retention(work, args.retention_series, args.retention_days),
            ),
        ]
        for name, fn in runs:
            if name in phases:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                result[name] = fn()
    except (BenchError, OSError, sqlite3.Error) as exc:
        print(f"bench/storage_bench.py: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    oks = [result[k]["ok"] for k in ("ingest", "retention") if k in result]
    if "day" in result:
        oks += [result["day"]["bytes_ok"], result["day"]["query"]["ok"]]
    return 0 if all(oks) else 1


if __name__ == "__main__":
    sys.exit(main())
