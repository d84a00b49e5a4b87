"""Unit tests for sample tiers and compaction: the block codec, rollups kept by the writer,
tier choice in range queries, retention per tier, the audit anchor and export, and upgrading a
database made by an older schema."""

from __future__ import annotations

import io
import itertools
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main as vigil_main
from agent.config import ConfigError, load_config
from storage import codec, queries, samples
from storage.audit import (
    GENESIS,
    ExportError,
    canonical,
    chain_hash,
    export_chain,
    verify_chain,
    verify_export,
)
from storage.db import MIGRATIONS, connect, migrate, open_database
from storage.records import Event, Sample, make_labels
from storage.retention import (
    RetentionPolicy,
    RetentionResult,
    purge_events_steps,
    retention_steps,
    run_retention,
)
from storage.writer import Writer
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
H = 3_600_000
T0 = 1_700_002_800_000  # an hour boundary, so minute and hour buckets are easy to reason about
DAY = 86_400_000


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "vigil.db"


def ro(path: Path) -> sqlite3.Connection:
    return connect(path, readonly=True)


# --- codec ------------------------------------------------------------------------------------


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).view(np.int64)


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        (np.round(np.linspace(0, 100, 500), 1), codec.MODE_DECIMAL),  # percentages
        (np.arange(500, dtype=np.float64) * 4096 + 8e9, codec.MODE_DECIMAL),  # bytes
        (np.sin(np.arange(500)) * 1e-3, codec.MODE_XOR),  # full-precision floats
        (np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, 1e308] * 10), codec.MODE_XOR),
        (np.full(500, -0.0), codec.MODE_XOR),  # -0.0 has no integer form
    ],
)
def test_codec_round_trips_bit_for_bit(values: np.ndarray, mode: int) -> None:
    ts = T0 + np.arange(len(values), dtype=np.int64) * 1000 + (np.arange(len(values)) % 7)
    blob = codec.encode(ts, values)
    assert blob[1] == mode
    got_ts, got = codec.decode(blob)
    assert got_ts.tolist() == ts.tolist()
    assert bits(got).tolist() == bits(values).tolist()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 10**6), st.floats(allow_nan=True, allow_infinity=True)),
        min_size=1,
        max_size=300,
    ),
    st.integers(0, 2**45),
)
def test_codec_round_trips_anything(points: list[tuple[int, float]], start: int) -> None:
    ts = start + np.cumsum([p[0] for p in points]).astype(np.int64)
    values = np.array([p[1] for p in points], dtype=np.float64)
    got_ts, got = codec.decode(codec.encode(ts, values))
    assert got_ts.tolist() == ts.tolist()
    assert bits(got).tolist() == bits(values).tolist()


def test_codec_is_compact_for_a_steady_series() -> None:
    n = 1024
    ts = T0 + np.arange(n, dtype=np.int64) * 1000 + np.random.default_rng(1).integers(0, 5, n)
    pct = np.round(np.random.default_rng(2).uniform(0, 100, n), 1)
    assert len(codec.encode(ts, pct)) / n < 3.0  # vs 16 bytes of raw ts + value
    noise = np.random.default_rng(3).normal(100, 10, n)
    assert len(codec.encode(ts, noise)) / n < 9.0  # random mantissas do not compress


def test_codec_refuses_what_it_did_not_write() -> None:
    blob = codec.encode(np.array([T0], dtype=np.int64), np.array([1.0]))
    with pytest.raises(codec.CodecError):
        codec.decode(b"\x02" + blob[1:])
    with pytest.raises(codec.CodecError):
        codec.decode(blob[:-3])
    with pytest.raises(codec.CodecError):
        codec.decode(b"")
    with pytest.raises(ValueError):
        codec.encode(np.array([], dtype=np.int64), np.array([]))


# --- rollups kept by the writer ---------------------------------------------------------------


def expected_buckets(
    points: dict[int, float], res: int
) -> dict[int, tuple[int, float, float, float]]:
    out: dict[int, list[float]] = {}
    for ts, v in sorted(points.items()):
        out.setdefault(ts - ts % res, []).append(v)
    return {b: (len(vs), sum(vs), min(vs), max(vs)) for b, vs in out.items()}


def stored(conn: sqlite3.Connection, table: str) -> dict[int, tuple[int, float, float, float]]:
    rows = conn.execute(f"SELECT ts, count, sum, min, max FROM {table} ORDER BY ts")
    return {ts: (c, s, lo, hi) for ts, c, s, lo, hi in rows}


def assert_rollups_match(conn: sqlite3.Connection, truth: dict[int, float]) -> None:
    for table, res in (("samples_1m", samples.RES_1M), ("samples_1h", samples.RES_1H)):
        got, want = stored(conn, table), expected_buckets(truth, res)
        assert got.keys() == want.keys(), table
        for b, (c, s, lo, hi) in want.items():
            gc, gs, glo, ghi = got[b]
            assert (gc, glo, ghi) == (c, lo, hi), (table, b)
            assert gs == pytest.approx(s), (table, b)


def test_rollups_and_blocks_follow_every_write(db_path: Path) -> None:
    """In-order batches, a batch repeating times, clock steps back into the head and into
    sealed blocks, replaced values: raw, 1m and 1h always agree with a plain model."""
    rng = np.random.default_rng(7)
    truth: dict[int, float] = {}
    w = Writer(db_path, flush_interval_s=60, block_samples=50)
    w.start()
    try:

        def put(points: list[tuple[int, float]]) -> None:
            w.submit(Sample("s", (), ts, v) for ts, v in points)
            assert w.flush()
            truth.update(points)  # the last value for a time wins, as in the store

        for k in range(30):  # 30 batches of 40 samples ~ 2 s apart: 40 minutes, many blocks
            put([(T0 + (k * 40 + i) * 2000, float(rng.integers(0, 1000)) / 10) for i in range(40)])
        put([(T0 + 5, 1.0), (T0 + 5, 2.0), (T0 + 3, 3.0)])  # repeats inside one batch
        put([(T0 + 30 * 80 * 1000 - 2000, -5.0)])  # replaces the newest sample (head)
        put([(T0 + 2000 * 10, 999.0), (T0 + 2000 * 10 + 1, -1.0)])  # into the first block
        put([(T0 - 2 * H, 7.0)])  # before everything: an older hour appears
        put([(T0 + 2000 * 1195 + 500, 0.5)])  # between head rows
        for k in range(3):  # and in order again afterwards
            put([(T0 + 3 * H + (k * 10 + i) * 1000, float(i)) for i in range(10)])
        assert w.stats.rejected == 0
    finally:
        w.close()

    conn = ro(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0] >= 20
        ts, vals = samples.raw_arrays(conn, 1, 0, 2 * T0)
        assert dict(zip(ts.tolist(), vals.tolist(), strict=True)) == dict(sorted(truth.items()))
        assert queries.count_samples(conn, "s") == len(truth)
        assert_rollups_match(conn, truth)
        # Blocks never overlap, and head rows are newer than the last block.
        spans = conn.execute("SELECT start_ts, end_ts FROM sample_blocks ORDER BY start_ts")
        ends = [(a, b) for a, b in spans]
        assert all(a <= b for a, b in ends)
        assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(ends))
        head_min = conn.execute("SELECT min(ts) FROM samples_head").fetchone()[0]
        assert head_min is None or head_min > ends[-1][1]
    finally:
        conn.close()


def test_blocks_fit_a_page_whatever_the_values(db_path: Path) -> None:
    """Noisy floats (about 8.5 bytes a sample) get smaller blocks than percentages, so no
    block spills into an overflow page; every value still comes back bit for bit."""
    rng = np.random.default_rng(4)
    n = 6000
    noisy = rng.normal(1e5, 3e4, n)
    pct = np.round(rng.uniform(0, 100, n), 1)
    w = Writer(db_path, flush_interval_s=60)
    w.start()
    try:
        for lo in range(0, n, 700):
            hi = min(n, lo + 700)
            w.submit(Sample("noisy", (), T0 + i * 1000, float(noisy[i])) for i in range(lo, hi))
            w.submit(Sample("pct", (), T0 + i * 1000, float(pct[i])) for i in range(lo, hi))
            assert w.flush()
    finally:
        w.close()
    conn = ro(db_path)
    try:
        sizes = {
            name: conn.execute(
                "SELECT max(length(b.data)), max(b.n), count(*) FROM sample_blocks b "
                "JOIN series s ON s.id = b.series_id WHERE s.name = ?",
                (name,),
            ).fetchone()
            for name in ("noisy", "pct")
        }
        assert sizes["noisy"][0] <= samples.BLOCK_BYTES and sizes["noisy"][1] < 600
        assert sizes["pct"][1] == samples.BLOCK_SAMPLES
        assert sizes["noisy"][2] > 2 * sizes["pct"][2]
        for name, values in (("noisy", noisy), ("pct", pct)):
            sid = queries.series_id(conn, name)
            assert sid is not None
            ts, got = samples.raw_arrays(conn, sid, 0, 2 * T0)
            assert ts.tolist() == [T0 + i * 1000 for i in range(n)]
            assert bits(got).tolist() == bits(values).tolist()
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        assert ok == "ok"
        try:
            overflow = conn.execute(
                "SELECT count(*) FROM dbstat WHERE name = 'sample_blocks' AND pagetype = 'overflow'"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # an SQLite built without the dbstat table
            overflow = 0
        assert overflow == 0
    finally:
        conn.close()


def test_writer_rejects_non_finite_values(db_path: Path) -> None:
    w = Writer(db_path, flush_interval_s=60)
    w.start()
    try:
        w.submit(
            [
                Sample("s", (), T0, float("nan")),
                Sample("s", (), T0 + 1, float("inf")),
                Sample("s", (), T0 + 2, 1.5),
            ]
        )
        assert w.flush()
        assert (w.stats.rejected, w.stats.committed_samples, w.healthy) == (2, 1, True)
    finally:
        w.close()


def test_a_reopened_writer_continues_heads_and_rollups(db_path: Path) -> None:
    truth: dict[int, float] = {}
    for run in range(3):
        w = Writer(db_path, flush_interval_s=60, block_samples=16)
        w.start()
        try:
            points = [(T0 + (run * 25 + i) * 1000, float(run * 25 + i)) for i in range(25)]
            w.submit(Sample("s", (), ts, v) for ts, v in points)
            w.submit_one(Sample("s", (), T0 + run, 100.0 + run))  # an old time each run
            assert w.flush()
            truth.update(points)
            truth[T0 + run] = 100.0 + run
        finally:
            w.close()
    conn = ro(db_path)
    try:
        assert queries.count_samples(conn, "s") == len(truth)
        assert_rollups_match(conn, truth)
    finally:
        conn.close()


# --- range queries over tiers ----------------------------------------------------------------


def fill(path: Path, names: dict[str, int], *, every_ms: int = 1000, since: int = T0) -> None:
    """Write ``n`` samples per series name, value = index, ``every_ms`` apart."""
    w = Writer(path, batch_size=100_000, flush_interval_s=60)
    w.start()
    try:
        longest = max(names.values())
        for lo in range(0, longest, 20_000):
            w.submit(
                Sample(name, (), since + i * every_ms, float(i % 1000))
                for name, n in names.items()
                for i in range(lo, min(n, lo + 20_000))
            )
        assert w.flush(60)
    finally:
        w.close()


def tables_read(conn: sqlite3.Connection, fn) -> set[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        conn.set_trace_callback(None)
    return {t for s in seen for t in re.findall(r"FROM (\w+)", s)}


def test_range_query_picks_the_tier_from_the_step(db_path: Path) -> None:
    fill(db_path, {"s": 3 * 3600})  # 3 hours at 1 s
    conn = ro(db_path)
    try:
        until = T0 + 3 * H - 1
        q = lambda step: queries.series_range(  # noqa: E731
            conn, "s", since_ms=T0, until_ms=until, step_ms=step
        )
        assert "samples_1m" not in tables_read(conn, lambda: q(30_000))
        assert "sample_blocks" in tables_read(conn, lambda: q(30_000))
        used = tables_read(conn, lambda: q(300_000))
        assert "samples_1m" in used and "sample_blocks" not in used
        used = tables_read(conn, lambda: q(H))
        assert "samples_1h" in used and "samples_1m" not in used
        # Every tier gives the same answer where buckets line up with its resolution.
        raw = np.array([i % 1000 for i in range(3 * 3600)], dtype=float)
        for step in (30_000, 300_000, H):
            per = step // 1000
            got = [(p.ts_ms, p.count, p.min, p.max) for p in q(step)]
            want = [
                (
                    T0 + k * step,
                    per,
                    raw[k * per : (k + 1) * per].min(),
                    raw[k * per : (k + 1) * per].max(),
                )
                for k in range(3 * 3600 // per)
            ]
            assert got == want, step
            avgs = [p.avg for p in q(step)]
            assert avgs == pytest.approx(
                [raw[k * per : (k + 1) * per].mean() for k in range(len(want))]
            )
        # Raw points without a step, and 300 points for a chart of the whole span.
        assert len(queries.series_range(conn, "s", since_ms=T0, until_ms=until)) == 3 * 3600
        chart = queries.series_range(conn, "s", since_ms=T0, until_ms=until, step_ms=36_000)
        assert len(chart) == 300 and sum(p.count for p in chart) == 3 * 3600
        # Counting across blocks cut by the window (decoded) and whole ones (their n).
        assert queries.count_all_samples(conn, T0 + 500_500, T0 + 2_000_000) == 1500
        assert queries.count_all_samples(conn) == 3 * 3600
    finally:
        conn.close()


def test_purged_raw_is_filled_in_by_rollups(db_path: Path) -> None:
    fill(db_path, {"s": 3 * 3600})
    conn = open_database(db_path)
    try:
        # Raw kept for the last hour only, 1m for the last two: each older part comes from the
        # next coarser tier, so a long chart still starts where the data does.
        now = T0 + 3 * H
        run_retention(conn, now, RetentionPolicy(raw_ms=H, rollup_1m_ms=2 * H, rollup_1h_ms=DAY))
        assert queries.count_samples(conn, "s") == 3600
        pts = queries.series_range(conn, "s", since_ms=T0, until_ms=now - 1, step_ms=600_000)
        # The first hour is one 1-hour rollup, the second ten-minute buckets of 1-minute ones.
        assert [(p.ts_ms, p.count) for p in pts] == [(T0, 3600)] + [
            (T0 + k * 600_000, 600) for k in range(6, 18)
        ]
        summary = queries.series_summary(conn, "s", since_ms=T0, until_ms=now)
        assert (summary.count, summary.first_ms, summary.min, summary.max) == (3 * 3600, T0, 0, 999)
        # Raw points are only what raw still holds.
        raw = queries.series_range(conn, "s", since_ms=T0, until_ms=now)
        assert raw[0].ts_ms == T0 + 2 * H and len(raw) == 3600
    finally:
        conn.close()


def test_unknown_series_and_empty_ranges(db_path: Path) -> None:
    fill(db_path, {"s": 100})
    conn = ro(db_path)
    try:
        assert queries.series_range(conn, "nope", since_ms=0, until_ms=2 * T0, step_ms=H) == []
        assert queries.series_range(conn, "s", since_ms=0, until_ms=T0 - 1, step_ms=60_000) == []
        assert queries.series_summary(conn, "nope", since_ms=0, until_ms=2 * T0).count == 0
        assert queries.count_all_samples(conn) == 100
    finally:
        conn.close()


# --- retention per tier ----------------------------------------------------------------------


def test_retention_per_tier_in_small_steps(db_path: Path) -> None:
    # Two series, 2 days at 10 s: raw, 1m and 1h each lose their own part.
    fill(db_path, {"a": 17_280, "b": 17_280}, every_ms=10_000)
    conn = open_database(db_path)
    try:
        conn.executemany(
            "INSERT INTO probe_runs (ts, model, ok, category) VALUES (?, 'm', 1, 'ok')",
            [(T0 + i * 60_000,) for i in range(2 * 1440)],
        )
        now = T0 + 2 * DAY
        policy = RetentionPolicy(raw_ms=DAY // 2, rollup_1m_ms=DAY, rollup_1h_ms=DAY + 6 * H)
        result = RetentionResult()
        steps = 0
        for _ in retention_steps(conn, now, policy, result):
            steps += 1
            assert not conn.in_transaction  # every step committed on its own
        assert 1 <= steps <= result.steps
        assert result.max_step_s < 1.0
        cut = now - DAY // 2
        for name in ("a", "b"):
            raw = queries.series_range(conn, name, since_ms=0, until_ms=2 * now)
            assert raw[0].ts_ms >= cut and raw[0].ts_ms - cut < 10_000
        assert result.deleted["samples"] == 2 * (17_280 - 17_280 // 4)
        assert conn.execute("SELECT min(ts) FROM samples_1m").fetchone()[0] == now - DAY
        assert conn.execute("SELECT min(ts) FROM samples_1h").fetchone()[0] == now - DAY - 6 * H
        assert conn.execute("SELECT min(ts) FROM probe_runs").fetchone()[0] == cut
        assert run_retention(conn, now, policy).deleted == {}  # nothing more to do
    finally:
        conn.close()


def test_retention_steps_interleave_with_the_writers_batches(db_path: Path) -> None:
    fill(db_path, {f"s{i}": 5000 for i in range(10)}, every_ms=1000)
    w = Writer(db_path, flush_interval_s=0.01)
    w.start()
    try:
        order: list[str] = []
        policy = RetentionPolicy(raw_ms=1000, rollup_1m_ms=DAY, rollup_1h_ms=DAY)

        def steps(conn: sqlite3.Connection):  # type: ignore[no-untyped-def]
            for step in retention_steps(conn, T0 + 5000 * 1000, policy):
                order.append("step")
                time.sleep(0.01)  # a slow disk: the whole job takes a while
                yield step

        done: list[bool] = []
        w.run_steps(steps, budget_s=0.0, on_done=lambda: done.append(True))
        w.submit_one(Sample("late", (), T0, 1.0))
        w.run_task(lambda conn: order.append("commit-before-this"))
        assert w.flush()
        # The flush came back between two turns of the job, not after its end ...
        assert not done and w.stats.committed_samples == 1
        wait_for(lambda: done, timeout=20, what="the retention job to finish")
        # ... and with no time budget every step is its own turn: the writer's own work went
        # in between the steps, not after all of them.
        assert order.index("commit-before-this") < len(order) - 1
    finally:
        w.close()


# --- audit chain: retention anchor, export -----------------------------------------------------


def write_events(path: Path, n: int, *, start_ts: int = T0, every_ms: int = 1000) -> None:
    w = Writer(path, flush_interval_s=0.01)
    w.start()
    try:
        w.submit(
            Event(start_ts + i * every_ms, "test.e", "agent", f"event {i} — ü", {"i": i})
            for i in range(n)
        )
        assert w.flush()
    finally:
        w.close()


def prune_events(path: Path, cutoff: int, *, steps: int | None = None, chunk: int = 3) -> None:
    conn = connect(path)
    try:
        gen = purge_events_steps(conn, cutoff, T0 + DAY, chunk=chunk)
        for i, _ in enumerate(gen):
            if steps is not None and i + 1 >= steps:
                break
    finally:
        conn.close()


def test_event_retention_keeps_the_chain_verifiable(db_path: Path) -> None:
    write_events(db_path, 20)
    prune_events(db_path, T0 + 10_000)  # events 1..10 go
    conn = connect(db_path)
    try:
        report = verify_chain(conn)
        assert report.ok, report
        assert (report.anchor_seq, report.checked) == (10, 11)  # 11..20 and audit.pruned
        pruned = conn.execute("SELECT seq, data FROM events WHERE kind = 'audit.pruned'").fetchone()
        assert pruned[0] == 21 and json.loads(pruned[1])["through_seq"] == 10
        assert conn.execute("SELECT min(seq) FROM events").fetchone()[0] == 11
    finally:
        conn.close()
    # A second pass anchors further on (the first audit.pruned event is newer: it stays).
    prune_events(db_path, T0 + 30_000)
    write_events(db_path, 2, start_ts=T0 + 40_000)  # the writer continues the chain after it
    conn = connect(db_path)
    try:
        report = verify_chain(conn)
        assert (report.ok, report.anchor_seq, report.checked) == (True, 20, 4)
        assert report.head_seq == 24
    finally:
        conn.close()


def test_an_interrupted_prune_still_verifies(db_path: Path) -> None:
    write_events(db_path, 20)
    prune_events(db_path, T0 + 15_000, steps=3)  # the event and two chunks of 3, then "crash"
    conn = connect(db_path)
    try:
        assert conn.execute("SELECT min(seq) FROM events").fetchone()[0] == 7
        report = verify_chain(conn)
        assert report.ok and report.anchor_seq == 6
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("tamper", "broken", "why"),
    [
        ("DELETE FROM events WHERE seq = 11", 12, "missing events 11..11"),
        ("UPDATE audit_anchor SET hash = 'f' || substr(hash, 2)", 11, "prev_hash"),
        ("UPDATE audit_anchor SET seq = 9", 11, "missing events 10..10"),
        ("DELETE FROM events WHERE kind = 'audit.pruned'", 11, "no audit.pruned event"),
        ("DELETE FROM audit_anchor", 11, "missing events 1..10"),
    ],
)
def test_tampering_around_the_anchor_is_reported(
    db_path: Path, tamper: str, broken: int, why: str
) -> None:
    write_events(db_path, 20)
    prune_events(db_path, T0 + 10_000)
    conn = connect(db_path)
    try:
        conn.execute(tamper)
        report = verify_chain(conn)
        assert not report.ok
        assert report.broken_seq == broken
        assert why in (report.reason or "")
    finally:
        conn.close()


def test_deleting_the_oldest_events_without_retention_is_reported(db_path: Path) -> None:
    write_events(db_path, 5)
    conn = connect(db_path)
    try:
        conn.execute("DELETE FROM events WHERE seq <= 2")
        report = verify_chain(conn)
        assert not report.ok and report.broken_seq == 3
        assert report.reason == "missing events 1..2"
    finally:
        conn.close()


def exported(path: Path) -> str:
    conn = ro(path)
    try:
        buf = io.StringIO()
        export_chain(conn, buf, exported_ms=T0)
        return buf.getvalue()
    finally:
        conn.close()


def readme_snippet() -> str:
    text = (ROOT / "docs" / "storage.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- audit-verify-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/storage.md lost its offline verification snippet"
    return m.group(1)


def test_export_verifies_offline_and_with_the_readme_procedure(
    db_path: Path, tmp_path: Path
) -> None:
    write_events(db_path, 12)
    prune_events(db_path, T0 + 4_000)
    text = exported(db_path)
    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "vigil-audit/1" and header["anchor"]["seq"] == 4
    assert len(lines) == 1 + 9  # events 5..12 and audit.pruned
    report = verify_export(lines)
    assert report.ok and report.anchor_seq == 4 and report.checked == 9
    # The documented ten lines of plain Python agree, without Vigil installed.
    export = tmp_path / "chain.jsonl"
    export.write_text(text, encoding="utf-8")
    script = tmp_path / "verify.py"
    script.write_text(readme_snippet(), encoding="utf-8")
    ok = subprocess.run(
        [sys.executable, "-I", str(script), str(export)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert f"ok: 9 events after seq 4, head {report.head_hash}" in ok.stdout
    # An edited line fails both ways, at that event.
    edited = text.replace('"message": "event 7 — ü"', '"message": "event 7 — edited"')
    assert edited != text
    report = verify_export(edited.splitlines())
    assert not report.ok and report.broken_seq == 8
    export.write_text(edited, encoding="utf-8")
    bad = subprocess.run(
        [sys.executable, "-I", str(script), str(export)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "seq 8" in bad.stdout + bad.stderr
    # An export whose anchor was moved no longer chains.
    moved = lines[0].replace('"seq": 4', '"seq": 3')
    assert not verify_export([moved, *lines[1:]]).ok
    with pytest.raises(ExportError):
        verify_export(["{}"])
    with pytest.raises(ExportError):
        verify_export([lines[0], "{not json"])


def test_cli_audit_export_and_verify(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_events(db_path, 6)
    out = tmp_path / "audit.jsonl"
    assert vigil_main(["audit", "export", "--db", str(db_path), "-o", str(out)]) == 0
    assert "exported 6 events" in capsys.readouterr().err
    assert vigil_main(["audit", "verify", "--jsonl", str(out)]) == 0
    assert "audit chain ok: 6 events verified" in capsys.readouterr().out
    assert vigil_main(["audit", "verify", "--db", str(db_path)]) == 0
    said = capsys.readouterr().out
    assert "audit chain ok: 6 events verified" in said and "head: seq 6 sha256 " in said
    assert vigil_main(["audit", "export", "--db", str(db_path)]) == 0  # to stdout
    assert len(capsys.readouterr().out.splitlines()) == 7
    conn = connect(db_path)
    conn.execute("UPDATE events SET message = 'x' WHERE seq = 4")
    conn.close()
    assert vigil_main(["audit", "verify", "--db", str(db_path)]) == 1
    assert "BROKEN at event 4" in capsys.readouterr().out
    (tmp_path / "junk.jsonl").write_text("hello\n")
    assert vigil_main(["audit", "verify", "--jsonl", str(tmp_path / "junk.jsonl")]) == 2
    assert vigil_main(["audit", "verify", "--db", str(tmp_path / "none.db")]) == 2
    missing_dir = tmp_path / "no" / "x.jsonl"
    assert vigil_main(["audit", "export", "--db", str(db_path), "-o", str(missing_dir)]) == 2


# --- migrations from older schemas ------------------------------------------------------------


def test_upgrading_a_database_made_by_schema_0002(db_path: Path) -> None:
    old = MIGRATIONS[:2]  # what Vigil 0.1 created: one row per sample in `samples`
    db_path.parent.mkdir(parents=True)
    conn = connect(db_path)
    rng = np.random.default_rng(5)
    truth: dict[int, dict[int, float]] = {}
    try:
        assert migrate(conn, old) == ["0001_initial", "0002_incidents"]
        for sid, name in ((1, "cpu"), (2, "mem")):
            conn.execute(
                "INSERT INTO series (id, name, labels) VALUES (?, ?, ?)", (sid, name, '{"x":"1"}')
            )
            truth[sid] = {T0 + i * 1000: round(float(rng.uniform(0, 100)), 1) for i in range(2500)}
            conn.executemany(
                "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?)",
                [(sid, ts, v) for ts, v in truth[sid].items()],
            )
        h = chain_hash(GENESIS, canonical(1, T0, "agent.started", "agent", "old", "{}"))
        conn.execute(
            "INSERT INTO events (seq, ts, kind, subject, message, data, prev_hash, hash) "
            "VALUES (1, ?, 'agent.started', 'agent', 'old', '{}', ?, ?)",
            (T0, GENESIS, h),
        )
        # `vigil audit verify` reads an old database as it is (no anchor table yet).
        assert verify_chain(conn).ok
    finally:
        conn.close()
    w = Writer(db_path, flush_interval_s=0.01)  # the writer's open runs the new migrations
    w.start()
    try:
        w.submit_one(Event(T0, "agent.started", "agent", "upgraded"))
        w.submit_one(Sample("cpu", make_labels(x=1), T0 + 2500 * 1000, 1.5))
        assert w.flush()
    finally:
        w.close()
    conn = connect(db_path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == [n for n, _ in MIGRATIONS]
        assert "samples" not in {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        truth[1][T0 + 2500 * 1000] = 1.5
        for sid, name in ((1, "cpu"), (2, "mem")):
            pts = queries.series_range(conn, name, make_labels(x=1), since_ms=0, until_ms=2 * T0)
            assert {p.ts_ms: p.avg for p in pts} == truth[sid]
            rows = conn.execute(
                "SELECT ts, count, sum, min, max FROM samples_1m WHERE series_id = ?", (sid,)
            )
            got = {ts: (c, s, lo, hi) for ts, c, s, lo, hi in rows}
            want = expected_buckets(truth[sid], samples.RES_1M)
            assert got.keys() == want.keys()
            assert all(got[k][0] == want[k][0] and got[k][2:] == want[k][2:] for k in want)
        assert conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0] >= 4
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        report = verify_chain(conn)
        assert report.ok and report.checked == 2  # the old event, then the new one
    finally:
        conn.close()


# --- config -----------------------------------------------------------------------------------


def test_retention_config_per_tier(tmp_path: Path) -> None:
    cfg = tmp_path / "v.toml"

    def agent(body: str):  # type: ignore[no-untyped-def]
        cfg.write_text(f'[agent]\ndata_dir = "{tmp_path}"\n{body}\n')
        return load_config(cfg).agent

    a = agent("")
    assert (a.retention_s, a.retention_1m_s, a.retention_1h_s) == (
        2 * 86400,
        30 * 86400,
        730 * 86400,
    )
    assert a.retention_events_s is None
    a = agent(
        'retention = "3d"\nretention_1m = "90d"\nretention_1h = "5y"\nretention_events = "1y"'
    )
    assert (a.retention_s, a.retention_1m_s, a.retention_1h_s) == (
        3 * 86400,
        90 * 86400,
        5 * 365 * 86400,
    )
    assert a.retention_events_s == 365 * 86400
    # An unset rollup horizon stretches to a longer raw one instead of refusing it.
    a = agent('retention = "60d"')
    assert a.retention_1m_s == 60 * 86400 and a.retention_1h_s == 730 * 86400
    with pytest.raises(ConfigError, match=r"agent\.retention_1m.*at least as long as retention"):
        agent('retention = "7d"\nretention_1m = "1d"')
    with pytest.raises(ConfigError, match=r"agent\.retention_1h"):
        agent('retention_1m = "30d"\nretention_1h = "7d"')
    with pytest.raises(ConfigError, match=r"agent\.retention_events"):
        agent('retention_events = "0s"')


async def test_the_agents_retention_job_applies_each_horizon(tmp_path: Path) -> None:
    from agent.runtime.daemon import Agent
    from probes.base import now_ms

    cfg = tmp_path / "v.toml"
    cfg.write_text(
        f'[agent]\ndata_dir = "{tmp_path / "data"}"\nlisten = "127.0.0.1:0"\n'
        'retention = "1h"\nretention_1m = "2h"\nretention_1h = "1d"\nretention_events = "1h"\n'
        # An hour of events is below the default floor (180d): lowered for this test.
        'retention_events_minimum = "1h"\n'
    )
    agent = Agent(load_config(cfg))
    now = now_ms()
    start = now - 3 * H
    agent.writer.start()
    try:
        agent.writer.submit(Sample("s", (), start + i * 10_000, 1.0) for i in range(3 * 360))
        agent.writer.submit(
            Event(start + i * 60_000, "test.e", "agent", f"e{i}") for i in range(3 * 60)
        )
        assert agent.writer.flush()
        await agent.retention()
        await agent.retention()  # a pass still running is not started twice
        wait_for(lambda: not agent.housekeeping.running, timeout=30, what="the retention pass")
        assert agent.writer.flush()
    finally:
        agent.writer.close()
    conn = ro(tmp_path / "data" / "vigil.db")
    try:
        raw = queries.series_range(conn, "s", since_ms=0, until_ms=2 * now)
        assert now - H <= raw[0].ts_ms <= now - H + 20_000  # the pass ran a little after now
        oldest_1m = conn.execute("SELECT min(ts) FROM samples_1m").fetchone()[0]
        assert now - 2 * H - 60_000 < oldest_1m <= now - 2 * H + 70_000
        assert conn.execute("SELECT min(ts) FROM samples_1h").fetchone()[0] < now - 2 * H
        report = verify_chain(conn)
        assert report.ok and report.anchor_seq > 0
        pruned = queries.recent_events(conn, kind="audit.pruned")
        assert len(pruned) == 1 and pruned[0].data["through_seq"] == report.anchor_seq
    finally:
        conn.close()
