"""The alert rules' series cache: what rules read from memory is what SQLite holds, and an
evaluation with nothing new to read reads nothing (issue 14, a lean agent)."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import sqlite3
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from agent.alerting.rules import Aggregation, Rule, SourceKind
from agent.alerting.seriescache import SeriesCache
from agent.alerting.signals import RestartHistory
from agent.alerting.snapshot import SqliteSeriesReader
from agent.alerting.windowstats import PointsWindow, Stats, time_to_full
from agent.config import AlertingConfig
from agent.health.incidents import IncidentBook
from agent.runtime.alerting_job import AlertingJob
from probes.base import now_ms
from storage.db import connect
from storage.records import AgentStatus, Event, Labels, ProcessStatus, Sample, make_labels
from storage.writer import Writer

S = 1000
T0 = 1_700_000_000_000


def rule(name: str, series: str, window_s: float, **kw: object) -> Rule:
    return Rule(
        name=name,
        kind=SourceKind.SERIES,
        series=series,
        aggregation=kw.pop("aggregation", Aggregation.LAST),  # type: ignore[arg-type]
        window_s=window_s,
        op=">",
        threshold=90,
        **kw,  # type: ignore[arg-type]
    )


def delete_old(cutoff: int) -> object:
    """A long writer job (as retention) deleting the head samples older than ``cutoff``."""

    def steps(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("DELETE FROM samples_head WHERE ts < ?", (cutoff,))
        yield None

    return steps


def test_the_cache_answers_what_sqlite_holds_through_every_kind_of_write(tmp_path: Path) -> None:
    """In-order appends, a new series, a sample replaced, one stored out of order, a NaN, a
    sample stamped after the evaluation, the clock stepping back, a retention pass and a reload
    with a longer window: after each, the windows and label sets read from memory equal those
    read from the database, and only the writes that are no appends cost a read."""
    writer = Writer(tmp_path / "v.db", flush_interval_s=0.01, block_samples=16)
    writer.start()
    cache = SeriesCache(jobs_run=lambda: writer.steps_run)
    writer.add_commit_listener(cache.committed)
    rules = [rule("a", "a", 10), rule("b", "b", 60, ratio_to="c"), rule("c", "c", 30)]
    cache.watch(rules)
    conn = connect(tmp_path / "v.db", readonly=True)
    sql = SqliteSeriesReader(conn)
    rng = random.Random(14)
    hosts = [make_labels(host="x"), make_labels(host="y")]
    now = T0
    last: dict[tuple[str, Labels], int] = {}

    def check() -> None:
        assert writer.flush()
        cache.apply(now)
        if cache.needs_fill(now):
            cache.fill(conn, now)
        for r in rules:
            for name in (r.series, r.ratio_to):
                if not name:
                    continue
                assert cache.label_sets(name) == sql.label_sets(name)
                for labels in sql.label_sets(name):
                    since = now - int(r.window_s * S)
                    want = sql.points(name, labels, since, now)
                    assert cache.points(name, labels, since, now) == want
                    window = cache.window(name, labels, since, now)
                    assert window is not None
                    if want:  # the running mean is fsum's mean, to the bit
                        assert window.stats().mean() == math.fsum(v for _, v in want) / len(want)

    def append(name: str, labels: Labels, value: float) -> Sample:
        ts = max(now - rng.randrange(0, 900), last.get((name, labels), 0) + 1)
        last[(name, labels)] = ts
        return Sample(name, labels, ts, value)

    try:
        check()
        assert cache.fills == 1
        for _ in range(200):
            now += S
            batch = [append(n, h, rng.uniform(0, 100)) for n in "abc" for h in hosts[:1]]
            writer.submit(batch)
            check()
        assert cache.fills == 1, "appends alone never read the database"
        hosts.append(make_labels(host="z"))  # a new series: seen without a read
        writer.submit([append("a", hosts[-1], 5.0)])
        now += S
        check()
        assert cache.fills == 1
        fills = cache.fills
        odd = [
            # the last sample again with another value: the store replaces it
            lambda: [Sample("a", hosts[0], last[("a", hosts[0])], 1.0)],
            # out of order, into the head or a sealed block
            lambda: [Sample("b", hosts[0], now - 20 * S + 7, 2.0)],
            lambda: [Sample("c", hosts[0], now - 10 * S + 1, 3.0)],
            # two of one time in one batch: the last wins
            lambda: [Sample("a", hosts[1], now + 3, 4.0), Sample("a", hosts[1], now + 3, 5.0)],
        ]
        for write in odd:
            writer.submit(write())
            now += S
            check()
            assert cache.fills == fills + 1, "a write that is no append reads again"
            fills = cache.fills
        for n in "abc":
            last[(n, hosts[0])] = now + 500
        writer.submit(
            [
                Sample("a", hosts[0], now + 500, 6.0),  # stamped after the evaluation
                Sample("b", hosts[0], now + 500, math.nan),  # rejected by the store
                Sample("c", hosts[0], now + 500, math.inf),
            ]
        )
        check()
        now += S
        check()
        assert cache.fills == fills
        now -= 30 * S  # the clock steps back past the windows' start
        check()
        assert cache.fills == fills + 1
        now += 40 * S
        writer.run_steps(delete_old(now - 5 * S))  # type: ignore[arg-type]
        check()
        assert cache.fills == fills + 2, "after a retention pass the windows are read again"
        rules[0] = rule("a", "a", 50)  # a reload reading "a" over a longer window
        cache.watch(rules)
        check()
        assert cache.fills == fills + 3
        for _ in range(20):
            now += S
            writer.submit([append(n, h, rng.uniform(0, 100)) for n in "abc" for h in hosts])
            check()
        assert cache.fills == fills + 3
    finally:
        conn.close()
        writer.close()


def test_a_commit_listener_that_raises_costs_no_commit(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "v.db", flush_interval_s=0.01)
    writer.start()
    seen: list[int] = []

    def broken(samples: list[Sample]) -> None:
        raise RuntimeError("bug")

    writer.add_commit_listener(broken)
    writer.add_commit_listener(lambda samples: seen.append(len(samples)))
    try:
        writer.submit([Sample("m", (), T0, 1.0), Sample("m", (), T0 + 1, 2.0)])
        assert writer.flush()
        assert seen == [2]
        assert writer.stats.committed_samples == 2
    finally:
        writer.close()


def job_for(tmp_path: Path, rules: tuple[Rule, ...]) -> tuple[AlertingJob, Writer]:
    writer = Writer(tmp_path / "vigil.db", flush_interval_s=0.01)
    writer.start()
    events: list[Event] = []
    start = now_ms()

    def status() -> AgentStatus:
        proc = ProcessStatus(name="srv", state="running", since_ms=start)
        return AgentStatus(
            host="h", version="v", started_ms=start, now_ms=now_ms(), processes=(proc,)
        )

    job = AlertingJob(
        AlertingConfig(rules=rules),
        writer=writer,
        emit=events.append,
        db_path=tmp_path / "vigil.db",
        status=status,
        incidents=IncidentBook(writer, events.append),
        links=dict,
    )
    return job, writer


def test_a_series_rule_fires_on_the_next_evaluation_without_reading_the_database(
    tmp_path: Path,
) -> None:
    """The agent's job: the first evaluation reads the windows (on the alerting thread); then a
    sample committed before an evaluation is seen by it, read from nothing."""
    hot = rule("mem_hot", "host.mem.percent", 60, summary="memory {value:.0f}%")
    busy = rule("gpu_busy", "gpu.util", 300, aggregation=Aggregation.AVG, summary="{gpu}")
    job, writer = job_for(tmp_path, (hot, busy))

    async def main() -> None:
        async def write(value: float, name: str = "host.mem.percent", **labels: str) -> None:
            await asyncio.sleep(0.002)  # a new millisecond: the same one again would replace
            writer.submit([Sample(name, make_labels(labels), now_ms(), value)])
            assert writer.flush()

        await write(50.0)
        await job.evaluate()
        assert (job.series.fills, job.on_thread) == (1, 1)
        for _ in range(5):  # nothing new, then one sample a time: nothing read
            await job.evaluate()
            await write(60.0)
            await job.evaluate()
        assert not job.alerts()
        await write(95.0)
        await job.evaluate()
        assert [(a.rule, a.state, a.value) for a in job.alerts()] == [("mem_hot", "firing", 95.0)]
        await write(95.0, "gpu.util", gpu="0")  # a series created since the read: seen too
        await write(97.0, "gpu.util", gpu="0")
        await job.evaluate()
        assert {a.rule for a in job.alerts()} == {"mem_hot", "gpu_busy"}
        assert (job.series.fills, job.on_thread) == (1, 1)
        writer.submit([Sample("host.mem.percent", (), now_ms() - 30 * S, 10.0)])  # late
        assert writer.flush()
        await job.evaluate()
        assert (job.series.fills, job.on_thread) == (2, 2)
        assert job.evaluations == 14
        await job.stop()

    try:
        asyncio.run(main())
    finally:
        writer.close()


# --- the sums --------------------------------------------------------------------------------


def old_slope(pts: list[tuple[int, float]]) -> float | None:
    """The float formula the exact sums replaced (agent/alerting/signals.py before issue 14)."""
    if len(pts) < 2:
        return None
    ts = [t / 1000.0 for t, _ in pts]
    if max(ts) - min(ts) <= 0:
        return None
    vals = [float(v) for _, v in pts]
    t_mean = math.fsum(ts) / len(ts)
    v_mean = math.fsum(vals) / len(vals)
    dts = [t - t_mean for t in ts]
    return math.fsum(d * (v - v_mean) for d, v in zip(dts, vals, strict=True)) / math.fsum(
        d * d for d in dts
    )


def exact_slope(pts: list[tuple[int, float]]) -> float:
    n = len(pts)
    t_mean = Fraction(sum(t for t, _ in pts), n)
    v_mean = sum(Fraction(v) for _, v in pts) / n
    num = sum((t - t_mean) * (Fraction(v) - v_mean) for t, v in pts)
    den = sum((t - t_mean) ** 2 for t, _ in pts)
    return float(num * 1000 / den)


@pytest.mark.parametrize("scale", [1e-9, 1.0, 97.3, 1e12])
def test_running_sums_give_fsums_mean_and_the_least_squares_slope(scale: float) -> None:
    rng = random.Random(scale)
    pts = [
        (T0 + i * S + rng.randrange(-40, 40), scale * (rng.uniform(-1, 3) + i * 0.01))
        for i in range(3600)
    ]
    running = Stats()
    for i, (t, v) in enumerate(pts):
        running.add(t, v)
        if i >= 300:  # a 300-sample window sliding along
            running.remove(*pts[i - 300])
        window = pts[max(0, i - 299) : i + 1]
        if i and (i % 97 == 0 or i == len(pts) - 1):
            values = [v for _, v in window]
            assert running.mean() == math.fsum(values) / len(values)
            slope = running.slope_per_s()
            assert slope == exact_slope(window)  # exact, rounded once
            assert slope == PointsWindow(window).stats().slope_per_s()
            # The float formula's times (seconds since 1970) carry ~0.2 us of rounding each.
            assert slope == pytest.approx(old_slope(window), rel=1e-7)


def test_a_window_without_two_times_has_no_slope_and_a_falling_one_is_never_full() -> None:
    assert Stats().mean() is None
    assert Stats.of([T0, T0], [1.0, 2.0]).slope_per_s() is None
    assert time_to_full(PointsWindow([(T0, 5.0)]), 10.0) is None
    assert time_to_full(PointsWindow([(T0, 5.0), (T0 + 10 * S, 4.0)]), 10.0) == math.inf
    assert time_to_full(PointsWindow([(T0, 0.0), (T0 + 10 * S, 10.0)]), 30.0) == 20.0


# --- restarts --------------------------------------------------------------------------------


class OldRestarts:
    """The history before issue 14: one entry per evaluation and process."""

    def __init__(self, keep_ms: int) -> None:
        self.keep_ms = keep_ms
        self.seen: list[tuple[int, int]] = []

    def note(self, now_ms: int, n: int) -> None:
        self.seen.append((now_ms, n))
        while self.seen and self.seen[0][0] < now_ms - self.keep_ms:
            self.seen.pop(0)

    def within(self, since_ms: int) -> int:
        seen = [n for ts, n in self.seen if ts >= since_ms]
        if not seen:
            return 0
        total, low = 0, seen[0]
        for prev, cur in itertools.pairwise(seen):
            if cur < prev:
                total += prev - low
                low = 0
        return total + seen[-1] - low


def test_the_restart_history_keeps_runs_and_counts_as_before() -> None:
    from agent.alerting.snapshot import Snapshot

    rng = random.Random(3)
    new, old = RestartHistory(keep_s=600), OldRestarts(600 * S)
    n, now = 0, T0
    for _ in range(3000):
        now += S
        r = rng.random()
        n = 0 if r < 0.01 else n + 1 if r < 0.05 else n  # mostly steady, restarts, resets
        new.note(Snapshot(processes=(ProcessStatus("p", "running", T0, restarts=n),)), now)
        old.note(now, n)
        for window in (1, 60, 300, 600, 900):
            assert new.within("p", now - window * S) == old.within(now - window * S)
    assert len(new._seen["p"]) < 100  # runs, not one entry a second
