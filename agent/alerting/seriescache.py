"""The stored series that alert rules read, kept in memory between evaluations.

Evaluating every rule each second used to read each series rule's whole window from SQLite
(``memory_pressure``: 5 minutes of ``host.mem.percent``; ``disk_filling``: an hour of
``host.disk.used_bytes`` and of ``host.disk.total_bytes``), decoded in pure Python, on a
thread of its own: the reads and the hop to that thread and back were most of what alerting
cost an idle agent (bench/RESULTS.md, "a lean agent"). Yet what a window holds changes by a
sample or two a second, and the writer has those samples in hand when it commits them.

So the writer hands every commit's samples to :meth:`SeriesCache.committed` (on its thread: it
keeps those of the watched series, and nothing else), and each evaluation first
:meth:`applies <SeriesCache.apply>` them to per-series windows: what a rule reads is what is
committed, as before, without a read. SQLite is read only to *fill* a window, on the alerting
thread (never on the loop): the first evaluation, a rule that names a series or a longer
window than was read, a sample that is not newer than its series' last one (a clock step, a
replay: the store merged it where it belongs, so the window is read again), and after each turn
of a long writer job (retention, which deletes samples). A fill reads the
series' label sets and their windows in one read transaction, so a block sealed meanwhile is
neither lost nor read twice. :attr:`SeriesCache.fills` counts them.

A window keeps its times and values in arrays (16 bytes a sample: an hour of a 1 s series is
58 kB, where a list of tuples would be 400 kB).
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

from agent.alerting.windowstats import Stats, Window
from agent.config.alerting.rules import Rule, SourceKind
from storage.records import Labels, Sample, labels_json, make_labels
from storage.samples import raw_points

INBOX_LIMIT = 10_000
"""Commits held for the next evaluation at most; past that (evaluations stopped) the held
samples are dropped and every window is read again at the next evaluation."""
_END = 2**63 - 1


class SeriesUnavailable(Exception):
    """A series could not be read (its fill failed): the rule fails this evaluation and its
    alerts keep their state, as when a read failed before."""


class _Sums:
    """Running sums of a window's samples from index ``lo`` on (one per rule window length)."""

    __slots__ = ("lo", "stats", "used")

    def __init__(self, lo: int, stats: Stats) -> None:
        self.lo = lo
        self.stats = stats
        self.used = True


class _Series:
    """One series' samples from its name's covered start on, oldest first, and the running
    sums of the windows rules read it over."""

    __slots__ = ("sums", "ts", "values")

    def __init__(self, ts: Iterable[int] = (), values: Iterable[float] = ()) -> None:
        self.ts: array[int] = array("q", ts)
        self.values: array[float] = array("d", values)
        self.sums: dict[int, _Sums] = {}

    def append(self, t: int, v: float) -> None:
        self.ts.append(t)
        self.values.append(v)
        for s in self.sums.values():
            s.stats.add(t, v)

    def trim(self, now_ms: int, keep_ms: int) -> None:
        """Drop what no rule reads at ``now_ms``: samples older than ``keep_ms``, and the
        sums no rule read since the last trim."""
        ts, values = self.ts, self.values
        for w, s in list(self.sums.items()):
            if not s.used or w > keep_ms:
                del self.sums[w]
                continue
            s.used = False
            cut = now_ms - w
            while s.lo < len(ts) and ts[s.lo] < cut:
                s.stats.remove(ts[s.lo], values[s.lo])
                s.lo += 1
        i = bisect.bisect_left(ts, now_ms - keep_ms)
        if i:
            del ts[:i]
            del values[:i]
            for s in self.sums.values():
                s.lo -= i

    def view(self, since_ms: int, until_ms: int) -> _View:
        lo = bisect.bisect_left(self.ts, since_ms)
        return _View(self, lo, bisect.bisect_right(self.ts, until_ms, lo), until_ms - since_ms)

    def stats(self, lo: int, hi: int, window_ms: int) -> Stats:
        """The sums of samples ``[lo, hi)``: kept running for a window that reaches the newest
        sample (rules' windows end now), counted once otherwise."""
        ts, values = self.ts, self.values
        if hi < len(ts):  # a sample newer than the window's end (stamped after the evaluation)
            return Stats.of(ts[lo:hi], values[lo:hi])
        s = self.sums.get(window_ms)
        if s is None or s.lo != lo:
            s = self.sums[window_ms] = _Sums(lo, Stats.of(ts[lo:], values[lo:]))
        s.used = True
        return s.stats


class _View:
    """A :class:`~agent.alerting.windowstats.Window` over part of a cached series."""

    __slots__ = ("hi", "lo", "series", "window_ms")

    def __init__(self, series: _Series, lo: int, hi: int, window_ms: int) -> None:
        self.series, self.lo, self.hi, self.window_ms = series, lo, hi, window_ms

    @property
    def count(self) -> int:
        """How many samples."""
        return self.hi - self.lo

    @property
    def last(self) -> float:
        """The newest value."""
        return self.series.values[self.hi - 1]

    def values(self) -> array[float]:
        """The values, oldest first."""
        return self.series.values[self.lo : self.hi]

    def stats(self) -> Stats:
        """The window's sums."""
        return self.series.stats(self.lo, self.hi, self.window_ms)


def watched(rules: Iterable[Rule]) -> dict[str, int]:
    """Series name -> the longest window (ms) any rule reads it over."""
    out: dict[str, int] = {}
    for rule in rules:
        if rule.kind != SourceKind.SERIES:
            continue
        window = int(rule.window_s * 1000)
        for name in (rule.series, rule.ratio_to, rule.limit_series):
            if name:
                out[name] = max(out.get(name, 0), window)
    return out


class SeriesCache:
    """A :class:`~agent.alerting.snapshot.SeriesReader` over in-memory windows of the series
    the rules name, fed by the writer's commits.

    Thread use: :meth:`committed` runs on the writer thread and only appends to the inbox;
    everything else runs in one evaluation at a time (on the loop, or on the alerting thread
    when a fill is due), never two at once.

    Args:
        jobs_run: how many turns of long jobs the writer has run (``Writer.steps_run``); a
            change means stored samples may have been deleted.
    """

    def __init__(self, jobs_run: Callable[[], int] | None = None) -> None:
        self._jobs_run = jobs_run or (lambda: 0)
        self._jobs_seen = self._jobs_run()
        self._want: dict[str, int] = {}
        self._names: frozenset[str] = frozenset()
        self._inbox: deque[list[Sample]] = deque()
        self._series: dict[str, dict[Labels, _Series]] = {}
        self._order: dict[str, list[Labels]] = {}
        self._from: dict[str, int] = {}
        """Name -> the earliest time its windows hold every stored sample from."""
        self._stale: set[str] = set()
        self._lost = False
        self.fills = 0
        """How many times windows were read from SQLite (tests and benchmarks count them)."""

    # --- what to keep ------------------------------------------------------------------

    def watch(self, rules: Iterable[Rule]) -> None:
        """Keep the series these rules read (at start and on a reload). A name new here, or
        read over a longer window than before, is filled at the next evaluation."""
        want = watched(rules)
        self._want = want  # rebound, never mutated: a fill in progress keeps its own
        self._names = frozenset(want)

    # --- the writer's side --------------------------------------------------------------

    def committed(self, samples: Sequence[Sample]) -> None:
        """On the writer thread, after a commit: keep its samples of the watched series."""
        names = self._names
        mine = [s for s in samples if s.name in names]
        if mine:
            if len(self._inbox) >= INBOX_LIMIT:
                self._inbox.clear()  # nobody evaluates: read everything again when they do
                self._lost = True
            self._inbox.append(mine)

    # --- one evaluation -----------------------------------------------------------------

    def apply(self, now_ms: int) -> None:
        """Take the samples committed since the last evaluation and cut the windows to what
        the rules read at ``now_ms``."""
        jobs = self._jobs_run()
        if jobs != self._jobs_seen or self._lost:
            self._jobs_seen, self._lost = jobs, False
            self._stale.update(self._series)
        inbox = self._inbox
        while inbox:
            for s in inbox.popleft():
                self._add(s)
        want = self._want
        for name in [n for n in self._series if n not in want]:
            self._drop(name)
        for name, windows in self._series.items():
            keep = want[name]
            self._from[name] = max(self._from[name], now_ms - keep)
            for win in windows.values():
                win.trim(now_ms, keep)

    def _add(self, s: Sample) -> None:
        windows = self._series.get(s.name)
        if windows is None or s.name in self._stale:
            return  # its fill (due) reads it: it was committed before this call
        value = s.value
        if not math.isfinite(value):
            return  # the store rejects these too
        win = windows.get(s.labels)
        if win is None:  # a series created after the fill: all of it comes through here
            win = windows[s.labels] = _Series()
            self._order[s.name] = sorted(windows, key=labels_json)
        ts = win.ts
        if not ts or s.ts_ms > ts[-1]:
            win.append(s.ts_ms, value)
            return
        i = bisect.bisect_left(ts, s.ts_ms)
        if i < len(ts) and ts[i] == s.ts_ms and win.values[i] == value:
            return  # already read by the fill (committed just before it, handed over after)
        self._stale.add(s.name)  # not newer than the last: stored out of order, read it again

    def _drop(self, name: str) -> None:
        self._series.pop(name, None)
        self._order.pop(name, None)
        self._from.pop(name, None)
        self._stale.discard(name)

    def needs_fill(self, now_ms: int) -> bool:
        """Whether some window must be read from SQLite before rules read it at ``now_ms``."""
        return bool(self._due(now_ms))

    def _due(self, now_ms: int) -> list[str]:
        return [
            name
            for name, window in self._want.items()
            if name not in self._series or name in self._stale or now_ms - window < self._from[name]
        ]

    def fill(self, conn: sqlite3.Connection, now_ms: int) -> None:
        """Read the windows due (on the alerting thread), in one read transaction.

        Raises:
            sqlite3.Error: the read failed; those windows stay unread, and a rule reading them
                fails this evaluation (:class:`SeriesUnavailable`).
        """
        due = self._due(now_ms)
        if not due:
            return
        want = self._want
        read: dict[str, dict[Labels, _Series]] = {}
        if conn.in_transaction:  # a read left open by a failure: start from a fresh snapshot
            conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        try:
            for name in due:
                since = now_ms - want[name]
                windows: dict[Labels, _Series] = {}
                rows = conn.execute("SELECT id, labels FROM series WHERE name = ?", (name,))
                for sid, text in rows.fetchall():
                    pts = raw_points(conn, int(sid), since, _END)
                    windows[make_labels(json.loads(text))] = _Series(
                        (t for t, _ in pts), (v for _, v in pts)
                    )
                read[name] = windows
        finally:
            conn.execute("COMMIT")
        self.fills += 1
        for name, windows in read.items():
            self._series[name] = windows
            self._order[name] = sorted(windows, key=labels_json)
            self._from[name] = now_ms - want[name]
            self._stale.discard(name)

    # --- what rules read (SeriesReader) ---------------------------------------------------

    def label_sets(self, name: str) -> list[Labels]:
        """The label sets of every stored series called ``name``, as the database orders them."""
        if name not in self._series:
            self._unread(name)
        return list(self._order[name])

    def points(
        self, name: str, labels: Labels, since_ms: int, until_ms: int
    ) -> list[tuple[int, float]]:
        """Raw (time, value) samples of one series in ``[since_ms, until_ms]``, oldest first."""
        view = self._view(name, labels, since_ms, until_ms)
        if view is None:
            return []
        ts = view.series.ts[view.lo : view.hi]
        return list(zip(ts, view.values(), strict=True))

    def window(self, name: str, labels: Labels, since_ms: int, until_ms: int) -> Window | None:
        """One series' samples in ``[since_ms, until_ms]`` without copying them, with running
        sums for its mean and slope (:mod:`agent.alerting.windowstats`); None when no series
        has these labels."""
        return self._view(name, labels, since_ms, until_ms)

    def _view(self, name: str, labels: Labels, since_ms: int, until_ms: int) -> _View | None:
        windows = self._series.get(name)
        if windows is None or since_ms < self._from[name]:
            self._unread(name)
        win = windows.get(labels)
        return None if win is None else win.view(since_ms, until_ms)

    def _unread(self, name: str) -> NoReturn:
        raise SeriesUnavailable(f"series {name!r} has not been read (its window failed to load)")
