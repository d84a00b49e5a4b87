"""Unit tests for storage: migrations, the batched writer, queries, audit chain, retention,
text sanitising and the record types' JSON round trips."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from storage import queries
from storage.audit import GENESIS, canonical, chain_hash, verify_chain
from storage.db import MIGRATIONS, connect, migrate, open_database
from storage.ingest import SampleStore
from storage.records import (
    AgentStatus,
    Event,
    ModelStatus,
    ProbeRun,
    ProcessStatus,
    ResourceValue,
    Sample,
    SeriesPoint,
    labels_json,
    make_labels,
    series_key,
)
from storage.retention import purge_probe_runs, purge_samples
from storage.text import printable
from storage.writer import Writer
from tests.helpers import wait_for

T0 = 1_700_000_000_000  # a fixed epoch-ms origin keeps the tests deterministic

CPU0 = make_labels(core=0)
CPU1 = make_labels(core=1)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def applied(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "vigil.db"


@pytest.fixture
def writer(db_path: Path):
    w = Writer(db_path, flush_interval_s=0.05)
    w.start()
    yield w
    w.close()


def reader(path: Path) -> sqlite3.Connection:
    return connect(path, readonly=True)


# --- migrations -------------------------------------------------------------------------------


def test_open_database_creates_schema(db_path: Path) -> None:
    conn = open_database(db_path)  # also creates the missing parent directory
    try:
        assert db_path.exists()
        assert {
            "series",
            "samples_head",
            "sample_blocks",
            "samples_1m",
            "samples_1h",
            "audit_anchor",
            "probe_runs",
            "events",
            "_migrations",
        } <= tables(conn)
        assert "samples" not in tables(conn)  # the one-row-per-sample table of 0001 is gone
        assert applied(conn) == [name for name, _ in MIGRATIONS]
        assert "incidents" in tables(conn)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        applied_ms = conn.execute("SELECT applied_ms FROM _migrations").fetchone()[0]
        assert applied_ms > T0
    finally:
        conn.close()


def test_reopening_applies_nothing_again(db_path: Path) -> None:
    open_database(db_path).close()
    conn = connect(db_path)
    try:
        assert migrate(conn) == []
        assert applied(conn) == [name for name, _ in MIGRATIONS]
    finally:
        conn.close()


def test_memory_database() -> None:
    conn = open_database(":memory:")
    assert "samples_head" in tables(conn)
    conn.close()


def test_failing_migration_rolls_back_and_is_not_recorded(db_path: Path) -> None:
    first = MIGRATIONS[:1]

    def m0002_broken(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE incidents (id INTEGER PRIMARY KEY, cause TEXT)")
        db.execute("INSERT INTO incidents (cause) VALUES ('x')")
        raise RuntimeError("migration failed midway")

    def m0002_fixed(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE incidents (id INTEGER PRIMARY KEY, cause TEXT)")

    db_path.parent.mkdir(parents=True)
    conn = connect(db_path)
    try:
        with pytest.raises(RuntimeError, match="midway"):
            migrate(conn, (*first, ("0002_incidents", m0002_broken)))
        # 0001 committed on its own; 0002 left no table and no record behind.
        assert "incidents" not in tables(conn)
        assert "samples" in tables(conn)
        assert applied(conn) == ["0001_initial"]
        assert not conn.in_transaction
        # A fixed migration of the same name applies cleanly afterwards.
        assert migrate(conn, (*first, ("0002_incidents", m0002_fixed))) == ["0002_incidents"]
        assert "incidents" in tables(conn)
        assert applied(conn) == ["0001_initial", "0002_incidents"]
    finally:
        conn.close()


def test_readonly_connection_cannot_write(db_path: Path) -> None:
    open_database(db_path).close()
    ro = connect(db_path, readonly=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("INSERT INTO series (name, labels) VALUES ('x', '{}')")
    finally:
        ro.close()


# --- writer round trip ------------------------------------------------------------------------


def test_writer_round_trip(writer: Writer, db_path: Path) -> None:
    samples = [Sample("cpu_percent", CPU0, T0 + i * 1000, float(i)) for i in range(10)]
    samples += [Sample("cpu_percent", CPU1, T0 + i * 1000, 100.0 - i) for i in range(10)]
    samples += [Sample("mem_rss_bytes", (), T0 + i * 1000, 1e9 + i) for i in range(3)]
    runs = [
        ProbeRun(
            "llama",
            T0 + 1000,
            True,
            "ok",
            e2e_ms=12.5,
            ttft_ms=3.0,
            itl_ms=1.5,
            output_tokens=8,
            tokens_per_s=640.0,
            status=200,
            phases_ms={"connect": 1.0, "infer": 11.5},
        ),
        ProbeRun("resnet", T0 + 2000, False, "timeout", error="no answer in time"),
        ProbeRun(
            "llama",
            T0 + 3000,
            False,
            "http_error",
            e2e_ms=5.0,
            status=503,
            error="Service Unavailable",
        ),
    ]
    events = [
        Event(T0 + 1, "agent.started", "agent", "agent started", {"version": "0.1.0"}),
        Event(T0 + 2, "process.started", "process:llama", "started pid 42", {"pid": 42}),
        Event(T0 + 3, "process.exited", "process:llama", "exited with 1", {"code": 1}),
        Event(T0 + 4, "processing.odd", "agent", "not a process event"),
        Event(T0 + 5, "model.down", "model:llama", "llama is down", {"runs": [1, 2]}),
    ]
    writer.submit(samples)
    for r in runs:
        writer.submit_one(r)
    writer.submit(events)
    assert writer.flush() is True
    assert writer.healthy
    assert writer.stats.committed_samples == 23
    assert writer.stats.committed_probe_runs == 3
    assert writer.stats.committed_events == 5
    assert writer.stats.failed_commits == 0

    conn = reader(db_path)
    try:
        raw = queries.series_range(
            conn, "cpu_percent", CPU0, since_ms=T0 + 2000, until_ms=T0 + 5000
        )
        assert raw == [
            SeriesPoint(T0 + i * 1000, float(i), float(i), float(i), 1) for i in range(2, 6)
        ]
        assert (
            queries.series_range(
                conn, "cpu_percent", make_labels(core=7), since_ms=T0, until_ms=T0 + 10_000
            )
            == []
        )
        assert queries.series_range(conn, "nope", since_ms=T0, until_ms=T0 + 10_000) == []

        buckets = queries.series_range(
            conn, "cpu_percent", CPU1, since_ms=T0, until_ms=T0 + 9000, step_ms=4000
        )
        # values 100-i at T0+i s; buckets of 4 s starting at since: [0..3], [4..7], [8..9]
        assert [(p.ts_ms, p.avg, p.min, p.max, p.count) for p in buckets] == [
            (T0, 98.5, 97.0, 100.0, 4),
            (T0 + 4000, 94.5, 93.0, 96.0, 4),
            (T0 + 8000, 91.5, 91.0, 92.0, 2),
        ]
        # Buckets start at since_ms, not at the first sample or the epoch.
        shifted = queries.series_range(
            conn, "cpu_percent", CPU0, since_ms=T0 + 500, until_ms=T0 + 9000, step_ms=5000
        )
        assert [(p.ts_ms, p.count, p.min, p.max) for p in shifted] == [
            (T0 + 500, 5, 1.0, 5.0),
            (T0 + 5500, 4, 6.0, 9.0),
        ]

        assert queries.list_series(conn) == [
            ("cpu_percent", CPU0),
            ("cpu_percent", CPU1),
            ("mem_rss_bytes", ()),
        ]
        assert queries.list_series(conn, "mem") == [("mem_rss_bytes", ())]
        assert queries.list_series(conn, "gpu") == []
        assert queries.count_samples(conn, "cpu_percent", CPU0) == 10
        assert queries.count_samples(conn, "mem_rss_bytes") == 3
        assert queries.count_samples(conn, "nope") == 0
        assert queries.series_id(conn, "cpu_percent", CPU1) is not None

        got = queries.recent_probe_runs(conn)
        assert [(r.model, r.ts_ms) for r in got] == [
            ("llama", T0 + 3000),
            ("resnet", T0 + 2000),
            ("llama", T0 + 1000),
        ]
        assert got[2] == runs[0]  # every field survives, phases included
        assert got[1] == runs[1]
        llama = queries.recent_probe_runs(conn, "llama")
        assert [r.ts_ms for r in llama] == [T0 + 3000, T0 + 1000]
        assert llama[0].status == 503 and llama[0].error == "Service Unavailable"
        assert [r.ts_ms for r in queries.recent_probe_runs(conn, limit=1)] == [T0 + 3000]
        assert [r.ts_ms for r in queries.recent_probe_runs(conn, since_ms=T0 + 2000)] == [
            T0 + 3000,
            T0 + 2000,
        ]

        evs = queries.recent_events(conn)
        assert [e.seq for e in evs] == [5, 4, 3, 2, 1]
        assert evs[-1].kind == "agent.started" and evs[-1].data == {"version": "0.1.0"}
        assert evs[-1].prev_hash == GENESIS
        assert evs[0].data == {"runs": [1, 2]}
        assert [e.kind for e in queries.recent_events(conn, kind="process.")] == [
            "process.exited",
            "process.started",
        ]
        assert [e.kind for e in queries.recent_events(conn, kind="process")] == [
            "processing.odd",
            "process.exited",
            "process.started",
        ]
        assert [e.seq for e in queries.recent_events(conn, subject="process:llama")] == [3, 2]
        assert [e.seq for e in queries.recent_events(conn, subject="agent", kind="agent.")] == [1]
        assert [e.seq for e in queries.recent_events(conn, since_ms=T0 + 4)] == [5, 4]
        assert [e.seq for e in queries.recent_events(conn, limit=2)] == [5, 4]
    finally:
        conn.close()


def test_same_series_and_timestamp_replaces(writer: Writer, db_path: Path) -> None:
    writer.submit([Sample("x", (), T0, 1.0), Sample("x", (), T0, 2.0)])
    assert writer.flush()
    writer.submit_one(Sample("x", (), T0, 3.0))
    assert writer.flush()
    conn = reader(db_path)
    try:
        assert [p.avg for p in queries.series_range(conn, "x", since_ms=T0, until_ms=T0)] == [3.0]
    finally:
        conn.close()


def test_labels_are_order_independent(writer: Writer, db_path: Path) -> None:
    a = make_labels({"gpu": 0, "host": "h"})
    b = make_labels(host="h", gpu="0")
    assert a == b
    writer.submit([Sample("gpu_util", a, T0, 1.0), Sample("gpu_util", b, T0 + 1, 2.0)])
    assert writer.flush()
    conn = reader(db_path)
    try:
        assert queries.list_series(conn) == [("gpu_util", a)]
        assert queries.count_samples(conn, "gpu_util", b) == 2
    finally:
        conn.close()


def test_batches_by_size_without_flush(db_path: Path) -> None:
    w = Writer(db_path, batch_size=100, flush_interval_s=60.0)
    w.start()
    try:
        w.submit(Sample("s", (), T0 + i, float(i)) for i in range(250))
        wait_for(lambda: w.stats.committed_samples >= 200, timeout=5, what="two full batches")
        assert w.stats.committed_samples == 200
        assert w.stats.commits == 2
        # The last 50 wait for their time limit (60 s away) or an explicit flush.
        assert w.flush()
        assert w.stats.committed_samples == 250
        assert w.stats.commits == 3
    finally:
        w.close()


def test_batches_by_time_without_flush(db_path: Path) -> None:
    w = Writer(db_path, batch_size=1_000_000, flush_interval_s=0.2)
    w.start()
    try:
        w.submit(Sample("s", (), T0 + i, float(i)) for i in range(5))
        wait_for(lambda: w.stats.committed_samples == 5, timeout=5, what="time-based commit")
        assert w.stats.commits == 1
    finally:
        w.close()


def test_records_after_a_task_still_commit_by_time(db_path: Path) -> None:
    # A task at the head of the queue, records drained right behind it: they still get their
    # time limit, and the task is never mistaken for a record.
    w = Writer(db_path, batch_size=1_000_000, flush_interval_s=0.1)
    w.start()
    try:
        gate = threading.Event()
        w.run_task(lambda conn: gate.wait(5))
        w.submit(Sample("s", (), T0 + i, 1.0) for i in range(5))
        w.run_task(lambda conn: conn.execute("SELECT 1"))
        w.submit(Sample("s", (), T0 + 100 + i, 1.0) for i in range(5))
        gate.set()
        wait_for(lambda: w.stats.committed_samples == 10, timeout=5, what="commit after task")
        assert w.flush()
        assert w.healthy
    finally:
        w.close()


def test_run_task_runs_in_order_and_errors_do_not_stop_the_writer(writer: Writer) -> None:
    seen: list[int] = []
    writer.submit(Sample("s", (), T0 + i, 1.0) for i in range(20))
    writer.run_task(lambda conn: seen.append(queries.count_all_samples(conn)))
    writer.run_task(lambda conn: conn.execute("SELECT * FROM no_such_table"))
    writer.run_task(lambda conn: 1 / 0)
    writer.submit_one(Sample("s", (), T0 + 100, 1.0))
    assert writer.flush()
    assert seen == [20]  # the task saw everything queued before it
    assert writer.stats.committed_samples == 21


def test_event_commits_promptly(db_path: Path) -> None:
    w = Writer(db_path, batch_size=1_000_000, flush_interval_s=60.0)
    w.start()
    try:
        w.submit_one(Event(T0, "agent.started", "agent", "hello"))
        wait_for(lambda: w.stats.committed_events == 1, timeout=5, what="event commit")
    finally:
        w.close()


def test_close_flushes_everything(db_path: Path) -> None:
    w = Writer(db_path, batch_size=700, flush_interval_s=60.0)
    w.start()
    w.submit(Sample("s", make_labels(k=i % 3), T0 + i, float(i)) for i in range(5000))
    w.submit(ProbeRun("m", T0 + i, True, "ok") for i in range(7))
    w.submit_one(Event(T0, "agent.stopping", "agent", "bye"))
    w.close()
    assert not w.flush()  # the thread is gone: flush says so rather than hanging
    w.submit_one(Sample("s", (), T0, 1.0))  # never raises into a producer, even after close

    conn = connect(db_path)
    try:
        assert queries.count_all_samples(conn) == 5000
        assert conn.execute("SELECT count(*) FROM probe_runs").fetchone()[0] == 7
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        for k in range(3):
            assert queries.count_samples(conn, "s", make_labels(k=k)) == len(range(k, 5000, 3))
    finally:
        conn.close()


def test_start_reports_an_unopenable_database(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    w = Writer(tmp_path / "file" / "vigil.db")
    with pytest.raises(OSError):
        w.start()
    assert not w.flush()


# --- audit chain ------------------------------------------------------------------------------


def write_events(path: Path, n: int, start: int = 0) -> None:
    w = Writer(path, flush_interval_s=0.05)
    w.start()
    try:
        w.submit(
            Event(
                T0 + start + i,
                f"test.e{(start + i) % 3}",
                "agent",
                f"event {start + i} — ünïcode",
                {"i": start + i, "nested": {"x": [1]}},
            )
            for i in range(n)
        )
        assert w.flush()
    finally:
        w.close()


def test_chain_verifies(db_path: Path) -> None:
    write_events(db_path, 6)
    conn = connect(db_path)
    try:
        report = verify_chain(conn)
        assert report.ok and report.checked == 6
        assert report.broken_seq is None and report.reason is None
        rows = conn.execute(
            "SELECT seq, ts, kind, subject, message, data, prev_hash, hash FROM events ORDER BY seq"
        ).fetchall()
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert rows[0][6] == GENESIS
        for prev, row in itertools.pairwise(rows):
            assert row[6] == prev[7]
        seq, ts, kind, subject, message, data, prev_hash, h = rows[2]
        assert h == chain_hash(prev_hash, canonical(seq, ts, kind, subject, message, data))
    finally:
        conn.close()


def test_empty_chain_is_ok(db_path: Path) -> None:
    conn = open_database(db_path)
    try:
        report = verify_chain(conn)
        assert report.ok and report.checked == 0
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("message", "nothing to see here"),
        ("data", '{"i": 999}'),
        ("kind", "test.forged"),
        ("ts", T0 + 999_999),
    ],
)
def test_edited_row_breaks_the_chain(db_path: Path, column: str, value: object) -> None:
    write_events(db_path, 5)
    conn = connect(db_path)
    try:
        conn.execute(f"UPDATE events SET {column} = ? WHERE seq = 3", (value,))
        report = verify_chain(conn)
        assert not report.ok
        assert report.broken_seq == 3
        assert report.checked == 2
        assert "edited" in (report.reason or "")
    finally:
        conn.close()


def test_deleted_row_is_reported_missing(db_path: Path) -> None:
    write_events(db_path, 5)
    conn = connect(db_path)
    try:
        conn.execute("DELETE FROM events WHERE seq = 3")
        report = verify_chain(conn)
        assert not report.ok
        assert report.broken_seq == 4
        assert "missing" in (report.reason or "")
        assert "3" in (report.reason or "")
    finally:
        conn.close()


def test_rehashed_row_still_breaks_the_link(db_path: Path) -> None:
    # A forger who recomputes the edited row's own hash still breaks the next row's link.
    write_events(db_path, 4)
    conn = connect(db_path)
    try:
        seq, ts, kind, subject, _msg, data, prev_hash = conn.execute(
            "SELECT seq, ts, kind, subject, message, data, prev_hash FROM events WHERE seq = 2"
        ).fetchone()
        forged = chain_hash(prev_hash, canonical(seq, ts, kind, subject, "forged", data))
        conn.execute("UPDATE events SET message = 'forged', hash = ? WHERE seq = 2", (forged,))
        report = verify_chain(conn)
        assert not report.ok and report.broken_seq == 3
        assert "prev_hash" in (report.reason or "")
    finally:
        conn.close()


def test_reopened_writer_continues_the_chain(db_path: Path) -> None:
    write_events(db_path, 3)
    write_events(db_path, 4, start=3)
    conn = connect(db_path)
    try:
        report = verify_chain(conn)
        assert report.ok and report.checked == 7
        assert [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")] == list(
            range(1, 8)
        )
    finally:
        conn.close()


# --- failure handling -------------------------------------------------------------------------


def fill_limit(conn: sqlite3.Connection) -> None:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")


def lift_limit(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823")


class StateLog:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, str]] = []
        self.lock = threading.Lock()

    def __call__(self, healthy: bool, message: str) -> None:
        with self.lock:
            self.calls.append((healthy, message))


def test_full_database_degrades_then_recovers_without_loss(db_path: Path) -> None:
    states = StateLog()
    w = Writer(db_path, flush_interval_s=0.05, on_state_change=states)
    w.start()
    try:
        w.submit(Sample("warmup", (), T0, 1.0) for _ in range(1))
        assert w.flush()
        w.run_task(fill_limit)
        n = 4000
        w.submit(Sample("s", make_labels(i=i % 4), T0 + i, float(i)) for i in range(n))
        w.submit_one(Event(T0, "agent.note", "agent", "written while full"))
        assert w.flush() is False
        assert w.healthy is False
        assert w.stats.failed_commits >= 1
        assert "full" in (w.last_error or "")
        assert states.calls[0][0] is False
        assert "full" in states.calls[0][1]
        assert len(states.calls) == 1  # repeated failures are one state change

        w.run_task(lift_limit)
        assert w.flush() is True
        assert w.healthy is True
        assert w.last_error is None
        assert states.calls[-1] == (True, "")
        assert w.stats.dropped == 0
    finally:
        w.close()

    conn = connect(db_path)
    try:
        assert sum(queries.count_samples(conn, "s", make_labels(i=k)) for k in range(4)) == n
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        assert verify_chain(conn).ok
    finally:
        conn.close()


def test_max_pending_bounds_the_buffer_and_keeps_events(db_path: Path) -> None:
    w = Writer(db_path, flush_interval_s=0.05, max_pending=300)
    w.start()
    try:
        w.run_task(fill_limit)
        events = [Event(T0 + i, "process.exited", f"process:p{i}", f"exit {i}") for i in range(10)]
        w.submit(events[:5])
        n = 3000
        w.submit(Sample("s", (), T0 + i, float(i)) for i in range(n))
        w.submit(events[5:])
        assert w.flush() is False
        assert w.stats.dropped > 0

        w.run_task(lift_limit)
        assert w.flush() is True
        assert w.healthy
        dropped = w.stats.dropped
        assert w.stats.committed_events == 10
    finally:
        w.close()

    conn = connect(db_path)
    try:
        kept = queries.count_samples(conn, "s")
        assert kept + dropped == n
        assert 0 < kept <= 300
        # The oldest samples went first: what survived is the newest stretch.
        ts = [p.ts_ms for p in queries.series_range(conn, "s", since_ms=0, until_ms=2 * T0)]
        assert ts == list(range(T0 + n - kept, T0 + n))
        assert [e.subject for e in queries.recent_events(conn, limit=100)][::-1] == [
            f"process:p{i}" for i in range(10)
        ]
        assert verify_chain(conn).ok
    finally:
        conn.close()


def test_recovery_through_a_task_answers_flush_at_once(db_path: Path) -> None:
    # The retry backoff (2 s here) must not hold a flush once a commit before a task succeeded.
    w = Writer(db_path, flush_interval_s=1.0)
    w.start()
    try:
        w.run_task(fill_limit)
        w.submit(Sample("s", (), T0 + i, 1.0) for i in range(3000))
        assert w.flush() is False
        w.run_task(lift_limit)
        w.run_task(lambda conn: None)  # the pending batch commits before this task runs
        assert w.flush(timeout=1.0) is True
        assert w.healthy
        assert w.stats.committed_samples == 3000
    finally:
        w.close()


def test_state_listener_errors_do_not_kill_the_writer(db_path: Path) -> None:
    def bad_listener(healthy: bool, message: str) -> None:
        raise RuntimeError("listener bug")

    w = Writer(db_path, flush_interval_s=0.05, on_state_change=bad_listener)
    w.start()
    try:
        w.run_task(fill_limit)
        w.submit(Sample("s", (), T0 + i, 1.0) for i in range(3000))
        assert w.flush() is False
        w.run_task(lift_limit)
        assert w.flush() is True
    finally:
        w.close()


# --- retention --------------------------------------------------------------------------------


def seed_samples(conn: sqlite3.Connection, per_series: dict[str, int], per_commit: int = 4) -> None:
    """Write samples 1 s apart through the writer's store, ``per_commit`` per transaction, so
    each series ends up as several small blocks (a block is sealed at 6) plus head rows."""
    store = SampleStore(block_samples=6)
    for name in per_series:
        conn.execute("INSERT INTO series (name, labels) VALUES (?, '{}')", (name,))
    for lo in range(0, max(per_series.values(), default=0), per_commit):
        batch = [
            Sample(name, (), T0 + i * 1000, float(i))
            for name, n in per_series.items()
            for i in range(lo, min(n, lo + per_commit))
        ]
        conn.execute("BEGIN")
        store.applied(store.write(conn, batch))
        conn.execute("COMMIT")


def test_purge_samples_deletes_only_old_rows_in_chunks(db_path: Path) -> None:
    conn = open_database(db_path)
    try:
        seed_samples(conn, {"a": 30, "b": 14, "c": 3, "d": 0})
        blocks = conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0]
        assert blocks >= 4  # a: 3 blocks of 8 and head rows; b: 1 block, head rows
        cutoff = T0 + 14 * 1000  # samples 0..13 of each series are older
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        removed = purge_samples(conn, cutoff, chunk=1)
        conn.set_trace_callback(None)
        assert removed == 14 + 14 + 3
        block_deletes = [s for s in statements if s.startswith("DELETE FROM sample_blocks")]
        # chunk=1: one whole block per step (plus one re-encode of a straddling block)
        assert len(block_deletes) >= 3
        assert queries.count_samples(conn, "a") == 16
        assert queries.count_samples(conn, "b") == 0
        assert queries.count_samples(conn, "c") == 0
        kept = queries.series_range(conn, "a", since_ms=0, until_ms=2 * T0)
        assert [p.ts_ms for p in kept] == [T0 + i * 1000 for i in range(14, 30)]
        assert [p.avg for p in kept] == [float(i) for i in range(14, 30)]
        assert not conn.in_transaction
        assert purge_samples(conn, cutoff, chunk=1) == 0
    finally:
        conn.close()


def test_purge_probe_runs(db_path: Path) -> None:
    conn = open_database(db_path)
    try:
        conn.executemany(
            "INSERT INTO probe_runs (ts, model, ok, category) VALUES (?, ?, 1, 'ok')",
            [(T0 + i, m) for i in range(10) for m in ("a", "b")],
        )
        assert purge_probe_runs(conn, T0 + 4) == 8
        assert conn.execute("SELECT min(ts), count(*) FROM probe_runs").fetchone() == (T0 + 4, 12)
        assert purge_probe_runs(conn, T0 + 4) == 0
        assert not conn.in_transaction
    finally:
        conn.close()


def test_retention_runs_on_the_writer_thread(writer: Writer, db_path: Path) -> None:
    writer.submit(Sample("s", make_labels(k=k), T0 + i, 1.0) for k in range(3) for i in range(20))
    writer.submit(ProbeRun("m", T0 + i, True, "ok") for i in range(20))
    result: list[int] = []
    writer.run_task(lambda conn: result.append(purge_samples(conn, T0 + 15, chunk=7)))
    writer.run_task(lambda conn: result.append(purge_probe_runs(conn, T0 + 5)))
    writer.submit_one(Sample("s", make_labels(k=0), T0 + 100, 2.0))
    assert writer.flush()
    assert result == [45, 5]
    conn = reader(db_path)
    try:
        assert queries.count_samples(conn, "s", make_labels(k=0)) == 6
        assert queries.count_samples(conn, "s", make_labels(k=2)) == 5
        assert len(queries.recent_probe_runs(conn, limit=100)) == 15
    finally:
        conn.close()


# --- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("\x1b[31mred\x1b[0m", "?[31mred?[0m"),
        ("\x1b]0;pwned\x07title", "?]0;pwned?title"),
        ("bell\x07", "bell?"),
        ("progress 10%\rprogress 99%", "progress 10%?progress 99%"),
        ("\x9b2J", "?2J"),  # the 8-bit CSI
        ("nul\x00del\x7f", "nul?del?"),
        ("tab\tkept", "tab\tkept"),
        ("llama-3.1-8b ünïcödé 模型 🚀", "llama-3.1-8b ünïcödé 模型 🚀"),
        ("", ""),
    ],
)
def test_printable(raw: str, safe: str) -> None:
    assert printable(raw) == safe


def test_printable_no_escape_byte_survives() -> None:
    out = printable("".join(chr(c) for c in range(0x00, 0xA0)))
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "\x9b" not in out
    assert all(c.isprintable() or c == "\t" for c in out)


def test_printable_newlines() -> None:
    assert printable("line one\nline two") == "line one line two"
    assert printable("line one\nline two", keep_newlines=True) == "line one\nline two"
    assert printable("a\r\nb", keep_newlines=True) == "a?\nb"


def test_printable_accepts_any_object() -> None:
    assert printable(42) == "42"
    assert printable(ValueError("bad\x1b[2J")) == "bad?[2J"


# --- records ----------------------------------------------------------------------------------


def through_json(data: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(data))


def test_labels_helpers() -> None:
    labels = make_labels({"b": 2}, a=1)
    assert labels == (("a", "1"), ("b", "2"))
    assert make_labels() == ()
    assert labels_json(labels) == '{"a":"1","b":"2"}'
    assert labels_json(()) == "{}"
    assert series_key("cpu", labels) == 'cpu{a="1",b="2"}'
    assert series_key("cpu", ()) == "cpu"


def test_probe_run_json_round_trip() -> None:
    run = ProbeRun(
        "llama",
        T0,
        True,
        "ok",
        e2e_ms=12.5,
        ttft_ms=3.25,
        itl_ms=1.0,
        output_tokens=8,
        tokens_per_s=640.0,
        status=200,
        phases_ms={"ttft": 3.25, "decode": 9.25},
    )
    assert ProbeRun.from_json(through_json(run.to_json())) == run
    bare = ProbeRun("m", T0, False, "refused", error="cannot connect")
    assert ProbeRun.from_json(through_json(bare.to_json())) == bare
    # Unknown keys from a newer agent are ignored.
    assert ProbeRun.from_json({**bare.to_json(), "future_field": 1}) == bare


def test_event_json_round_trip() -> None:
    ev = Event(
        T0,
        "process.exited",
        "process:x",
        "exited 1",
        {"code": 1, "tail": ["a", "b"]},
        seq=7,
        prev_hash="a" * 64,
        hash="b" * 64,
    )
    assert Event.from_json(through_json(ev.to_json())) == ev
    plain = Event(T0, "agent.started", "agent", "hi")
    assert Event.from_json(through_json(plain.to_json())) == plain


def test_process_status_json_round_trip() -> None:
    ps = ProcessStatus(
        "srv",
        "running",
        T0,
        pid=1234,
        restarts=2,
        last_exit="exit 1",
        argv=("python", "-m", "server"),
    )
    data = through_json(ps.to_json())
    assert data["argv"] == ["python", "-m", "server"]
    assert ProcessStatus.from_json(data) == ps
    assert ProcessStatus.from_json(
        through_json(ProcessStatus("p", "stopped", T0).to_json())
    ) == ProcessStatus("p", "stopped", T0)


def test_model_status_json_round_trip() -> None:
    run = ProbeRun("m", T0, False, "slow", e2e_ms=900.0, phases_ms={"infer": 900.0})
    ms = ModelStatus("m", "kserve_v2", "http://h:8000", "degraded", T0 - 5000, last_run=run)
    assert ModelStatus.from_json(through_json(ms.to_json())) == ms
    never = ModelStatus("n", "http", "http://h/", "unknown", T0)
    assert ModelStatus.from_json(through_json(never.to_json())) == never


def agent_status() -> AgentStatus:
    return AgentStatus(
        host="gpu-07",
        version="0.1.0",
        started_ms=T0,
        now_ms=T0 + 90_500,
        models=(
            ModelStatus(
                "m", "http", "http://h/", "up", T0, ProbeRun("m", T0, True, "ok", e2e_ms=1.0)
            ),
        ),
        processes=(ProcessStatus("srv", "running", T0, pid=5, argv=("srv",)),),
        resources=(
            ResourceValue("gpu_util_percent", make_labels(gpu=0), T0, 55.0),
            ResourceValue("gpu_util_percent", make_labels(gpu=1), T0, 12.0),
            ResourceValue("cpu_percent", (), T0, 7.5),
        ),
        gpu_available=True,
        storage_ok=False,
    )


def test_agent_status_json_round_trip() -> None:
    st = agent_status()
    data = through_json(st.to_json())
    assert data["uptime_s"] == 90.5
    assert AgentStatus.from_json(data) == st
    empty = AgentStatus("h", "0.1.0", T0, T0 - 10)
    assert empty.uptime_s == 0.0  # a clock step back never shows negative uptime
    assert AgentStatus.from_json(through_json(empty.to_json())) == empty


def test_agent_status_resource_lookup() -> None:
    st = agent_status()
    assert st.resource("gpu_util_percent", gpu=0) == 55.0
    assert st.resource("gpu_util_percent", gpu="1") == 12.0
    assert st.resource("gpu_util_percent", gpu=2) is None
    assert st.resource("gpu_util_percent") is None  # labels must match exactly
    assert st.resource("cpu_percent") == 7.5
    assert st.resource("cpu_percent", core=0) is None
    assert st.resource("nope") is None
