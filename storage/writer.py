"""The one writer: a dedicated thread that drains a queue into SQLite in batched transactions.

Producers (collectors, probes, the supervisor) call :meth:`Writer.submit` from any thread; it
never blocks on the database. The thread commits when a batch reaches ``batch_size`` records or
when ``flush_interval_s`` has passed since the batch's first record, whichever comes first, with
``executemany`` inside one transaction. A batch holding an audit event commits at once.
Samples go through :class:`storage.ingest.SampleStore`: appended to each series' head, the
1-minute and 1-hour rollups updated, and full heads sealed into compressed blocks, all in the
same transaction, so a crash loses at most the batches not yet committed and never leaves a
rollup that disagrees with its raw samples.

When a commit fails (disk full, database locked, I/O error) the batch is kept and retried with
backoff, bounded by ``max_pending`` (the oldest samples are dropped first; events, the audit
trail, are dropped last). Nothing here ever raises into a producer: self-healing does not depend
on storage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storage import private
from storage.audit import GENESIS, canonical, chain_hash
from storage.db import open_database
from storage.ingest import SampleStore
from storage.records import Event, ProbeRun, Sample
from storage.samples import BLOCK_SAMPLES

log = logging.getLogger("vigil.storage")

Record = Sample | ProbeRun | Event

WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
"""What the WAL file is cut back to after a checkpoint (``journal_size_limit``). SQLite's
default keeps the file at the largest size it ever reached, which a burst (a backlog after a
full disk, a retention run) can make many times the usual 16 MB."""


@dataclass
@dataclass
class _LoopState:
    """The writer thread's loop: records waiting for a commit, flushes waiting for an answer,
    when the records are due, when a failing commit may be retried, and whether to stop."""

    pending: list[Record] = field(default_factory=list)
    markers: list[_FlushMarker] = field(default_factory=list)
    deadline: float | None = None
    retry_at: float = 0.0
    stopping: bool = False


class WriterStats:
    """Counters for the agent's own metrics and for tests."""

    committed_samples: int = 0
    committed_probe_runs: int = 0
    committed_events: int = 0
    commits: int = 0
    failed_commits: int = 0
    dropped: int = 0
    rejected: int = 0
    """Samples refused for a non-finite value (NaN, inf)."""


class _Records:
    """Records queued by one :meth:`Writer.submit` call: one queue item, not one per record."""

    __slots__ = ("records", "urgent")

    def __init__(self, records: list[Record], urgent: bool) -> None:
        self.records = records
        self.urgent = urgent


class _Task:
    """A callable to run on the writer thread with its connection (retention, maintenance):
    the single-writer rule holds for every write, not just inserts."""

    def __init__(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        self.fn = fn


class _FlushMarker:
    """Put in the queue by :meth:`Writer.flush`; set once everything before it is committed."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


_STOP = object()


class Writer:
    """Batched, single-threaded SQLite writer. Start it, submit records, close it."""

    def __init__(
        self,
        path: Path | str,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        max_pending: int = 500_000,
        on_state_change: Callable[[bool, str], None] | None = None,
        block_samples: int = BLOCK_SAMPLES,
    ) -> None:
        self.path = path
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.stats = WriterStats()
        self.healthy = True
        self.last_error: str | None = None
        self._on_state_change = on_state_change
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="vigil-writer", daemon=True)
        self._conn: sqlite3.Connection | None = None
        self._samples = SampleStore(block_samples)
        self._last_seq = 0
        self._last_hash = GENESIS
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._listeners: list[Callable[[list[Sample]], None]] = []
        self.steps_run = 0
        """Turns of long jobs run so far (:meth:`run_steps`: retention, which deletes samples):
        a reader that keeps stored samples in memory reads them again after one."""

    # --- producer side -------------------------------------------------------------------

    def start(self) -> None:
        """Open the database (migrating it) on the writer thread and start draining."""
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def submit(self, records: Iterable[Record]) -> None:
        """Queue records for writing. Thread-safe, never blocks, never raises."""
        batch = list(records)
        if batch:
            urgent = any(type(r) is Event for r in batch)
            self._queue.put(_Records(batch, urgent))

    def submit_one(self, record: Record) -> None:
        """Queue one record."""
        self._queue.put(_Records([record], type(record) is Event))

    def add_commit_listener(self, fn: Callable[[list[Sample]], None]) -> None:
        """Call ``fn(samples)`` on the writer thread after every commit that stored samples.

        ``samples`` are the batch's samples, in the order submitted, non-finite ones included
        (the store rejected those: a listener skips them too). The alert rules' series cache
        (``agent.alerting.seriescache``) keeps its windows current this way instead of reading
        them back every second. ``fn`` must be quick and must not block; what it raises is
        logged.
        """
        self._listeners.append(fn)

    def run_task(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Run ``fn(conn)`` on the writer thread after the records queued before it.

        Errors are logged, never raised: maintenance must not take the writer down.
        """
        self._queue.put(_Task(fn))

    def run_steps(
        self,
        make_steps: Callable[[sqlite3.Connection], Iterator[object]],
        *,
        budget_s: float = 0.05,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Run a long job (retention) as a series of small steps on the writer thread.

        ``make_steps(conn)`` returns an iterator whose every step commits its own short
        transaction. Steps run for about ``budget_s``, then the job goes back into the queue,
        so the batches queued meanwhile commit between its turns instead of waiting for it.
        ``on_done`` runs on the writer thread when the steps end, also when one failed.
        """
        steps: list[Iterator[object]] = []

        def turn(conn: sqlite3.Connection) -> None:
            if not steps:
                steps.append(make_steps(conn))
            deadline = time.monotonic() + budget_s
            try:
                for _ in steps[0]:
                    if time.monotonic() >= deadline:
                        self.run_task(turn)
                        return
            except BaseException:
                if on_done is not None:
                    on_done()  # the job is over: the failure is logged by the task runner
                raise
            finally:
                self.steps_run += 1
            if on_done is not None:
                on_done()

        turn.__name__ = getattr(make_steps, "__name__", "steps")
        self.run_task(turn)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything submitted before this call is committed.

        Returns:
            True if it was committed, False on timeout or when the database is failing.
        """
        if not self._thread.is_alive():
            return False
        marker = _FlushMarker()
        self._queue.put(marker)
        return marker.done.wait(timeout) and marker.ok

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, stop the thread and close the database."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # --- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if str(self.path) != ":memory:":
                private.prepare_sqlite(Path(self.path))  # -wal and -shm take its mode
            self._conn = open_database(self.path)
            self._conn.execute("PRAGMA cache_size = -32000")  # 32 MB: many series' pages
            # Checkpoint every 16 MB of WAL rather than 4: head pages written over and over
            # between two checkpoints are copied into the database once.
            self._conn.execute("PRAGMA wal_autocheckpoint = 4000")
            self._conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            self._load_chain_head()
        except BaseException as exc:  # reported to start()'s caller
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        st = _LoopState()
        while not st.stopping:
            timeout = None if st.deadline is None else max(0.0, st.deadline - time.monotonic())
            with contextlib.suppress(queue.Empty):
                self._take(st, self._queue.get(timeout=timeout), first=True)
            # Drain whatever else is already queued so one commit carries it.
            while len(st.pending) < self.batch_size and not st.stopping:
                try:
                    self._take(st, self._queue.get_nowait(), first=False)
                except queue.Empty:
                    break
            self._step(st)
        if st.pending:
            self._commit(st.pending)
        for m in st.markers:
            m.done.set()
        if self._conn is not None:
            self._conn.close()

    def _take(self, st: _LoopState, item: object, *, first: bool) -> None:
        """One queued item into the loop's state."""
        if item is _STOP:
            st.stopping = True
        elif isinstance(item, _FlushMarker):
            st.markers.append(item)
        elif isinstance(item, _Task):
            # A task is no record: run it in order, after what was queued before it.
            st.pending = self._settle(st.pending, st.markers)
            self._run_task(item)
        elif isinstance(item, _Records):
            st.pending.extend(item.records)
            if item.urgent:
                # Audit events are rare and matter: commit them now, not a second later,
                # so an action's record is durable and visible as soon as it happened.
                st.deadline = time.monotonic()
            elif first and st.deadline is None:
                st.deadline = time.monotonic() + self.flush_interval_s

    def _step(self, st: _LoopState) -> None:
        """Commit what is due: everything (a flush, a stop, the time limit) or full batches."""
        if not st.pending:
            st.deadline = None
        elif st.deadline is None:
            # Records drained after a task or a flush marker still need their time limit.
            st.deadline = time.monotonic() + self.flush_interval_s
        everything = bool(
            st.markers
            or st.stopping
            or (st.deadline is not None and time.monotonic() >= st.deadline)
        )
        due = everything or len(st.pending) >= self.batch_size
        # Back off only while failing: a commit that succeeded elsewhere (before a task)
        # ends the backoff, or a flush marker could wait for a retry that never comes.
        if due and (st.pending or st.markers) and (self.healthy or time.monotonic() >= st.retry_at):
            ok, rest = self._commit_due(st.pending, everything=everything)
            if ok:
                st.pending = rest
                st.retry_at = 0.0
            else:
                st.pending = self._bound(rest)
                st.retry_at = time.monotonic() + min(5.0, self.flush_interval_s * 2)
            for m in st.markers:
                m.ok = ok
                m.done.set()
            st.markers = []
            st.deadline = (time.monotonic() + self.flush_interval_s) if st.pending else None
        elif st.pending and st.deadline is not None and time.monotonic() >= st.deadline:
            st.deadline = st.retry_at

    def _commit_due(self, pending: list[Record], *, everything: bool) -> tuple[bool, list[Record]]:
        """Commit all of ``pending``, or only its full batches; (ok, what is left)."""
        if everything:
            ok = self._commit(pending) if pending else self.healthy
            return ok, ([] if ok else pending)
        # Full batches only; the remainder waits for its time limit.
        while len(pending) >= self.batch_size:
            if not self._commit(pending[: self.batch_size]):
                return False, pending
            pending = pending[self.batch_size :]
        return True, pending

    def _settle(self, pending: list[Record], markers: list[_FlushMarker]) -> list[Record]:
        """Before a task: commit what was queued before it and answer the flushes waiting for
        that, so a long job run in turns (retention) never holds a flush until it ends."""
        if pending and self._commit(pending):
            pending = []
        if not pending:
            for m in markers:
                m.ok = self.healthy
                m.done.set()
            markers.clear()
        return pending

    def _run_task(self, task: _Task) -> None:
        assert self._conn is not None
        try:
            task.fn(self._conn)
        except sqlite3.Error as exc:
            log.warning(
                "storage task failed task=%s error=%r",
                getattr(task.fn, "__name__", "task"),
                str(exc),
            )
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except Exception:
            log.exception("storage task crashed")
        # A task may have appended to the audit chain (retention records what it pruned).
        with contextlib.suppress(sqlite3.Error):
            self._load_chain_head()

    def _load_chain_head(self) -> None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row:
            self._last_seq, self._last_hash = int(row[0]), str(row[1])

    def _bound(self, pending: list[Record]) -> list[Record]:
        """Keep the retry buffer bounded: drop the oldest non-events first."""
        excess = len(pending) - self.max_pending
        if excess <= 0:
            return pending
        kept: list[Record] = []
        for rec in pending:
            if excess > 0 and not isinstance(rec, Event):
                excess -= 1
                self.stats.dropped += 1
                continue
            kept.append(rec)
        if excess > 0:
            self.stats.dropped += excess
            kept = kept[excess:]
        return kept

    def _commit(self, batch: list[Record]) -> bool:
        assert self._conn is not None
        conn = self._conn
        seq, last_hash = self._last_seq, self._last_hash
        samples: list[Sample] = []
        runs: list[tuple[object, ...]] = []
        events: list[tuple[object, ...]] = []
        for rec in batch:
            if type(rec) is Sample:
                samples.append(rec)
            elif isinstance(rec, ProbeRun):
                runs.append(
                    (
                        rec.ts_ms,
                        rec.model,
                        int(rec.ok),
                        rec.category,
                        rec.status,
                        rec.error,
                        rec.ttft_ms,
                        rec.itl_ms,
                        rec.e2e_ms,
                        rec.output_tokens,
                        rec.tokens_per_s,
                        json.dumps(dict(rec.phases_ms), sort_keys=True),
                        rec.end_ms,
                        int(rec.planned),
                    )
                )
            elif isinstance(rec, Event):
                seq += 1
                data = json.dumps(dict(rec.data), sort_keys=True, default=str)
                content = canonical(seq, rec.ts_ms, rec.kind, rec.subject, rec.message, data)
                h = chain_hash(last_hash, content)
                events.append(
                    (seq, rec.ts_ms, rec.kind, rec.subject, rec.message, data, last_hash, h)
                )
                last_hash = h
            else:
                samples.append(rec)  # a Sample subclass
        try:
            conn.execute("BEGIN IMMEDIATE")
            staged = self._samples.write(conn, samples) if samples else None
            if runs:
                conn.executemany(
                    "INSERT INTO probe_runs (ts, model, ok, category, status, error, ttft_ms, "
                    "itl_ms, e2e_ms, output_tokens, tokens_per_s, phases, end_ts, planned) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    runs,
                )
            if events:
                conn.executemany(
                    "INSERT INTO events (seq, ts, kind, subject, message, data, prev_hash, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    events,
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have rolled back
                conn.execute("ROLLBACK")
            self.stats.failed_commits += 1
            self._set_health(False, f"{type(exc).__name__}: {exc}")
            return False
        except Exception:
            # A bug, not the disk: retrying would fail the same way forever and hold back the
            # audit events behind it. Drop this batch's samples, keep everything else.
            log.exception("storage batch failed; dropping its samples samples=%d", len(samples))
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return self._salvage(batch, len(samples))
        # Only now is it safe to remember ids, tails and the chain head: a rollback undoes them.
        if staged is not None:
            self._samples.applied(staged)
            self.stats.committed_samples += staged.written
            self.stats.rejected += staged.rejected
            self._tell(samples)
        self._last_seq, self._last_hash = seq, last_hash
        self.stats.commits += 1
        self.stats.committed_probe_runs += len(runs)
        self.stats.committed_events += len(events)
        self._set_health(True, "")
        return True

    def _salvage(self, batch: list[Record], samples: int) -> bool:
        """After a batch failed with an error of ours, not SQLite's: commit what it holds
        besides samples; True when nothing is left to retry."""
        self.stats.dropped += samples
        rest: list[Record] = [r for r in batch if not isinstance(r, Sample)]
        if not rest:
            return True
        if len(rest) < len(batch):
            return self._commit(rest)
        # No sample to blame: a probe run or an event holds what SQLite cannot take (an
        # integer over 64 bits). Committing the same batch again recursed until a
        # RecursionError and lost the events behind it (issue 17); commit them one at a time
        # instead, dropping only a record that fails alone. One that fails for SQLite's own
        # reasons here is dropped too: the others are committed, so the batch cannot be handed
        # back to be retried whole.
        if len(rest) == 1:
            self.stats.dropped += 1
            return True
        for rec in rest:
            if not self._commit([rec]):
                self.stats.dropped += 1
        return True

    def _tell(self, samples: list[Sample]) -> None:
        """Hand committed samples to the commit listeners."""
        for fn in self._listeners:
            try:
                fn(samples)
            except Exception:  # a listener's bug must not undo or retry the commit
                log.exception("commit listener failed")

    def _checkpoint_after_recovery(self) -> None:
        """Copy the WAL into the database and truncate it, now.

        The backlog kept through an outage (a full disk, most often) has just gone into the
        WAL; left to the autocheckpoint, the WAL would grow to about 16 MB first, enough to
        fill a small disk again before any of it is copied back and its space reused.
        """
        if self._conn is None:
            return
        try:
            busy, wal_pages, done = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("checkpoint after recovery failed error=%r", str(exc))
            return
        if busy:  # a reader held on past busy_timeout: the autocheckpoint will do it later
            log.info("checkpoint after recovery incomplete wal_pages=%d copied=%d", wal_pages, done)

    def _set_health(self, healthy: bool, error: str) -> None:
        changed = healthy != self.healthy
        self.healthy = healthy
        self.last_error = error or None
        if changed:
            if healthy:
                log.info("storage recovered path=%s", self.path)
                self._checkpoint_after_recovery()
            else:
                log.error("storage failing path=%s error=%r", self.path, error)
            if self._on_state_change is not None:
                try:
                    self._on_state_change(healthy, error)
                except Exception:  # a listener bug must not kill the writer
                    log.exception("storage state listener failed")
